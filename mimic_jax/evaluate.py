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

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from data_builders.mimic_cxr_egd import egd_format
from mimic_jax import bootstrap
from mimic_jax import classification_metrics
from mimic_jax import compile_options
from mimic_jax import consistency
from mimic_jax import explain
from mimic_jax import input_pipeline
from mimic_jax import methods
from mimic_jax import saliency_metrics as sm
from mimic_jax import steps
from mimic_jax import train

EXPLAINERS = ('grad_cam', 'input_gradients', 'gradient_shap')
MAP_METRICS = ('kld', 'nss', 'cc', 'sim', 'auc_judd', 'auc_borji', 'auc_shuffled',
               'information_gain')
LOWER_IS_BETTER = {'kld'}


def _member_maps(state: steps.TrainState, x, y, rng, explainer: str, size: int):
  """``(M, B, size, size)`` non-negative maps of every sub-model, on the gaze grid."""
  if explainer == 'grad_cam':
    cams = steps.gradcam_maps(state, x, y, layer='features')
    m, b = cams.shape[:2]
    return jax.image.resize(cams, (m, b, size, size), 'linear')
  variables = ({'params': state.params, 'batch_stats': state.batch_stats}
               if state.batch_stats else {'params': state.params})
  kwargs = {'samples': 8} if explainer == 'gradient_shap' else {}
  maps = methods.member_explanations(
      state.apply_fn, variables, x, y, rng, explainer=explainer, explainer_kwargs=kwargs,
      post={'sign': 'abs', 'channels': 'sum', 'normalize': 'none'}, execution='auto')
  if maps.shape[-1] != size:
    m, b = maps.shape[:2]
    maps = jax.image.resize(maps, (m, b, size, size), 'linear')
  return maps


def _score_maps(maps: np.ndarray, gaze: np.ndarray, fixations: np.ndarray,
                other_fixations: np.ndarray, baseline: np.ndarray) -> dict[str, list[float]]:
  out = {k: [] for k in MAP_METRICS}
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
  return np.stack([np.any(fix[[(i + j) % n for j in range(1, min(k, n - 1) + 1)]] != 0, axis=0)
                   for i in range(n)])


def collect(config: ml_collections.ConfigDict, state: steps.TrainState, split: str = 'test',
            seed: int = 0) -> dict:
  """Runs the model over a split: scores, labels, gaze, fixation maps and explanation maps."""
  source = input_pipeline.data_source(config.data, split)
  size = input_pipeline.preprocess(source[0], config.model.input_channels)['gaze'].shape[0]
  options = compile_options.for_config(config)
  predict = jax.jit(steps.predict, compiler_options=options)
  maps_fn = {e: jax.jit(functools.partial(_member_maps, explainer=e, size=size),
                        compiler_options=options)
             for e in EXPLAINERS}
  keep = {k: [] for k in ('scores', 'label', 'gaze', 'fixation_map', 'image')}
  maps = {e: [] for e in EXPLAINERS}
  rng = jax.random.key(seed)
  for batch in input_pipeline.eval_batches(source, global_batch=config.batch_size,
                                           input_channels=config.model.input_channels,
                                           process_index=0, process_count=1):
    mask = batch['mask']
    x, y = jnp.asarray(batch['image']), jnp.asarray(batch['label'])
    keep['scores'].append(np.asarray(predict(state, x))[mask])
    for k in ('label', 'gaze', 'fixation_map', 'image'):
      keep[k].append(batch[k][mask])
    for e in EXPLAINERS:
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


def evaluate_run(config: ml_collections.ConfigDict, workdir: str, split: str = 'test',
                 devices=None) -> dict:
  """Evaluates the latest checkpoint of ``workdir``; returns and writes the results.

  ``devices`` default to this process's own: in a multi-process run every process evaluates
  the whole split by itself (EGD's test split is small) and process 0 writes the results.
  """
  state = train.load_state(config, workdir,
                           devices=jax.local_devices() if devices is None else devices)
  data = collect(config, state, split)
  baseline = _mean_train_gaze(config)
  other = _other_fixations(data['fixation_map'])
  class_names = list(egd_format.CLASS_NAMES)
  results = {
      'workdir': str(workdir), 'split': split, 'method': config.method,
      'num_models': steps.num_members(config), 'num_images': int(len(data['label'])),
      'classification': classification_metrics.summary(data['scores'], data['label'],
                                                       class_names),
      'explanations': {}, 'per_image': {'label': data['label'].tolist()},
  }
  for e, member_maps in data['maps'].items():
    mean_map = member_maps.mean(axis=0)
    per_image = _score_maps(mean_map, data['gaze'], data['fixation_map'], other, baseline)
    entry = {'ensemble': _summarise(per_image)}
    results['per_image'][e] = per_image
    if member_maps.shape[0] > 1:
      entry['members'] = [
          {k: _summarise({k: v})[k] for k, v in _score_maps(
              mm, data['gaze'], data['fixation_map'], other, baseline).items()
           if k in ('kld', 'nss')} for mm in member_maps]
      entry['consistency'] = {
          'mean_pairwise_correlation': consistency.mean_pairwise_correlation(member_maps),
          'cv_consistency': consistency.cv_consistency(member_maps)}
    results['explanations'][e] = entry
  if jax.process_index() != 0:
    return results
  out = epath.Path(workdir) / 'eval' / split
  out.mkdir(parents=True, exist_ok=True)
  (out / 'metrics.json').write_text(json.dumps(results, indent=1))
  (out / 'report.md').write_text(markdown_report(results))
  from mimic_jax import report_figures  # pylint: disable=g-import-not-at-top
  report_figures.gallery(data, class_names, out)
  return results


def _mean_train_gaze(config) -> np.ndarray:
  """Mean gaze map of the training split: the centre-bias baseline for information gain."""
  source = input_pipeline.data_source(config.data, 'train')
  total = None
  for i in range(len(source)):
    g = np.asarray(source[i]['gaze'], np.float64)
    total = g if total is None else total + g
  return total / len(source)


def _fmt(entry: dict) -> str:
  lo, hi = entry['ci95']
  return f'{entry["mean"]:.4f} [{lo:.4f}, {hi:.4f}]'


def markdown_report(results: dict) -> str:
  """The human-readable report of :func:`evaluate_run`'s results."""
  c = results['classification']
  lines = [f'# Evaluation of `{results["workdir"]}` ({results["split"]} split)', '',
           f'Method `{results["method"]}` with {results["num_models"]} sub-model(s), '
           f'{results["num_images"]} images. Means with 95% bootstrap intervals (2,000 '
           'resamples of images).', '', '## Classification', '',
           f'- accuracy {c["accuracy"]:.4f}, macro F1 {c["macro_f1"]:.4f}, mean one-vs-rest '
           f'ROC AUC {c["mean_auc"]:.4f}',
           '- AUC per class: ' + ', '.join(f'{k} {v:.4f}' for k, v in c['auc'].items()),
           f'- confusion matrix (rows true, columns predicted, order '
           f'{list(c["auc"])}): {c["confusion_matrix"]}', '',
           '## Explanations against radiologist gaze', '',
           'KLD lower is better; all other metrics higher is better. NSS, the AUCs and IG use '
           'the fixation map; KLD, CC and SIM the gaze heatmap. IG is in bits over the mean '
           'training gaze map.', '',
           '| explainer | ' + ' | '.join(MAP_METRICS) + ' |',
           '|---|' + '---|' * len(MAP_METRICS)]
  for e, entry in results['explanations'].items():
    lines.append(f'| {e} | ' + ' | '.join(_fmt(entry['ensemble'][k]) for k in MAP_METRICS)
                 + ' |')
  if any('consistency' in v for v in results['explanations'].values()):
    lines += ['', '## Sub-models', '',
              '| explainer | sub-model KLD | sub-model NSS | mean pairwise correlation | '
              'CV consistency (%) |', '|---|---|---|---|---|']
    for e, entry in results['explanations'].items():
      if 'members' in entry:
        klds = ', '.join(f'{m["kld"]["mean"]:.3f}' for m in entry['members'])
        nsss = ', '.join(f'{m["nss"]["mean"]:.3f}' for m in entry['members'])
        cons = entry['consistency']
        lines.append(f'| {e} | {klds} | {nsss} | {cons["mean_pairwise_correlation"]:.4f} | '
                     f'{cons["cv_consistency"]:.2f} |')
  lines += ['', 'Gallery: `gallery_<class>.png` beside this file.', '']
  return '\n'.join(lines)
