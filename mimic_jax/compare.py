r"""Paper-style comparison of evaluated runs, against one or more reference runs.

  python -m mimic_jax.compare --workdirs runs/baseline,runs/ensemble,runs/mimic \
      --references baseline,ensemble --out runs/comparison [--explainer grad_cam] [--unpaired]
  python -m mimic_jax.compare --sweep runs/sweep --references baseline,ensemble \
      --out runs/sweep/comparison

Reads ``<workdir>/eval/<split>/metrics.json`` of each run (``main.py --mode=evaluate``) and
writes ``comparison.md``, ``comparison.json`` and ``comparison.png`` (and ``.svg``).

- ``--workdirs``: one run per name: ``--names``, or the shortest end of each path that tells the
  runs apart (``runs/a/seed_0,runs/b/seed_0`` -> ``a/seed_0``, ``b/seed_0``); the same run twice,
  or two runs given one name, is an error. Per run the mean of every gaze metric
  with its 95% bootstrap interval, and its relative change against each reference (KLD -x%,
  NSS +y%) with a paired bootstrap interval over the same test images, paired by ``dicom_id``.
  Runs evaluated on different images are an error, or, with ``--unpaired``, compared with
  unpaired intervals and labelled so.
- ``--sweep``: a ``python -m mimic_jax.sweep`` folder, ``<variant>/seed_<k>/`` per run. Per
  variant the mean over seeds of each run-level quantity with a 95% t interval across seeds,
  and its difference to each reference variant, paired by seed, with a t interval across
  seeds.

Quantities: accuracy and mean ROC AUC; the explainer's map metrics (means over images), led by
those relative to the prior; the reference maps (uniform, the prior, the reader ceiling where
there are several readers) as rows of their own; on the synthetic data also the decoy split's
accuracy, shortcut reliance (test minus decoy accuracy), the share of predictions the marker's
move flips, and the map's mass in the marker's corner.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
import os
import re

from absl import app
from absl import flags
from etils import epath
import numpy as np

from mimic_jax.evaluation import bootstrap
from mimic_jax.evaluation import figures
from mimic_jax.evaluation import report

# The map metrics the tables show (metrics.json holds all of report.MAP_METRICS): first those
# relative to the prior, then the raw ones.
SHOWN = ('information_gain', 'sncc', 'sauc', 'auc_shuffled', 'kld', 'nss', 'cc', 'sim')
SHORT = {
  'information_gain': 'IG (bits)',
  'sncc': 'sNCC',
  'sauc': 'sAUC',
  'auc_shuffled': 'shuffled AUC',
}

# An ensemble's explanations among themselves (NaN for one model): the fresh probes' held-out
# accuracy naming the sub-model of a map (chance 1/M) and the sub-models' agreement.
ENSEMBLE_KEYS = ('probe_discriminator', 'probe_logistic', 'pairwise_correlation', 'cv_consistency')
ENSEMBLE_HEADERS = {
  'probe_discriminator': 'discriminator probe',
  'probe_logistic': 'logistic probe',
  'pairwise_correlation': 'pairwise correlation',
  'cv_consistency': 'CV consistency (%)',
}


class ComparisonError(ValueError):
  """The runs cannot be compared as asked (different images, missing or malformed results)."""


def load_results(workdir: str | os.PathLike, split: str = 'test') -> dict:
  """The ``metrics.json`` of an evaluated run; errors name the file."""
  path = epath.Path(workdir) / 'eval' / split / 'metrics.json'
  if not path.exists():
    raise ComparisonError(f'{path} not found: run main.py --mode=evaluate on {workdir} first')
  try:
    results = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ComparisonError(f'{path} is not valid JSON ({e}); evaluate the run again') from e
  for key in ('classification', 'explanations', 'per_image'):
    if key not in results:
      raise ComparisonError(f'{path} has no {key!r}: not a metrics.json of main.py --mode=evaluate')
  missing = [
    k
    for k in report.MAP_METRICS
    if k not in next(iter(results['explanations'].values()))['ensemble']
  ]
  if missing or 'references' not in results:
    raise ComparisonError(
      f'{path} has no {missing or "reference maps"}: it was evaluated by an older version; '
      'evaluate the run again (main.py --mode=evaluate)'
    )
  return results


def _reference_rows(results: dict) -> dict[str, dict]:
  """``{'reference: <name>': {metric: {'mean', 'ci95'}}}`` of the reference maps of one
  evaluated run (the same for every run evaluated on the same images and training data)."""
  return {
    f'reference: {name}': {k: _mean_ci(v) for k, v in per.items()}
    for name, per in results['per_image'].get('references', {}).items()
  }


def quantities(results: dict, explainer: str) -> dict[str, float]:
  """The run-level numbers a comparison shows for one run."""
  out = {
    'accuracy': results['classification']['accuracy'],
    'mean_auc': results['classification']['mean_auc'],
  }
  entry = results['explanations'][explainer]
  for k in report.MAP_METRICS:
    out[k] = entry['ensemble'][k]['mean']
  probes, agreement = entry.get('distinguishability', {}), entry.get('consistency', {})
  out['probe_discriminator'] = probes.get('discriminator', {}).get('mean', math.nan)
  out['probe_logistic'] = probes.get('logistic', {}).get('mean', math.nan)
  out['pairwise_correlation'] = agreement.get('mean_pairwise_correlation', math.nan)
  out['cv_consistency'] = agreement.get('cv_consistency', math.nan)
  if 'shortcut' in results:
    sc = results['shortcut']
    out['decoy_accuracy'] = sc['accuracy']
    out['shortcut_reliance'] = sc['shortcut_reliance']
    out['flip_rate'] = sc['flip_rate']['mean'] if 'flip_rate' in sc else float('nan')
    out['corner_mass'] = sc['corner_mass'][explainer]['corner_mass_test']['mean']
  return out


def _aligned(base: dict, other: dict, names: tuple[str, str], unpaired: bool) -> np.ndarray | None:
  """Indices into ``other``'s per-image lists in ``base``'s image order, or ``None`` for an
  unpaired comparison; an error if the two runs were evaluated on different images."""
  ids = [r['per_image'].get('dicom_id') for r in (base, other)]
  if ids[0] is None or ids[1] is None:
    raise ComparisonError(
      f'{names[0]} or {names[1]} has no per-image dicom_id (evaluated by an older version): '
      'evaluate both again to compare them'
    )
  if sorted(ids[0]) == sorted(ids[1]) and len(set(ids[0])) == len(ids[0]):
    where = {d: i for i, d in enumerate(ids[1])}
    return np.asarray([where[d] for d in ids[0]])
  if unpaired:
    return None
  common = len(set(ids[0]) & set(ids[1]))
  raise ComparisonError(
    f'{names[0]} and {names[1]} were evaluated on different images ({len(ids[0])} and '
    f'{len(ids[1])}, {common} in common; datasets {base.get("dataset")} and '
    f'{other.get("dataset")}): a paired comparison is meaningless. Evaluate them on the same '
    'split, or pass --unpaired for unpaired intervals.'
  )


def compare_runs(
  runs: dict[str, dict], references: Sequence[str], explainer: str, unpaired: bool = False
) -> dict:
  """Means per run and relative changes against each reference (see the module docstring)."""
  table = {}
  for name, results in runs.items():
    per = results['per_image'][explainer]
    row = {k: _mean_ci(per[k]) for k in report.MAP_METRICS}
    row['n'] = {
      k: int(np.sum(~np.isnan(np.asarray(per[k], np.float64)))) for k in report.MAP_METRICS
    }
    row.update({k: v for k, v in quantities(results, explainer).items() if k not in per})
    row['checkpoint'] = results.get('checkpoint', {}).get('select', 'unrecorded')
    row['probes'] = results['explanations'][explainer].get('distinguishability', {})
    table[name] = row
  changes = {}
  for ref in references:
    if ref not in runs:
      raise ComparisonError(f'reference {ref!r} is not among the runs {list(runs)}')
    for name, results in runs.items():
      if name == ref:
        continue
      order = _aligned(runs[ref], results, (ref, name), unpaired)
      entry = {'paired': order is not None}
      for k in report.MAP_METRICS:
        base = np.asarray(runs[ref]['per_image'][explainer][k], np.float64)
        other = np.asarray(results['per_image'][explainer][k], np.float64)
        if k in report.PRIOR_RELATIVE:  # 0 at the prior, either sign: a difference
          fn = bootstrap.unpaired_difference_ci if order is None else bootstrap.paired_difference_ci
        else:
          fn = (
            bootstrap.unpaired_relative_change_ci
            if order is None
            else bootstrap.paired_relative_change_ci
          )
        c, lo, hi = fn(base, other if order is None else other[order])
        entry[k] = {'change': c, 'ci95': [lo, hi]}
      changes.setdefault(ref, {})[name] = entry
  first = next(iter(runs.values()))
  return {'runs': table, 'reference_maps': _reference_rows(first), 'relative_change': changes}


def _mean_ci(values: Sequence[float]) -> dict:
  m, lo, hi = bootstrap.mean_ci(values)
  return {'mean': m, 'ci95': [lo, hi]}


def aggregate_seeds(
  groups: dict[str, dict[int, dict]], references: Sequence[str], explainer: str
) -> dict:
  """Per variant the mean and t interval across seeds of every quantity, and the difference
  to each reference variant paired by seed (relative for the map metrics as well)."""
  values = {
    v: {s: quantities(r, explainer) for s, r in sorted(seeds.items())}
    for v, seeds in groups.items()
  }
  table = {}
  for v, per_seed in values.items():
    keys = list(next(iter(per_seed.values())))
    table[v] = {
      k: dict(zip(('mean', 'lo', 'hi'), bootstrap.t_interval([q[k] for q in per_seed.values()])))
      for k in keys
    }
    table[v]['seeds'] = sorted(per_seed)
  diffs = {}
  for ref in references:
    if ref not in values:
      raise ComparisonError(f'reference variant {ref!r} is not in the sweep {list(values)}')
    for v, per_seed in values.items():
      if v == ref:
        continue
      seeds = sorted(set(per_seed) & set(values[ref]))
      entry = {'seeds': seeds}
      shared = [k for k in per_seed[seeds[0]] if k in values[ref][seeds[0]]] if seeds else []
      for k in shared:
        d = [per_seed[s][k] - values[ref][s][k] for s in seeds]
        entry[k] = dict(zip(('mean', 'lo', 'hi'), bootstrap.t_interval(d)))
        if k in report.MAP_METRICS and k not in report.PRIOR_RELATIVE:
          rel = [per_seed[s][k] / values[ref][s][k] - 1 for s in seeds]
          entry[f'{k}_relative'] = dict(zip(('mean', 'lo', 'hi'), bootstrap.t_interval(rel)))
      diffs.setdefault(ref, {})[v] = entry
  # The reference maps over the same seeds' evaluations (of the first variant).
  seeds_of_first = next(iter(groups.values()))
  per_seed_refs = [
    {
      n: {k: r['scores'][k]['mean'] for k in report.MAP_METRICS}
      for n, r in res['references'].items()
    }
    for res in seeds_of_first.values()
  ]
  reference_maps = {
    f'reference: {n}': {
      k: dict(zip(('mean', 'lo', 'hi'), bootstrap.t_interval([p[n][k] for p in per_seed_refs])))
      for k in report.MAP_METRICS
    }
    for n in per_seed_refs[0]
  }
  return {'variants': table, 'reference_maps': reference_maps, 'difference': diffs}


def _fmt_interval(e: dict, digits: int = 3, percent: bool = False) -> str:
  """``mean [lo, hi]`` of an entry with ``lo``/``hi`` or ``ci95`` (the mean alone without an
  interval); as a signed percentage with ``percent``."""
  lo, hi = (e['lo'], e['hi']) if 'lo' in e else e['ci95']
  scale, unit, sign = (100, '%', '+') if percent else (1, '', '')
  m = f'{e["mean"] * scale:{sign}.{digits}f}{unit}'
  if math.isnan(lo):
    return m
  return f'{m} [{lo * scale:{sign}.{digits}f}, {hi * scale:{sign}.{digits}f}]'


def _runs_markdown(result: dict, names: Sequence[str]) -> str:
  rows, changes = result['runs'], result['relative_change']
  shortcut = all('decoy_accuracy' in rows[n] for n in names)
  extra = ['decoy acc.', 'reliance', 'flips', 'corner mass'] if shortcut else []
  lines = [
    f'# Comparison ({result["explainer"]} maps, {result["split"]} split)',
    '',
    'Means over the test images with 95% bootstrap intervals. ' + _METRICS_NOTE,
    '',
    '| run | accuracy | mean AUC | ' + ' | '.join(_headers(SHOWN) + extra) + ' |',
    '|---|---|---|' + '---|' * (len(SHOWN) + len(extra)),
  ]
  for n, r in result.get('reference_maps', {}).items():
    cells = ['—', '—'] + [_fmt_interval(r[k]) for k in SHOWN] + ['—'] * len(extra)
    lines.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  kinds = {n: rows[n].get('checkpoint', 'unrecorded') for n in names}
  mixed = len(set(kinds.values())) > 1
  if mixed:
    lines[1:1] = [
      '',
      '**The runs were scored at different kinds of checkpoint** ('
      + ', '.join(f'{n}: {k}' for n, k in kinds.items())
      + '): the rows are labelled; compare like with like (config.select_checkpoint).',
    ]
  for n in names:
    r = rows[n]
    label = f'{n} ({kinds[n]} checkpoint)' if mixed else n
    cells = [f'{r["accuracy"]:.3f}', f'{r["mean_auc"]:.3f}'] + [_fmt_interval(r[k]) for k in SHOWN]
    if shortcut:
      cells += [
        f'{r["decoy_accuracy"]:.3f}',
        f'{r["shortcut_reliance"]:+.3f}',
        f'{r["flip_rate"]:.3f}',
        f'{r["corner_mass"]:.3f}',
      ]
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  counts = {n: rows[n]['n'] for n in names}
  lines += [
    '',
    'Images per mean: '
    + '; '.join(
      f'{n} {", ".join(f"{k} {c}" for k, c in counts[n].items() if k in SHOWN)}' for n in names
    )
    + ' (the rest NaN: constant maps).',
  ]
  ensembles = [n for n in names if not math.isnan(rows[n]['pairwise_correlation'])]
  if ensembles:
    lines += [
      '',
      f"Ensembles: can a fresh probe tell the sub-models' {result['explainer']} maps apart? "
      "Held-out accuracy naming the sub-model of each test map (trained on training images' "
      "maps; chance 1/M; 95% bootstrap interval over test images), and the sub-models' "
      'agreement (mean pairwise Pearson correlation; CV consistency, 100 = identical maps):',
      '',
      '| run | ' + ' | '.join(ENSEMBLE_HEADERS.values()) + ' | chance |',
      '|---|' + '---|' * (len(ENSEMBLE_KEYS) + 1),
    ]
    for n in ensembles:
      r = rows[n]
      probes = [
        _fmt_interval(r['probes'][p]) if p in r['probes'] else '—'
        for p in ('discriminator', 'logistic')
      ]
      chance = r['probes'].get('logistic', {}).get('chance', math.nan)
      lines.append(
        f'| {n} | ' + ' | '.join(probes) + f' | {r["pairwise_correlation"]:.3f} | '
        f'{r["cv_consistency"]:.2f} | {chance:.3f} |'
      )
  for ref, per_run in changes.items():
    paired = all(e['paired'] for e in per_run.values())
    lines += [
      '',
      f'Change of the mean against `{ref}` (IG and sNCC: difference; the others: relative), '
      'with '
      + (
        'paired bootstrap intervals over the same images:'
        if paired
        else '**unpaired** bootstrap intervals (the runs were evaluated on different images):'
      ),
      '',
      '| run | ' + ' | '.join(_headers(SHOWN)) + ' |',
      '|---|' + '---|' * len(SHOWN),
    ]
    for n, e in per_run.items():
      cells = [
        _fmt_interval(
          {'mean': e[k]['change'], 'ci95': e[k]['ci95']},
          3 if k in report.PRIOR_RELATIVE else 1,
          percent=k not in report.PRIOR_RELATIVE,
        )
        for k in SHOWN
      ]
      lines.append(f'| {n} | ' + ' | '.join(cells) + ' |')
  lines += ['', '![IG, KLD and NSS with their intervals](comparison.png)', '']
  return '\n'.join(lines)


_METRICS_NOTE = (
  'Relative to the prior (the mean training gaze map, one map for every image): IG, information '
  'gain over it in bits per fixation, and sNCC = CC(map, gaze) - CC(map, prior), both 0 for a map '
  'as good as the prior; sAUC as REFLACX computes it (positives drawn from the gaze, negatives '
  'from the prior; 0.5 for a map no better than the prior) and the MIT shuffled AUC (negatives: '
  "other images' fixations). Raw: KLD "
  '(lower is better), NSS, CC, SIM. The `reference:` rows are maps scored by the same code: '
  '`uniform` (constant), `prior` and, with several readers per image, `reader` (each reader '
  'against the others: the human ceiling). Reliance: test minus decoy accuracy (0 for a model '
  "that ignores the shortcut marker); corner mass: the map's share in the marker's corner (a "
  'uniform map: about 0.037).'
)


def _headers(keys: Sequence[str]) -> list[str]:
  return [SHORT.get(k, k) for k in keys]


def _seeds_markdown(result: dict) -> str:
  table, diffs = result['variants'], result['difference']
  names = list(table)
  shortcut = all('decoy_accuracy' in table[v] for v in names)
  keys = ['accuracy', 'mean_auc', *SHOWN] + (
    ['decoy_accuracy', 'shortcut_reliance', 'flip_rate', 'corner_mass'] if shortcut else []
  )
  seeds = {v: table[v]['seeds'] for v in names}
  lines = [
    f'# Comparison across seeds ({result["explainer"]} maps, {result["split"]} split)',
    '',
    "Per variant: the mean over seeds of each run's number, with a 95% t interval across seeds "
    f"(seeds: {'; '.join(f'{v} {s}' for v, s in seeds.items())}). Map metrics are each run's "
    'mean over the test images. ' + _METRICS_NOTE,
    '',
    '| variant | ' + ' | '.join(_headers(keys)) + ' |',
    '|---|' + '---|' * len(keys),
  ]
  for n, r in result.get('reference_maps', {}).items():
    lines.append(
      f'| {n} | ' + ' | '.join(_fmt_interval(r[k]) if k in r else '—' for k in keys) + ' |'
    )
  for v in names:
    lines.append(f'| {v} | ' + ' | '.join(_fmt_interval(table[v][k]) for k in keys) + ' |')
  ensembles = [v for v in names if not math.isnan(table[v]['pairwise_correlation']['mean'])]
  if ensembles:
    lines += [
      '',
      f"Ensembles: can a fresh probe tell the sub-models' {result['explainer']} maps apart? "
      'Held-out accuracy naming the sub-model of each test map (chance 1/M), and the '
      "sub-models' agreement; mean over seeds with a 95% t interval across seeds; differences "
      'paired by seed:',
      '',
      '| variant | ' + ' | '.join(ENSEMBLE_HEADERS.values()) + ' |',
      '|---|' + '---|' * len(ENSEMBLE_KEYS),
    ]
    for v in ensembles:
      lines.append(
        f'| {v} | ' + ' | '.join(_fmt_interval(table[v][k]) for k in ENSEMBLE_KEYS) + ' |'
      )
    for ref, per_variant in diffs.items():
      if ref not in ensembles:
        continue
      for v, e in per_variant.items():
        if v in ensembles:
          lines.append(
            f'| {v} - {ref} | ' + ' | '.join(_fmt_interval(e[k]) for k in ENSEMBLE_KEYS) + ' |'
          )
  for ref, per_variant in diffs.items():
    lines += [
      '',
      f'Difference to `{ref}`, paired by seed, mean with a 95% t interval across seeds '
      '(raw map metrics relative, the rest absolute):',
      '',
      '| variant | ' + ' | '.join(_headers(keys)) + ' |',
      '|---|' + '---|' * len(keys),
    ]
    for v, e in per_variant.items():
      cells = [
        _fmt_interval(e[f'{k}_relative'], 1, percent=True)
        if f'{k}_relative' in e
        else _fmt_interval(e[k])
        for k in keys
      ]
      lines.append(f'| {v} | ' + ' | '.join(cells) + ' |')
  lines += ['', '![IG, KLD and NSS with their intervals](comparison.png)', '']
  return '\n'.join(lines)


def run_names(workdirs: Sequence[str]) -> list[str]:
  """The shortest trailing parts of ``workdirs``' paths that tell them apart (``a/seed_0``
  and ``b/seed_0`` for ``runs/a/seed_0`` and ``runs/b/seed_0``); an error for the same run
  given twice."""
  parts = [
    os.path.normpath(os.path.abspath(w) if '://' not in w else w).split(os.sep) for w in workdirs
  ]
  seen = {}
  for w, p in zip(workdirs, parts):
    if tuple(p) in seen:
      raise ComparisonError(f'{seen[tuple(p)]} and {w} are the same run: give each run once')
    seen[tuple(p)] = w
  for k in range(1, max(len(p) for p in parts) + 1):
    names = ['/'.join(p[-k:]) for p in parts]
    if len(set(names)) == len(names):
      return names
  return [str(w) for w in workdirs]


def compare(
  workdirs: Sequence[str],
  out_dir: str | os.PathLike,
  names: Sequence[str] | None = None,
  explainer: str = 'grad_cam',
  split: str = 'test',
  references: Sequence[str] | None = None,
  unpaired: bool = False,
) -> dict:
  """Compares single runs (``--workdirs``); writes and returns the comparison."""
  names = list(names) if names else run_names([str(w) for w in workdirs])
  if len(names) != len(workdirs):
    raise ComparisonError(f'{len(names)} names for {len(workdirs)} workdirs')
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ComparisonError(f'--names gives {repeated} to more than one run: name each run once')
  runs = {n: load_results(w, split) for n, w in zip(names, workdirs)}
  result = {
    'explainer': explainer,
    'split': split,
    'references': list(references or names[:1]),
    'workdirs': dict(zip(names, map(str, workdirs))),
    **compare_runs(runs, references or names[:1], explainer, unpaired),
  }
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'comparison.json').write_text(json.dumps(result, indent=1))
  (out / 'comparison.md').write_text(_runs_markdown(result, names))
  rows = {**result['reference_maps'], **result['runs']}
  n_images = len(next(iter(runs.values()))['per_image']['dicom_id'])
  what = (
    f'{explainer} maps on the {split} split: means over {n_images} images with 95% bootstrap '
    'intervals (grey: reference maps)'
  )
  figures.comparison_chart(list(rows), rows, out / 'comparison.png', what)
  return result


def sweep_runs(sweep_dir: str | os.PathLike, split: str = 'test') -> dict[str, dict[int, dict]]:
  """``{variant: {seed: metrics.json}}`` of the evaluated runs of a sweep folder."""
  groups = {}
  root = epath.Path(sweep_dir)
  for variant_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    for run in sorted(variant_dir.iterdir()):
      m = re.fullmatch(r'seed_(\d+)', run.name)
      if m and (run / 'eval' / split / 'metrics.json').exists():
        groups.setdefault(variant_dir.name, {})[int(m.group(1))] = load_results(run, split)
  if not groups:
    raise ComparisonError(f'no evaluated <variant>/seed_<k> runs in {root}')
  return groups


def compare_sweep(
  sweep_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  references: Sequence[str],
  explainer: str = 'grad_cam',
  split: str = 'test',
  variants: Sequence[str] | None = None,
) -> dict:
  """Aggregates a sweep across seeds (``--sweep``); writes and returns the comparison."""
  groups = sweep_runs(sweep_dir, split)
  if variants:
    missing = [v for v in variants if v not in groups]
    if missing:
      raise ComparisonError(f'no evaluated runs of {missing} in {sweep_dir}')
    groups = {v: groups[v] for v in variants}
  result = {
    'explainer': explainer,
    'split': split,
    'references': list(references),
    'sweep': str(sweep_dir),
    **aggregate_seeds(groups, references, explainer),
  }
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'comparison.json').write_text(json.dumps(result, indent=1))
  (out / 'comparison.md').write_text(_seeds_markdown(result))
  tables = {**result['reference_maps'], **result['variants']}
  rows = {
    v: {k: {'mean': e['mean'], 'ci95': [e['lo'], e['hi']]} for k, e in t.items() if k != 'seeds'}
    for v, t in tables.items()
  }
  seeds = sorted({s for t in result['variants'].values() for s in t['seeds']})
  what = (
    f"{explainer} maps on the {split} split: mean over {len(seeds)} seeds of each run's mean, "
    'with 95% t intervals across seeds (grey: reference maps)'
  )
  figures.comparison_chart(list(rows), rows, out / 'comparison.png', what)
  return result


def _cli() -> None:
  """The command line (its flags are defined only when this module runs as the program)."""
  workdirs = flags.DEFINE_list('workdirs', None, 'Evaluated run directories.')
  sweep = flags.DEFINE_string('sweep', None, 'A sweep folder (<variant>/seed_<k>/ runs).')
  names = flags.DEFINE_list(
    'names',
    None,
    'Display names of --workdirs, one each (default: the shortest end of each path that tells '
    'the runs apart, e.g. ensemble/seed_0).',
  )
  references = flags.DEFINE_list(
    'references', None, 'Runs (or sweep variants) to compare against (default: the first run).'
  )
  variants = flags.DEFINE_list('variants', None, 'Sweep variants to show, in order (default: all).')
  out = flags.DEFINE_string('out', None, 'Output folder.', required=True)
  explainer = flags.DEFINE_enum(
    'explainer', 'grad_cam', list(report.EXPLAINERS), 'Which explanation maps to compare.'
  )
  split = flags.DEFINE_string('split', 'test', 'Evaluated split.')
  unpaired = flags.DEFINE_bool(
    'unpaired', False, 'Compare runs evaluated on different images, with unpaired intervals.'
  )

  def main(argv: Sequence[str]) -> None:
    del argv
    if bool(workdirs.value) == bool(sweep.value):
      raise app.UsageError('give either --workdirs or --sweep')
    try:
      if sweep.value:
        compare_sweep(
          sweep.value,
          out.value,
          references.value or [],
          explainer.value,
          split.value,
          variants.value,
        )
      else:
        compare(
          workdirs.value,
          out.value,
          names.value,
          explainer.value,
          split.value,
          references.value,
          unpaired.value,
        )
    except ComparisonError as e:
      raise app.UsageError(str(e)) from e
    print((epath.Path(out.value) / 'comparison.md').read_text())

  app.run(main)


if __name__ == '__main__':
  _cli()
