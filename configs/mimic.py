"""Configs: our setup for the paper's experiment on MIMIC-CXR EGD, and its variants.

  python main.py --config=configs/mimic.py --workdir=DIR                 # mimic
  python main.py --config=configs/mimic.py:VARIANT --workdir=DIR

``VARIANT`` is one of ``VARIANTS`` (a method, with settings), a dataset part of
``DATA_PARTS`` (``synthetic``: the embedded dataset at CPU size; ``synthetic_224``: the paper's
configuration on it at EGD's size, for benchmarks; ``reflacx``: the embedded synthetic REFLACX
tree at CPU size), or both joined by a comma, e.g.
``baseline,synthetic``. A dataset part alone trains ``mimic``. Any field can be overridden on the
command line (``--config.mimic.beta=0.5``); unknown keys are an error. docs/methods.md lists
where these defaults differ from the released code.
"""

import ml_collections

# Variant name -> the method and the settings that make it.
VARIANTS = {
  'baseline': {'method': 'single'},
  'ensemble': {'method': 'ensemble'},  # the control of mimic: no discriminator
  'mimic': {'method': 'mimic'},
  # The released code's behaviour: the adversarial term never reaches the sub-models.
  'mimic_stop': {'method': 'mimic', 'mimic.explanation_gradient': 'stop'},
  'gaze': {'method': 'gaze'},
  # The released code's (mattswatson/learning-to-mimic) hyperparameters where they are sane;
  # docs/methods.md lists each default against it, and why the others differ.
  'released': {
    'method': 'mimic',
    'batch_size': 128,
    'num_epochs': 200,
    'mimic.first_phase': 'adversarial',
    'mimic.alternation': 'epoch',
    'mimic.disc_steps': 1,
    'mimic.explanation_gradient': 'stop',
    'mimic.explainer_kwargs.baseline': 0.1307,
    'mimic.post.pool': 1,
    'evaluation.gradcam_target': 'ensemble_log_softmax',
  },
}


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = 'mimic'  # single | ensemble | mimic | gaze
  c.seed = 0
  c.batch_size = 32  # global, over all devices and processes
  c.num_epochs = 30
  c.num_train_steps = -1  # > 0 overrides num_epochs
  c.learning_rate = 1e-4  # Adam
  c.log_every_steps = 10
  # At every validation, each weighted loss term's gradient against the cross-entropy's (norm
  # ratio and cosine; mimic: beta's adversarial term) on the first batch of validation images.
  c.monitor_loss_terms = True
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 3
  c.eval_every_epochs = 1
  # The checkpoint --mode=evaluate and explain use: latest | best (by validation best_metric:
  # accuracy | ce | kld | nss, the last two of Grad-CAM against the gaze).
  c.select_checkpoint = 'latest'
  c.best_metric = 'accuracy'

  # How XLA computes (never what): see mimic_jax/tuning/__init__.py. 'auto' suits every
  # backend; the other values exist for measurements (benchmarks/).
  c.xla = ml_collections.ConfigDict()
  c.xla.conv_gradients = 'auto'  # auto | lax | custom (cpu_convs; auto: on CPU)
  c.xla.cpu_conv_library = 'auto'  # auto | xla_default | eigen (auto: eigen on CPU)
  # auto | vmap | unrolled | scan | per_member (auto: per_member on CPU, vmap on 1 TPU device)
  c.xla.ensemble_execution = 'auto'

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'densenet121'  # densenet121 | efficientnet_b0 | resnet18 | resnet50 | tiny_resnet
  c.model.num_classes = 3
  c.model.norm = 'batch'  # batch | group (ResNets)
  c.model.width = ml_collections.FieldReference(None, field_type=int)  # ResNets only
  c.model.downsample = 'stride'  # ResNets: stride (torchvision) | pool (2x2 average pool)
  c.model.input_channels = 3  # 3: grey replicated + ImageNet normalisation; or 1
  c.model.dtype = 'float32'  # computation: float32 | bfloat16 (GPU/TPU); params f32
  # ImageNet weights: torchvision resnet18/50 or densenet121, timm efficientnet_b0 state dict
  # (.safetensors, or .pth with PyTorch installed), or `python -m mimic_jax.convert_weights`
  # output. With input_channels=1 the first convolution's RGB filters are summed.
  c.model.pretrained = ml_collections.FieldReference(None, field_type=str)
  c.model.member_init = 'same'  # same (paper: all sub-models from the same weights) | perturb
  c.model.perturb_scale = 0.01  # perturb: noise std / each tensor's std

  c.ensemble = ml_collections.ConfigDict({'num_models': 3})

  c.mimic = ml_collections.ConfigDict()
  c.mimic.beta = 1.0
  c.mimic.objective = 'neg_ce'  # neg_ce (paper) | confusion
  # The game, chosen on the synthetic data's validation split (docs/results.md): the phases
  # alternate every step and the discriminator takes 5 Adam steps in each of its phases (the
  # paper: by epoch, one step).
  c.mimic.alternation = 'step'  # epoch (paper) | step
  c.mimic.period = 2  # phases repeat every `period` epochs (or steps)
  # discriminator: epoch (or step) % period == 0 trains the discriminator, else adversarial |
  # adversarial (the released code): % period == 0 adversarial, == period - 1 discriminator,
  # else cross-entropy only. See mimic_jax/methods/mimic.py.
  c.mimic.first_phase = 'discriminator'
  c.mimic.explanation_gradient = 'through'  # through | stop (the released code)
  c.mimic.explainer = 'gradient_shap'
  c.mimic.explainer_kwargs = ml_collections.ConfigDict({'samples': 5, 'baseline': 0.0})
  c.mimic.post = ml_collections.ConfigDict(
    {'sign': 'abs', 'channels': 'sum', 'normalize': 'minmax', 'pool': 4}
  )
  c.mimic.disc_arch = 'mlp'  # mlp (the paper's F -> disc_hidden -> M) | conv (small CNN)
  c.mimic.disc_hidden = 512
  c.mimic.disc_learning_rate = 1e-4
  c.mimic.disc_steps = 5  # discriminator Adam steps per step of its phase (on one batch)
  # The game's monitor at every validation: the discriminator's accuracy and CE on the maps of
  # the first batch of validation images, and the sub-models' agreement on them.
  c.mimic.monitor = True

  c.gaze = ml_collections.ConfigDict()
  # The recipe chosen on the validation split (docs/results.md, configs/gaze_candidates.json):
  # KLD with a uniform floor of |GradientSHAP| (weight 1) and of Grad-CAM (weight 0.3).
  c.gaze.weight = 1.0  # lambda
  c.gaze.penalty = 'kld'  # kld | energy | rrr (see mimic_jax/methods/gaze.py)
  c.gaze.explanation = 'gradient_shap'  # input_gradients | gradient_shap | grad_cam
  c.gaze.samples = 4  # gradient_shap: path points per example
  c.gaze.grad_cam_weight = 0.3  # > 0: also align Grad-CAM, with this weight (kld, energy)
  c.gaze.pool = 1  # average-pool explanation and gaze by this factor before comparing
  c.gaze.floor = 0.1  # kld: weight of a uniform map mixed into the saliency
  c.gaze.region_mass = 0.9  # energy, rrr: the gazed region holds this share of the gaze
  c.gaze.warmup_epochs = 0  # cross-entropy only for this many epochs first
  c.gaze.num_models = 1  # > 1: a gaze-supervised ensemble

  c.evaluation = ml_collections.ConfigDict()
  # Grad-CAM's score: logit (each sub-model's class logit; the ensemble map is their mean) |
  # ensemble_log_softmax (the released code: the ensemble's mean log-softmax).
  c.evaluation.gradcam_target = 'logit'
  # Distinguishability of an ensemble's maps: fresh probes trained on the maps of at most this
  # many training images (0: none), the discriminator probe for this many Adam steps.
  c.evaluation.probe_train_images = 256
  c.evaluation.probe_steps = 400

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = 'data/tfds'  # TFDS data dir (local or gs://)
  c.data.local_cache_dir = '/tmp/mimic_jax_tfds'  # per-host copy of a gs:// data dir
  c.data.manual_dir = 'data/physionet'  # holds egd-cxr/1.0.0 and mimic-cxr-jpg/2.0.0
  c.data.builder_config = '224'
  # Build (and read) the dataset with the images that fail validation left out, listed in its
  # metadata (data_builders: --skip_invalid_rows); its folder is <config>_skip.
  c.data.skip_invalid_rows = False
  c.data.gaze_sigma = ml_collections.FieldReference(None, field_type=float)  # None: 150 px
  c.data.synthetic = ml_collections.FieldReference(None, field_type=ml_collections.ConfigDict)
  # mimic_cxr_egd (EGD) | reflacx (five readers; labels mapped to EGD's classes, docs/reflacx.md).
  c.data.dataset = 'mimic_cxr_egd'
  c.data.synthetic_reflacx = ml_collections.FieldReference(
    None, field_type=ml_collections.ConfigDict
  )
  c.data.threads = 4
  c.data.prefetch = 8
  return c


def _synthetic_data(c: ml_collections.ConfigDict, name: str, builder_config: str) -> None:
  """The embedded synthetic dataset in ``data/<name>``, built at ``builder_config``."""
  c.data.data_dir = f'data/{name}/tfds'
  c.data.manual_dir = f'data/{name}/physionet'
  c.data.builder_config = builder_config
  c.data.gaze_sigma = 75.0  # images drawn at half the real size
  c.data.synthetic = ml_collections.ConfigDict(
    {
      'num_images': 600,
      'seed': 0,
      'scale': 0.5,
      # A corner marker sits in the class's corner with this probability, else in a random
      # corner: a shortcut in training and validation that test does not reward.
      'shortcut': {'train': 0.8, 'validation': 0.8, 'test': 0.0},
      # Also build the decoy twin (every marker in a wrong class's corner) beside the data
      # and evaluate on its test split: a model that reads the marker fails there.
      'decoy': True,
      # The simulated radiologist (data_builders/synthetic_egd/readers.py): realistic (a
      # centre-biased search that dwells on the finding when it notices it, calibrated to
      # REFLACX) | evidence (a perfect evidence mask, for known-answer tests).
      'reader': 'realistic',
      # Readers of the share multi_reader_share of images (the reader ceiling's readings).
      'readers': 5,
      'multi_reader_share': 0.25,
    }
  )


def _cpu_size(c: ml_collections.ConfigDict) -> None:
  """The model and schedule of the CPU-size synthetic runs."""
  c.model.arch = 'tiny_resnet'
  c.model.norm = 'group'
  c.model.width = 16
  c.model.input_channels = 1
  c.model.downsample = 'pool'  # faster explanation steps on CPU (benchmarks/RESULTS.md)
  c.batch_size = 32
  c.num_epochs = 8
  c.learning_rate = 3e-3
  c.mimic.disc_learning_rate = 1e-3
  c.mimic.disc_hidden = 64
  c.mimic.explainer_kwargs.samples = 2
  c.checkpoint_every_steps = 50
  c.log_every_steps = 5


def _synthetic(c: ml_collections.ConfigDict) -> None:
  """CPU size on the embedded synthetic dataset."""
  _synthetic_data(c, 'synthetic', '64')
  _cpu_size(c)


def synthetic_reflacx_data(c: ml_collections.ConfigDict) -> None:
  """The embedded synthetic REFLACX tree in ``data/synthetic_reflacx``, built at 64 px."""
  c.data.dataset = 'reflacx'
  c.data.data_dir = 'data/synthetic_reflacx/tfds'
  c.data.manual_dir = 'data/synthetic_reflacx/physionet'
  c.data.builder_config = '64'
  c.data.synthetic = None
  c.data.synthetic_reflacx = ml_collections.ConfigDict(
    # Images of phases 1 and 2 (five readers each) and 3 (one reader each), drawn at half size.
    {'phase_images': (15, 15, 470), 'seed': 0, 'scale': 0.5, 'readers': 5}
  )


def _reflacx(c: ml_collections.ConfigDict) -> None:
  """CPU size on the embedded synthetic REFLACX dataset."""
  synthetic_reflacx_data(c)
  _cpu_size(c)


def _synthetic_224(c: ml_collections.ConfigDict) -> None:
  """The paper's configuration on the synthetic dataset at EGD's size (1,083 images, 866 of
  them for training) and 224 px: for benchmarks (``benchmarks/end_to_end.py``)."""
  _synthetic_data(c, 'synthetic_224', '224')
  c.data.synthetic.num_images = 1083
  c.data.synthetic.decoy = False


# Dataset parts a variant can be joined with.
DATA_PARTS = {'synthetic': _synthetic, 'synthetic_224': _synthetic_224, 'reflacx': _reflacx}


def _set(c: ml_collections.ConfigDict, dotted: str, value: object) -> None:
  *path, leaf = dotted.split('.')
  for key in path:
    c = c[key]
  c[leaf] = value


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config of ``variant`` (see the module docstring)."""
  parts = [p for p in (variant or 'mimic').split(',') if p]
  c = _base()
  named = [p for p in parts if p in VARIANTS]
  data = [p for p in parts if p in DATA_PARTS]
  unknown = [p for p in parts if p not in VARIANTS and p not in DATA_PARTS]
  if unknown or len(named) > 1 or len(data) > 1:
    raise ValueError(
      f'unknown config variant {variant!r}; use one of {sorted(VARIANTS)} and/or one of '
      f'{sorted(DATA_PARTS)}, comma-separated'
    )
  if data:
    DATA_PARTS[data[0]](c)
  for key, value in VARIANTS[named[0] if named else 'mimic'].items():
    _set(c, key, value)
  return c
