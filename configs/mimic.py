"""Configs: the paper's setup on MIMIC-CXR EGD, and variants.

  python main.py --config=configs/mimic.py --workdir=DIR            # real data, 224 px
  python main.py --config=configs/mimic.py:synthetic --workdir=DIR  # embedded synthetic data
"""

import ml_collections

VARIANTS = ('default', 'synthetic')


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config of ``variant`` (see ``VARIANTS``)."""
  variant = variant or 'default'
  if variant not in VARIANTS:
    raise ValueError(f'unknown config variant {variant!r}; choose one of {VARIANTS}')
  config = ml_collections.ConfigDict()
  data = config.data = ml_collections.ConfigDict()
  data.data_dir = 'data/tfds'            # TFDS data dir (local or gs://)
  data.manual_dir = 'data/physionet'     # holds egd-cxr/1.0.0 and mimic-cxr-jpg/2.0.0
  data.builder_config = '224'
  data.gaze_sigma = ml_collections.FieldReference(None, field_type=float)  # None: 150 px
  data.synthetic = None  # or the synthetic tree's settings
  if variant == 'synthetic':
    data.data_dir = 'data/synthetic/tfds'
    data.manual_dir = 'data/synthetic/physionet'
    data.builder_config = '128'
    data.gaze_sigma = 75.0  # images drawn at half the real size
    data.synthetic = ml_collections.ConfigDict({
        'num_images': 600, 'seed': 0, 'scale': 0.5,
        # Corner marker in the class's corner with this probability; absent in test.
        'shortcut': {'train': 0.8, 'validation': 0.8, 'test': 0.0},
    })
  return config
