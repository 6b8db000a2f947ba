"""Evaluation of a trained run against radiologist gaze: metrics, report and gallery.

``evaluate_run(config, workdir)`` loads the latest checkpoint and, on the test split:
computes the ensemble prediction (classification metrics); explains every image with each
explainer of ``report.EXPLAINERS`` for every sub-model (Grad-CAM at the last convolutional
block, as the paper evaluated; |input gradients|; |GradientSHAP|), resizes the maps to the gaze
grid, averages the sub-models' maps into the ensemble's map, and scores each map per image with
the MIT metrics and the prior-relative ones (information gain over the mean training gaze map,
sNCC); scores the reference maps (``references.py``: uniform, the prior and, with several
readers per image, the reader ceiling) the same way; adds means with 95% bootstrap intervals
and, for ensembles, explanation consistency. On the synthetic data it also measures shortcut
reliance (``shortcut.py``): the accuracy on the decoy split, the predictions that the marker's
move changes, and each map's mass in the marker's corner. Writes
``<workdir>/eval/<split>/metrics.json`` (summary, per-image values with each image's
``dicom_id``, and the identity of the data), ``report.md`` and ``gallery_<class>.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import hashlib
import json
import os
import time
import warnings

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_builders.mimic_cxr_egd import egd_format
from data_builders.synthetic_egd import readers as readers_lib
from mimic_jax import models
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import pipeline
from mimic_jax.data import prepare
from mimic_jax.evaluation import bootstrap
from mimic_jax.evaluation import classification_metrics
from mimic_jax.evaluation import consistency
from mimic_jax.evaluation import distinguishability
from mimic_jax.evaluation import maps as maps_lib
from mimic_jax.evaluation import references
from mimic_jax.evaluation import report
from mimic_jax.evaluation import saliency_metrics as sm
from mimic_jax.evaluation import shortcut
from mimic_jax.methods import base
from mimic_jax.methods import mimic
from mimic_jax.training import checkpoints
from mimic_jax.training import finite
from mimic_jax.training import metric_writer
from mimic_jax.training import state as state_lib


def _score_maps(
  maps: np.ndarray,
  gaze: np.ndarray,
  fixations: np.ndarray,
  other_fixations: np.ndarray,
  baseline: np.ndarray,
) -> dict[str, list[float]]:
  """Each metric of ``report.MAP_METRICS`` per image; ``baseline`` (the prior) is one
  ``(S, S)`` map or one per image ``(N, S, S)``."""
  out = {k: [] for k in report.MAP_METRICS}
  for i, (s, g, f) in enumerate(zip(maps, gaze, fixations)):
    b = baseline[i] if np.ndim(baseline) == 3 else baseline
    out['kld'].append(sm.kld(s, g))
    out['nss'].append(sm.nss(s, f))
    out['cc'].append(sm.cc(s, g))
    out['sim'].append(sm.sim(s, g))
    out['auc_judd'].append(sm.auc_judd(s, f))
    out['auc_borji'].append(sm.auc_borji(s, f, seed=i))
    out['auc_shuffled'].append(sm.auc_shuffled(s, f, other_fixations[i], seed=i))
    out['information_gain'].append(sm.information_gain(s, f, b))
    out['sncc'].append(sm.sncc(s, g, b))
    out['sauc'].append(sm.sauc(s, g, b, seed=i))
  return out


def _score_references(
  data: dict, prior: np.ndarray, other_fixations: np.ndarray
) -> tuple[dict, dict]:
  """``(summaries, per-image scores)`` of every reference map of ``references.REFERENCES``
  that the data can give, scored like the models' maps (an image's score: the mean over the
  reference's trials)."""
  context = references.Context(
    gaze=data['gaze'],
    fixation_map=data['fixation_map'],
    prior=prior,
    reader_gaze=data.get('reader_gaze'),
    reader_fixations=data.get('reader_fixations'),
    reader_images=data.get('reader_images'),
  )
  summaries, per_image = {}, {}
  for name, reference in references.REFERENCES.items():
    trials = reference.trials(context)
    if trials is None:
      continue
    scores = []
    for t in trials:
      images = np.arange(len(data['gaze'])) if t.images is None else np.asarray(t.images)
      scored = _score_maps(t.maps, t.gaze, t.fixation_map, other_fixations[images], prior)
      full = {k: np.full(len(data['gaze']), np.nan) for k in scored}  # NaN: not in the trial
      for k, v in scored.items():
        full[k][images] = v
      scores.append(full)
    with np.errstate(all='ignore'), warnings.catch_warnings():
      warnings.simplefilter('ignore', RuntimeWarning)  # an image NaN in every trial stays NaN
      per_image[name] = {
        k: np.nanmean([s[k] for s in scores], axis=0).tolist() for k in report.MAP_METRICS
      }
    summaries[name] = {
      'description': reference.description,
      'trials': len(trials),
      'scores': _summarise(per_image[name]),
    }
  return summaries, per_image


def _several_readings(config: ml_collections.ConfigDict, data: dict, split: str) -> dict:
  """The readings of the evaluated images that several readers read (``reader_images``,
  ``reader_gaze``, ``reader_fixations``): on REFLACX, those of the images every reader read
  with eye tracking; on the synthetic EGD data, the simulated readers', made as the builder
  makes the gaze maps; ``{}`` elsewhere (EGD has one reader per image)."""
  if config.data.get('dataset') == 'reflacx':
    source = pipeline.data_source(config.data, split)
    readings = [source[i]['readings'] for i in range(len(source))]
    full = references.every_reader([r['discarded'] for r in readings])
    if not full:
      return {}
    return {
      'reader_images': np.asarray(full),
      'reader_gaze': np.asarray([readings[i]['gaze'] for i in full], np.float64),
      'reader_fixations': np.asarray([readings[i]['fixation_map'] for i in full]),
    }
  if not config.data.get('synthetic'):
    return {}
  sigma = config.data.gaze_sigma or 150.0
  found = readers_lib.reader_maps(
    config.data.manual_dir, data['dicom_id'], data['gaze'].shape[-1], sigma
  )
  if found is None:
    return {}
  return dict(zip(('reader_images', 'reader_gaze', 'reader_fixations'), found))


def _share_of_ceiling(model: dict, refs: dict) -> dict[str, float]:
  """For NSS and CC: ``(model - prior) / (reader - prior)`` of the means, the share of the way
  from the prior to the human ceiling (1: as close as another reader); needs both, and NaN
  where the ceiling is not above the prior (then there is no way from one to the other)."""
  if 'prior' not in refs or 'reader' not in refs:
    return {}
  out = {}
  for k in ('nss', 'cc'):
    prior, reader = refs['prior']['scores'][k]['mean'], refs['reader']['scores'][k]['mean']
    out[k] = (model[k]['mean'] - prior) / (reader - prior) if reader > prior else float('nan')
  return out


def _other_fixations(fix: np.ndarray, k: int = 10) -> np.ndarray:
  """For each image, the union of the fixation maps of the next ``k`` images (Borji's M=10)."""
  n = len(fix)
  return np.stack(
    [np.any(fix[[(i + j) % n for j in range(1, min(k, n - 1) + 1)]] != 0, axis=0) for i in range(n)]
  )


def _jitted_functions(config: ml_collections.ConfigDict, tuning: tuning_lib.Tuning) -> dict:
  """The evaluation's compiled functions: the ensemble prediction and each explainer's maps."""
  execution = tuning.ensemble_execution
  fns = {
    'predict': tuning.jit(
      lambda s, x: base.ensemble_log_probs(
        s.apply_fn, base.eval_variables(s.params, s.batch_stats), x, execution=execution
      )
    )
  }
  for e in report.EXPLAINERS:
    fns[e] = tuning.jit(
      functools.partial(
        maps_lib.member_maps,
        explainer=e,
        size=pipeline.image_shape(config)[0],
        layer=models.gradcam_layer(config.model.arch),
        gradcam_target=config.evaluation.gradcam_target,
        execution=execution,
      )
    )
  return fns


def collect(
  config: ml_collections.ConfigDict,
  state: state_lib.TrainState,
  fns: dict,
  data: ml_collections.ConfigDict,
  split: str = 'test',
  seed: int = 0,
  label: str = '',
) -> dict:
  """Runs the model over ``split`` of the dataset ``data`` (a ``config.data``) with the
  functions of :func:`_jitted_functions`: ids, scores, labels, gaze, fixation maps, images and
  explanation maps, in the split's order."""
  source = pipeline.data_source(data, split)
  predict, maps_fn = fns['predict'], fns
  keep = {k: [] for k in ('scores', 'label', 'gaze', 'fixation_map', 'image')}
  maps = {e: [] for e in report.EXPLAINERS}
  rng = jax.random.key(seed)
  num_batches = -(-len(source) // config.batch_size)
  t0 = time.time()
  batches = pipeline.eval_batches(
    source,
    global_batch=config.batch_size,
    input_channels=config.model.input_channels,
    process_index=0,
    process_count=1,
  )
  for i, batch in enumerate(batches, start=1):
    mask = batch['mask']
    x, y = jnp.asarray(batch['image']), jnp.asarray(batch['label'])
    keep['scores'].append(np.asarray(predict(state, x))[mask])
    for k in ('label', 'gaze', 'fixation_map', 'image'):
      keep[k].append(batch[k][mask])
    for e in report.EXPLAINERS:
      rng, sub = jax.random.split(rng)
      maps[e].append(np.asarray(maps_fn[e](state, x, y, sub))[:, mask])
    if jax.process_index() == 0:
      print(
        f'[eval] {label or split}: batch {i}/{num_batches} ({time.time() - t0:.0f}s)', flush=True
      )
  out = {k: np.concatenate(v) for k, v in keep.items()}
  out['maps'] = {e: np.concatenate(v, axis=1) for e, v in maps.items()}
  _check_finite(out['scores'], out['maps'], label or split)
  out['dicom_id'] = [source[i]['dicom_id'].decode() for i in range(len(source))]
  out['dataset'] = dataset_identity(source, data, split, out['dicom_id'])
  return out


def _train_split_maps(
  config: ml_collections.ConfigDict, state: state_lib.TrainState, fns: dict, count: int
) -> dict[str, np.ndarray]:
  """Each explainer's ``(M, N, S, S)`` maps of the first ``count`` training-split images
  (what the distinguishability probes learn from)."""
  source = pipeline.data_source(config.data, 'train')
  head = [source[i] for i in range(min(count, len(source)))]
  maps = {e: [] for e in report.EXPLAINERS}
  rng = jax.random.key(config.seed + 1)
  for batch in pipeline.eval_batches(
    head,
    global_batch=config.batch_size,
    input_channels=config.model.input_channels,
    process_index=0,
    process_count=1,
  ):
    x, y = jnp.asarray(batch['image']), jnp.asarray(batch['label'])
    for e in report.EXPLAINERS:
      rng, sub = jax.random.split(rng)
      maps[e].append(np.asarray(fns[e](state, x, y, sub))[:, batch['mask']])
  if jax.process_index() == 0:
    print(f'[eval] probes: maps of {len(head)} training images', flush=True)
  return {e: np.concatenate(v, axis=1) for e, v in maps.items()}


def _check_finite(scores: np.ndarray, maps: dict[str, np.ndarray], label: str) -> None:
  """Raises ``finite.NonFiniteError`` naming each output with NaN or infinite values and on
  how many images: nothing is scored or written from them."""
  bad = []
  if not np.isfinite(scores).all():
    bad.append(f'class scores of {int((~np.isfinite(scores)).any(axis=-1).sum())} image(s)')
  for e, m in maps.items():  # (M, N, S, S)
    images = int((~np.isfinite(m)).any(axis=(0, 2, 3)).sum())
    if images:
      bad.append(f'{e} maps of {images} image(s)')
  if bad:
    raise finite.NonFiniteError(
      f'non-finite evaluation outputs on {label}: {"; ".join(bad)} (of {len(scores)}); '
      'nothing was written'
    )


def dataset_identity(
  source: Sequence[dict], data: ml_collections.ConfigDict, split: str, dicom_ids: Sequence[str]
) -> dict:
  """What a set of results was computed on: the build, its version, the split and a
  fingerprint of its image ids (equal fingerprints: the same images in the same order)."""
  info = source.dataset_info
  return {
    'name': info.full_name,
    'version': str(info.version),
    'data_dir': str(data.data_dir),
    'split': split,
    'num_examples': len(dicom_ids),
    'ids_sha256': hashlib.sha256('\n'.join(dicom_ids).encode()).hexdigest(),
  }


def _summarise(per_image: dict[str, list[float]]) -> dict[str, dict[str, float]]:
  """Per metric: the mean over the images where it is defined, its 95% bootstrap interval,
  how many images that is (``n``) and how many were NaN (``nan``)."""
  res = {}
  for k, v in per_image.items():
    mean, lo, hi = bootstrap.mean_ci(v)
    nan = int(np.sum(np.isnan(np.asarray(v, np.float64))))
    res[k] = {'mean': mean, 'ci95': [lo, hi], 'n': len(v) - nan, 'nan': nan}
  return res


def _shortcut_results(config: ml_collections.ConfigDict, data: dict, decoy: dict) -> dict:
  """Accuracy on the decoy split, shortcut reliance, the per-image effect of moving the marker
  (the share of predictions that change, the paired drop in the true class's probability) and
  each explainer's mass in the marker's corner on test and decoy images (``shortcut.py``)."""
  decoy_manual_dir, _ = prepare.decoy_dirs(config.data)
  test_corners = shortcut.marker_corners(config.data.manual_dir, data['dicom_id'])
  decoy_corners = shortcut.marker_corners(decoy_manual_dir, decoy['dicom_id'])
  test_accuracy = classification_metrics.accuracy(data['scores'], data['label'])
  decoy_accuracy = classification_metrics.accuracy(decoy['scores'], decoy['label'])
  if data['dicom_id'] != decoy['dicom_id']:
    raise ValueError('the decoy split holds other images than the test split: rebuild it')
  per_image_flip = shortcut.prediction_changes(data['scores'], decoy['scores'], data['label'])
  per_image, summary = {}, {}
  for e in report.EXPLAINERS:
    masses = {
      'test': shortcut.corner_mass(data['maps'][e].mean(axis=0), test_corners).tolist(),
      'decoy': shortcut.corner_mass(decoy['maps'][e].mean(axis=0), decoy_corners).tolist(),
    }
    per_image[e] = masses
    summary[e] = {f'corner_mass_{k}': _summarise({k: v})[k] for k, v in masses.items()}
  return {
    'dataset': decoy['dataset'],
    'accuracy': decoy_accuracy,
    'test_accuracy': test_accuracy,
    'shortcut_reliance': test_accuracy - decoy_accuracy,
    'flip_rate': _summarise({'f': per_image_flip['flipped']})['f'],
    'true_class_probability_drop': _summarise({'d': per_image_flip['probability_drop']})['d'],
    'corner_mass': summary,
    'uniform_corner_mass': float(shortcut.corner_mask(data['gaze'].shape[-1], 0).mean()),
    'per_image': {
      'dicom_id': decoy['dicom_id'],
      'correct': (np.argmax(decoy['scores'], 1) == decoy['label']).astype(int).tolist(),
      'flipped': per_image_flip['flipped'],
      'true_class_probability_drop': per_image_flip['probability_drop'],
      'corner_mass': per_image,
    },
  }


def evaluate_run(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  split: str = 'test',
  *,
  tuning: tuning_lib.Tuning | None = None,
  devices: Sequence[jax.Device] | None = None,
) -> dict:
  """Evaluates ``workdir``'s checkpoint chosen by ``config.select_checkpoint``; returns and
  writes the results (``eval/<split>/``: ``metrics.json``, ``report.md``, ``report.html`` and
  the figures they show).

  ``devices`` default to this process's own: in a multi-process run every process evaluates
  the whole split by itself (EGD's test split is small) and process 0 writes the results.
  """
  tuning = tuning or tuning_lib.resolve(config.xla)
  state, checkpoint = checkpoints.load_checkpoint(
    config, workdir, tuning=tuning, devices=jax.local_devices() if devices is None else devices
  )
  fns = _jitted_functions(config, tuning)
  data = collect(config, state, fns, config.data, split)
  data.update(_several_readings(config, data, split))
  baseline = mean_train_gaze(config)
  other = _other_fixations(data['fixation_map'])
  class_names = list(egd_format.CLASS_NAMES)
  results = {
    'workdir': str(workdir),
    'split': split,
    'method': config.method,
    'seed': config.seed,
    'checkpoint': checkpoint,
    'num_models': jax.tree.leaves(state.params)[0].shape[0],
    'num_images': int(len(data['label'])),
    'dataset': data['dataset'],
    'classification': classification_metrics.summary(data['scores'], data['label'], class_names),
    'explanations': {},
    'per_image': {'dicom_id': data['dicom_id'], 'label': data['label'].tolist()},
  }
  results['references'], results['per_image']['references'] = _score_references(
    data, baseline, other
  )
  for e, member_maps in data['maps'].items():
    mean_map = member_maps.mean(axis=0)
    per_image = _score_maps(mean_map, data['gaze'], data['fixation_map'], other, baseline)
    entry = {'ensemble': _summarise(per_image)}
    share = _share_of_ceiling(entry['ensemble'], results['references'])
    if share:
      entry['share_prior_to_reader'] = share
    results['per_image'][e] = per_image
    if member_maps.shape[0] > 1:
      entry['members'] = [
        {
          k: _summarise({k: v})[k]
          for k, v in _score_maps(mm, data['gaze'], data['fixation_map'], other, baseline).items()
          if k in ('kld', 'nss')
        }
        for mm in member_maps
      ]
      entry['consistency'] = {
        'mean_pairwise_correlation': consistency.mean_pairwise_correlation(member_maps),
        'cv_consistency': consistency.cv_consistency(member_maps),
      }
    results['explanations'][e] = entry
  num_models = results['num_models']
  if num_models > 1 and config.evaluation.probe_train_images > 0:
    train_maps = _train_split_maps(config, state, fns, config.evaluation.probe_train_images)
    disc = mimic.make_discriminator(config.mimic, num_models)
    for e, entry in results['explanations'].items():
      entry['distinguishability'] = distinguishability.probe_maps(
        train_maps[e],
        data['maps'][e],
        disc,
        pool=config.mimic.post.pool,
        steps=config.evaluation.probe_steps,
        seed=config.seed,
      )
      entry['distinguishability']['train_images'] = int(train_maps[e].shape[1])
  if config.data.get('synthetic') and config.data.synthetic.get('decoy') and split == 'test':
    decoy_data = ml_collections.ConfigDict(config.data.to_dict())
    decoy_data.manual_dir, decoy_data.data_dir = prepare.decoy_dirs(config.data)
    decoy = collect(config, state, fns, decoy_data, split, label='decoy test')
    results['shortcut'] = _shortcut_results(config, data, decoy)
  if jax.process_index() != 0:
    return results
  out = epath.Path(workdir) / 'eval' / split
  out.mkdir(parents=True, exist_ok=True)
  (out / 'metrics.json').write_text(json.dumps(results, indent=1))
  from mimic_jax.evaluation import figures  # matplotlib only when writing

  shown = [p.name for p in figures.gallery(data, class_names, out, results['per_image'])]
  curves = figures.training_curves(_logged(workdir), out / 'training_curves.png')
  if curves is not None:
    shown.insert(0, curves.name)
  markdown = report.markdown_report(results, shown)
  (out / 'report.md').write_text(markdown)
  (out / 'report.html').write_text(report.html_report(markdown, out))
  return results


def _logged(workdir: str | os.PathLike) -> list[dict]:
  """The rows of the run's ``metrics.jsonl`` (none for a run trained elsewhere)."""
  path = epath.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return metric_writer.read_rows(path)


def mean_train_gaze(config: ml_collections.ConfigDict) -> np.ndarray:
  """Mean gaze map of the training split, the prior: the reference ``prior`` and the baseline
  of information gain and sNCC. Training-split maps only, whichever split is evaluated."""
  source = pipeline.data_source(config.data, 'train')
  total = None
  for i in range(len(source)):
    g = np.asarray(source[i]['gaze'], np.float64)
    total = g if total is None else total + g
  return total / len(source)
