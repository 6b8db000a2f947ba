"""Evaluation of a trained run against radiologist gaze: metrics, report and gallery.

``evaluate_run(config, workdir)`` loads the latest checkpoint and, on the test split:
computes the ensemble prediction (classification metrics); explains every image with each
explainer of ``EXPLAINERS`` for every sub-model (Grad-CAM at the last convolutional block, as
the paper evaluated; |input gradients|; |GradientSHAP|), resizes the maps to the gaze grid,
averages the sub-models' maps into the ensemble's map, and scores each map per image with
the MIT metrics; adds means with 95% bootstrap intervals and, for ensembles, explanation
consistency. Writes ``<workdir>/eval/<split>/metrics.json`` (summary and per-image values),
``report.md`` and ``gallery_<class>.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import json
import os

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_builders.mimic_cxr_egd import egd_format
from mimic_jax import models
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import pipeline
from mimic_jax.evaluation import bootstrap
from mimic_jax.evaluation import classification_metrics
from mimic_jax.evaluation import consistency
from mimic_jax.evaluation import report
from mimic_jax.evaluation import saliency_metrics as sm
from mimic_jax.methods import base
from mimic_jax.training import checkpoints
from mimic_jax.training import state as state_lib


def _member_maps(
  state: state_lib.TrainState,
  x: jax.Array,
  y: jax.Array,
  rng: jax.Array,
  *,
  explainer: str,
  size: int,
  layer: str,
  execution: str,
) -> jax.Array:
  """``(M, B, size, size)`` non-negative maps of every sub-model, on the gaze grid."""
  variables = base.eval_variables(state.params, state.batch_stats)
  if explainer == 'grad_cam':
    maps = base.member_grad_cams(state.apply_fn, variables, x, y, layer=layer, execution=execution)
  else:
    kwargs = {'samples': 8} if explainer == 'gradient_shap' else {}
    maps = base.member_explanations(
      state.apply_fn,
      variables,
      x,
      y,
      rng,
      explainer=explainer,
      explainer_kwargs=kwargs,
      post={'sign': 'abs', 'channels': 'sum', 'normalize': 'none'},
      execution=execution,
    )
  if maps.shape[-1] != size:
    m, b = maps.shape[:2]
    maps = jax.image.resize(maps, (m, b, size, size), 'linear')
  return maps


def _score_maps(
  maps: np.ndarray,
  gaze: np.ndarray,
  fixations: np.ndarray,
  other_fixations: np.ndarray,
  baseline: np.ndarray,
) -> dict[str, list[float]]:
  out = {k: [] for k in report.MAP_METRICS}
  for i, (s, g, f) in enumerate(zip(maps, gaze, fixations)):
    out['kld'].append(sm.kld(s, g))
    out['nss'].append(sm.nss(s, f))
    out['cc'].append(sm.cc(s, g))
    out['sim'].append(sm.sim(s, g))
    out['auc_judd'].append(sm.auc_judd(s, f))
    out['auc_borji'].append(sm.auc_borji(s, f, seed=i))
    out['auc_shuffled'].append(sm.auc_shuffled(s, f, other_fixations[i], seed=i))
    out['information_gain'].append(sm.information_gain(s, f, baseline))
  return out


def _other_fixations(fix: np.ndarray, k: int = 10) -> np.ndarray:
  """For each image, the union of the fixation maps of the next ``k`` images (Borji's M=10)."""
  n = len(fix)
  return np.stack(
    [np.any(fix[[(i + j) % n for j in range(1, min(k, n - 1) + 1)]] != 0, axis=0) for i in range(n)]
  )


def collect(
  config: ml_collections.ConfigDict,
  state: state_lib.TrainState,
  tuning: tuning_lib.Tuning,
  split: str = 'test',
  seed: int = 0,
) -> dict:
  """Runs the model over a split: scores, labels, gaze, fixation maps and explanation maps."""
  source = pipeline.data_source(config.data, split)
  size = pipeline.image_shape(config)[0]
  execution = tuning.ensemble_execution
  predict = tuning.jit(
    lambda s, x: base.ensemble_log_probs(
      s.apply_fn, base.eval_variables(s.params, s.batch_stats), x, execution=execution
    )
  )
  maps_fn = {
    e: tuning.jit(
      functools.partial(
        _member_maps,
        explainer=e,
        size=size,
        layer=models.gradcam_layer(config.model.arch),
        execution=execution,
      )
    )
    for e in report.EXPLAINERS
  }
  keep = {k: [] for k in ('scores', 'label', 'gaze', 'fixation_map', 'image')}
  maps = {e: [] for e in report.EXPLAINERS}
  rng = jax.random.key(seed)
  for batch in pipeline.eval_batches(
    source,
    global_batch=config.batch_size,
    input_channels=config.model.input_channels,
    process_index=0,
    process_count=1,
  ):
    mask = batch['mask']
    x, y = jnp.asarray(batch['image']), jnp.asarray(batch['label'])
    keep['scores'].append(np.asarray(predict(state, x))[mask])
    for k in ('label', 'gaze', 'fixation_map', 'image'):
      keep[k].append(batch[k][mask])
    for e in report.EXPLAINERS:
      rng, sub = jax.random.split(rng)
      maps[e].append(np.asarray(maps_fn[e](state, x, y, sub))[:, mask])
  out = {k: np.concatenate(v) for k, v in keep.items()}
  out['maps'] = {e: np.concatenate(v, axis=1) for e, v in maps.items()}
  return out


def _summarise(per_image: dict[str, list[float]]) -> dict[str, dict[str, float]]:
  res = {}
  for k, v in per_image.items():
    mean, lo, hi = bootstrap.mean_ci(v)
    res[k] = {'mean': mean, 'ci95': [lo, hi], 'n': int(np.sum(~np.isnan(v)))}
  return res


def evaluate_run(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  split: str = 'test',
  *,
  tuning: tuning_lib.Tuning | None = None,
  devices: Sequence[jax.Device] | None = None,
) -> dict:
  """Evaluates the latest checkpoint of ``workdir``; returns and writes the results.

  ``devices`` default to this process's own: in a multi-process run every process evaluates
  the whole split by itself (EGD's test split is small) and process 0 writes the results.
  """
  tuning = tuning or tuning_lib.resolve(config.xla)
  state = checkpoints.load_state(
    config, workdir, tuning=tuning, devices=jax.local_devices() if devices is None else devices
  )
  data = collect(config, state, tuning, split)
  baseline = _mean_train_gaze(config)
  other = _other_fixations(data['fixation_map'])
  class_names = list(egd_format.CLASS_NAMES)
  results = {
    'workdir': str(workdir),
    'split': split,
    'method': config.method,
    'num_models': jax.tree.leaves(state.params)[0].shape[0],
    'num_images': int(len(data['label'])),
    'classification': classification_metrics.summary(data['scores'], data['label'], class_names),
    'explanations': {},
    'per_image': {'label': data['label'].tolist()},
  }
  for e, member_maps in data['maps'].items():
    mean_map = member_maps.mean(axis=0)
    per_image = _score_maps(mean_map, data['gaze'], data['fixation_map'], other, baseline)
    entry = {'ensemble': _summarise(per_image)}
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
  if jax.process_index() != 0:
    return results
  out = epath.Path(workdir) / 'eval' / split
  out.mkdir(parents=True, exist_ok=True)
  (out / 'metrics.json').write_text(json.dumps(results, indent=1))
  (out / 'report.md').write_text(report.markdown_report(results))
  from mimic_jax.evaluation import figures  # matplotlib only when writing

  figures.gallery(data, class_names, out)
  return results


def _mean_train_gaze(config: ml_collections.ConfigDict) -> np.ndarray:
  """Mean gaze map of the training split: the centre-bias baseline for information gain."""
  source = pipeline.data_source(config.data, 'train')
  total = None
  for i in range(len(source)):
    g = np.asarray(source[i]['gaze'], np.float64)
    total = g if total is None else total + g
  return total / len(source)
