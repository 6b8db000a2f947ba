"""A trained run's explanations scored on REFLACX: against each radiologist, beside the uniform
map, the prior and the human ceiling, and against the abnormality ellipses.

Any run (trained on EGD, synthetic EGD or REFLACX) explains the REFLACX images of the chosen
splits at its own image size; images in the run's own training split (same ``dicom_id``) are
left out and counted. Each explainer's ensemble map is scored, with the MIT metrics and the
prior-relative ones of ``evaluate.py``, in three tables:

- ``readers``: against each reading of the image (its heatmap and fixation map); an image's
  score is the mean over its readings with eye tracking;
- ``ceiling``: on the images every reader read with eye tracking, against the mean heatmap
  (and the union of the fixations) of the other readers, one trial per held-out reader
  (REFLACX's inter-observer protocol, arXiv 2112.11716); the ``reader`` row is the held-out
  reader's own heatmap, the human ceiling;
- ``ellipses``: NCC of the map with the union of a reading's ellipses of certainty > 2 (the
  dataset paper's protocol, 0.380 for a reader's own gaze) and IoU of the map's top pixels
  (as many as the ellipses cover) with them, over the readings that drew an ellipse.

Rows: each explainer, ``uniform``, ``prior`` (the mean heatmap of every other REFLACX image's
readings: the centre bias, never of the image scored) and, where defined, the readers' own gaze.
The prior is also the baseline of information gain and sNCC. Means over images with 95%
bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os

from etils import epath
import jax
import ml_collections
import numpy as np

from data_builders.reflacx import ellipses as ellipses_lib
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import pipeline
from mimic_jax.data import prepare
from mimic_jax.evaluation import evaluate
from mimic_jax.evaluation import references
from mimic_jax.evaluation import report
from mimic_jax.training import checkpoints

SPLITS = ('train', 'validation', 'test', 'other')
TABLES = {
  'readers': 'against each reader (mean over the readings of an image)',
  'ceiling': 'against the mean of the other readers, on images every reader read',
  'ellipses': 'against the abnormality ellipses (certainty > 2) of each reading',
}
ELLIPSE_METRICS = ('ncc', 'iou')
# The gaze metrics the printed tables show (metrics.json has every one of report.MAP_METRICS).
SHOWN_METRICS = ('information_gain', 'sncc', 'kld', 'nss', 'cc', 'auc_judd')


def reflacx_data(
  config: ml_collections.ConfigDict, data_dir: str | None = None, manual_dir: str | None = None
) -> ml_collections.ConfigDict:
  """The ``config.data`` of REFLACX at the run's image size: the given folders, else the run's
  own data when it trained on REFLACX, else the embedded synthetic REFLACX tree."""
  from configs import mimic as mimic_config

  if config.data.get('dataset') == 'reflacx':
    data = ml_collections.ConfigDict(config.data.to_dict())
  else:
    base = mimic_config.get_config('reflacx')
    data = ml_collections.ConfigDict(base.data.to_dict())
    data.builder_config = config.data.builder_config
  if data_dir or manual_dir:
    data.synthetic_reflacx = None
    data.data_dir = data_dir or data.data_dir
    data.manual_dir = manual_dir or data.manual_dir
  return data


def top_area_mask(saliency: np.ndarray, area: int) -> np.ndarray:
  """bool: the ``area`` highest pixels of ``saliency`` (ties broken by position)."""
  order = np.argsort(-np.asarray(saliency, np.float64).ravel(), kind='stable')
  mask = np.zeros(saliency.size, bool)
  mask[order[:area]] = True
  return mask.reshape(saliency.shape)


def ellipse_scores(saliency: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """NCC of ``saliency`` with the ellipse ``mask`` and IoU of its top ``mask.sum()`` pixels."""
  return {
    'ncc': ellipses_lib.ncc(saliency, mask),
    'iou': ellipses_lib.iou(top_area_mask(saliency, int(mask.sum())), mask),
  }


def _readings(source: Sequence[dict], index: int) -> dict[str, np.ndarray]:
  r = source[index]['readings']
  return {
    'gaze': np.asarray(r['gaze'], np.float64),
    'fixation_map': np.asarray(r['fixation_map'], np.uint8),
    'discarded': np.asarray(r['discarded'], bool),
    'ellipse_union': np.asarray(r['ellipses'], bool).any(axis=1),
  }


def _mean_scores(per_trial: list[dict[str, list[float]]], n: int, metrics: Sequence[str]) -> dict:
  """Per metric, each image's mean over the trials that scored it (NaN where none did)."""
  out = {}
  for k in metrics:
    values = [[] for _ in range(n)]
    for trial in per_trial:
      for i, v in zip(trial['images'], trial[k]):
        if np.isfinite(v):
          values[i].append(v)
    out[k] = [float(np.mean(v)) if v else float('nan') for v in values]
  return out


def score_tables(
  maps: dict[str, np.ndarray],
  readings: list[dict[str, np.ndarray]],
  prior: np.ndarray,
  fixation_map: np.ndarray,
) -> tuple[dict, dict]:
  """``(summaries, per-image scores)`` of every row in every table (module docstring).

  Args:
    maps: explainer -> ``(N, S, S)`` ensemble maps of the N evaluated images.
    readings: per image, :func:`_readings` (``(R_i, S, S)`` heatmaps, fixation maps, ...).
    prior: ``(N, S, S)`` each image's prior (the mean heatmap of the other images).
    fixation_map: ``(N, S, S)`` each image's union of fixations (shuffled AUC's negatives).
  """
  n = len(readings)
  other = evaluate._other_fixations(fixation_map)
  rows = dict(maps)
  rows['uniform'] = np.ones_like(prior)
  rows['prior'] = prior
  most = max(len(r['discarded']) for r in readings)
  per_image: dict[str, dict] = {t: {} for t in TABLES}

  # One trial per reading position k: the images whose k-th reading has eye tracking.
  reading_trials = []
  for k in range(most):
    images = [i for i, r in enumerate(readings) if k < len(r['discarded'])]
    images = [i for i in images if not readings[i]['discarded'][k]]
    if images:
      gaze = np.stack([readings[i]['gaze'][k] for i in images])
      fix = np.stack([readings[i]['fixation_map'][k] for i in images])
      reading_trials.append((images, gaze, fix))
  for name, row in rows.items():
    scored = []
    for images, gaze, fix in reading_trials:
      s = evaluate._score_maps(row[images], gaze, fix, other[images], prior[images])
      scored.append({'images': images, **s})
    per_image['readers'][name] = _mean_scores(scored, n, report.MAP_METRICS)

  full = references.every_reader([r['discarded'] for r in readings])
  if full:
    reader_gaze = np.stack([readings[i]['gaze'] for i in full])
    reader_fix = np.stack([readings[i]['fixation_map'] for i in full])
    trials = references.leave_one_reader_out(reader_gaze, reader_fix, np.asarray(full))
    for name, row in {**rows, 'reader': None}.items():
      scored = []
      for t in trials:
        saliency = t.maps if row is None else row[full]
        s = evaluate._score_maps(saliency, t.gaze, t.fixation_map, other[full], prior[full])
        scored.append({'images': full, **s})
      per_image['ceiling'][name] = _mean_scores(scored, n, report.MAP_METRICS)

  for name, row in {**rows, 'reader': None}.items():
    if name == 'uniform':
      continue  # a constant map has no correlation and no top pixels
    scored = []
    for k in range(most):
      images, values = [], {m: [] for m in ELLIPSE_METRICS}
      for i, r in enumerate(readings):
        if k >= len(r['discarded']) or not r['ellipse_union'][k].any():
          continue
        if row is None and r['discarded'][k]:
          continue  # the reader's own gaze needs eye tracking
        saliency = r['gaze'][k] if row is None else row[i]
        for m, v in ellipse_scores(saliency, r['ellipse_union'][k]).items():
          values[m].append(v)
        images.append(i)
      if images:
        scored.append({'images': images, **values})
    per_image['ellipses'][name] = _mean_scores(scored, n, ELLIPSE_METRICS)

  summaries = {
    t: {name: evaluate._summarise(v) for name, v in rows_.items()} for t, rows_ in per_image.items()
  }
  return summaries, per_image


def evaluate_on_reflacx(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  data: ml_collections.ConfigDict,
  splits: tuple[str, ...] = ('test',),
  out: str | os.PathLike | None = None,
  *,
  tuning: tuning_lib.Tuning | None = None,
) -> dict:
  """Scores ``workdir``'s run on ``splits`` of the REFLACX build ``data`` (module docstring);
  writes ``metrics.json`` and ``report.md`` to ``out`` (default ``<workdir>/eval_reflacx``)."""
  unknown = [s for s in splits if s not in SPLITS]
  if unknown:
    raise ValueError(f'unknown REFLACX split(s) {unknown}; choose from {list(SPLITS)}')
  builder = prepare.prepare_dataset(data)
  built = [s for s in splits if s in builder.info.splits]
  if not built:
    raise ValueError(f'the REFLACX build {builder.data_dir} has none of the splits {list(splits)}')
  tuning = tuning or tuning_lib.resolve(config.xla)
  state, checkpoint = checkpoints.load_checkpoint(
    config, workdir, tuning=tuning, devices=jax.local_devices()
  )
  trained_on = training_ids(config)
  if trained_on is None:
    print(
      f"[reflacx] warning: the run's own build ({config.data.data_dir}) is not readable here, "
      'so images it trained on cannot be left out; metrics.json records this',
      flush=True,
    )
  fns = evaluate._jitted_functions(config, tuning)
  # Every built split's readings, read once: the evaluated ones and the prior's pool.
  by_split = {}
  for split in builder.info.splits:
    source = pipeline.data_source(data, split)
    by_split[split] = [_readings(source, i) for i in range(len(source))]
  maps, readings, fixation_maps, ids, left_out = {}, [], [], [], 0
  for split in built:
    collected = evaluate.collect(config, state, fns, data, split, label=f'REFLACX {split}')
    keep = [i for i, d in enumerate(collected['dicom_id']) if d not in (trained_on or ())]
    left_out += len(collected['dicom_id']) - len(keep)
    for e, m in collected['maps'].items():
      maps.setdefault(e, []).append(m.mean(axis=0)[keep])
    readings += [by_split[split][i] for i in keep]
    fixation_maps.append(collected['fixation_map'][keep])
    ids += [collected['dicom_id'][i] for i in keep]
  if not ids:
    raise ValueError(
      f"every REFLACX image of {built} is in the run's training split; evaluate other splits"
    )
  all_readings = [r for split_readings in by_split.values() for r in split_readings]
  prior = prior_excluding(all_readings, readings)
  summaries, per_image = score_tables(
    {e: np.concatenate(v) for e, v in maps.items()}, readings, prior, np.concatenate(fixation_maps)
  )
  results = {
    'workdir': str(workdir),
    'checkpoint': checkpoint,
    'trained_on': f'{config.data.get("dataset") or "mimic_cxr_egd"} ({config.data.data_dir})',
    'reflacx': {'data_dir': str(data.data_dir), 'build': builder.info.full_name},
    'splits': list(built),
    'num_images': len(ids),
    'left_out_trained_images': left_out,
    'training_images_known': trained_on is not None,
    'images_every_reader_read': len(references.every_reader([r['discarded'] for r in readings])),
    'tables': summaries,
    'per_image': {'dicom_id': ids, **per_image},
  }
  out = epath.Path(out or epath.Path(workdir) / 'eval_reflacx')
  out.mkdir(parents=True, exist_ok=True)
  (out / 'metrics.json').write_text(json.dumps(results, indent=1))
  (out / 'report.md').write_text(markdown_report(results))
  return results


def training_ids(config: ml_collections.ConfigDict) -> set[str] | None:
  """The ``dicom_id`` of every image of the run's own training split, or ``None`` if its build
  cannot be read here."""
  try:
    train = pipeline.data_source(config.data, 'train')
  except Exception:  # noqa: BLE001 - no build of the run's data on this machine
    return None
  return {train[i]['dicom_id'].decode() for i in range(len(train))}


def prior_excluding(
  every: list[dict[str, np.ndarray]], evaluated: list[dict[str, np.ndarray]]
) -> np.ndarray:
  """``(N, S, S)``: per evaluated image (one of ``every``, the readings of all REFLACX images),
  the mean heatmap of the readings with eye tracking of every other image."""

  def sums(readings: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([r['gaze'][~r['discarded']].sum(axis=0) for r in readings]), np.asarray(
      [(~r['discarded']).sum() for r in readings], np.float64
    )

  all_sums, all_counts = sums(every)
  own_sums, own_counts = sums(evaluated)
  return (all_sums.sum(axis=0)[None] - own_sums) / (all_counts.sum() - own_counts)[:, None, None]


def _cell(entry: dict) -> str:
  if not entry['n']:
    return '-'
  lo, hi = entry['ci95']
  return f'{entry["mean"]:.3f} [{lo:.3f}, {hi:.3f}]'


def markdown_report(results: dict) -> str:
  """The three tables, model rows beside uniform, prior and reader."""
  lines = [
    '# Explanations on REFLACX',
    '',
    f'Run `{results["workdir"]}` ({report.checkpoint_text(results)}), trained on '
    f'{results["trained_on"]}; '
    f'REFLACX `{results["reflacx"]["build"]}` splits {", ".join(results["splits"])}: '
    f'{results["num_images"]} images ({results["images_every_reader_read"]} read by every reader; '
    + (
      f'{results["left_out_trained_images"]} left out as the run trained on them). '
      if results.get('training_images_known', True)
      else "the run's training images are unknown here, so none was left out). "
    )
    + 'Means over images with 95% bootstrap intervals; KLD is lower-is-better; information gain '
    '(bits per fixation) and sNCC are relative to the prior (0 for the prior).',
  ]
  for table, description in TABLES.items():
    rows = results['tables'][table]
    if not rows:
      lines += ['', f'## {table}: {description}', '', 'No image qualifies.']
      continue
    metrics = ELLIPSE_METRICS if table == 'ellipses' else SHOWN_METRICS
    lines += ['', f'## {table}: {description}', '']
    lines.append('| row | ' + ' | '.join(metrics) + ' |')
    lines.append('|---|' + '---|' * len(metrics))
    for name, scores in rows.items():
      lines.append(f'| {name} | ' + ' | '.join(_cell(scores[m]) for m in metrics) + ' |')
  return '\n'.join(lines) + '\n'


def across_runs(results: Sequence[dict], names: Sequence[str]) -> str:
  """Markdown: per table, each explainer's and reference's mean over the runs of each run's
  mean, with a 95% t interval across runs (``names``: one label per run, e.g. its variant;
  runs with the same label are pooled, as seeds of one variant)."""
  from mimic_jax.evaluation import bootstrap

  groups: dict[str, list[dict]] = {}
  for name, r in zip(names, results):
    groups.setdefault(name, []).append(r)
  lines = [
    '# Explanations on REFLACX, across runs',
    '',
    "Per row: the mean over runs of each run's mean over images, with a 95% t interval "
    'across runs (' + ', '.join(f'{k}: {len(v)} runs' for k, v in groups.items()) + '). '
    'Reference rows do not depend on the model; they are shown once, from the first group.',
  ]
  for table, description in TABLES.items():
    metrics = ELLIPSE_METRICS if table == 'ellipses' else SHOWN_METRICS
    lines += ['', f'## {table}: {description}', '', '| row | ' + ' | '.join(metrics) + ' |']
    lines.append('|---|' + '---|' * len(metrics))
    first = next(iter(groups.values()))
    for ref in ('uniform', 'prior', 'reader'):
      if ref in first[0]['tables'][table]:
        cells = [first[0]['tables'][table][ref][m] for m in metrics]
        lines.append(f'| {ref} | ' + ' | '.join(_cell(c) for c in cells) + ' |')
    for name, runs in groups.items():
      for explainer in report.EXPLAINERS:
        if explainer not in runs[0]['tables'][table]:
          continue
        cells = []
        for m in metrics:
          mean, lo, hi = bootstrap.t_interval(
            [r['tables'][table][explainer][m]['mean'] for r in runs]
          )
          cells.append(f'{mean:.3f} [{lo:.3f}, {hi:.3f}]')
        lines.append(f'| {name} {explainer} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'
