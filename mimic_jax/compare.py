r"""Paper-style comparison of evaluated runs against the first one.

  python -m mimic_jax.compare --workdirs runs/baseline,runs/mimic,runs/gaze \
      --out runs/comparison [--explainer grad_cam] [--split test]

Reads ``<workdir>/eval/<split>/metrics.json`` of each run (``main.py --mode=evaluate``),
writes ``comparison.md``, ``comparison.json`` and ``comparison.png``: per run the mean of every
gaze metric with its 95% interval, and the relative change of the mean against the first run
(KLD -x%, NSS +y%) with a paired bootstrap interval over the same test images.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os

from absl import app
from absl import flags
from etils import epath

from mimic_jax.evaluation import bootstrap
from mimic_jax.evaluation import figures
from mimic_jax.evaluation import report


def compare(
  workdirs: Sequence[str],
  out_dir: str | os.PathLike,
  names: Sequence[str] | None = None,
  explainer: str = 'grad_cam',
  split: str = 'test',
) -> dict:
  """Builds the comparison; returns it as a dict."""
  names = names or [epath.Path(w).name for w in workdirs]
  if len(names) != len(workdirs):
    raise ValueError(f'{len(names)} names for {len(workdirs)} workdirs')
  runs = {}
  for name, w in zip(names, workdirs):
    path = epath.Path(w) / 'eval' / split / 'metrics.json'
    if not path.exists():
      raise FileNotFoundError(f'{path} not found: run main.py --mode=evaluate on {w} first')
    runs[name] = json.loads(path.read_text())
  base = names[0]
  n_images = {n: r['num_images'] for n, r in runs.items()}
  if len(set(n_images.values())) != 1:
    raise ValueError(f'the runs were evaluated on different image sets: {n_images}')
  rows, changes = {}, {}
  for n in names:
    per = runs[n]['per_image'][explainer]
    rows[n] = {k: dict(zip(('mean', 'ci95'), _mean_ci(per[k]))) for k in report.MAP_METRICS}
    rows[n]['accuracy'] = runs[n]['classification']['accuracy']
    rows[n]['mean_auc'] = runs[n]['classification']['mean_auc']
    if n != base:
      changes[n] = {}
      for k in report.MAP_METRICS:
        c, lo, hi = bootstrap.paired_relative_change_ci(
          runs[base]['per_image'][explainer][k], per[k]
        )
        changes[n][k] = {'change': c, 'ci95': [lo, hi]}
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  result = {
    'explainer': explainer,
    'split': split,
    'baseline': base,
    'runs': rows,
    'relative_change': changes,
    'workdirs': dict(zip(names, map(str, workdirs))),
  }
  (out / 'comparison.json').write_text(json.dumps(result, indent=1))
  (out / 'comparison.md').write_text(_markdown(result, names))
  figures.comparison_chart(names, rows, out / 'comparison.png')
  return result


def _mean_ci(values: Sequence[float]):
  m, lo, hi = bootstrap.mean_ci(values)
  return m, [lo, hi]


def _markdown(result: dict, names: Sequence[str] | None) -> str:
  rows, ch, base = result['runs'], result['relative_change'], result['baseline']
  key = ('kld', 'nss', 'cc', 'sim', 'auc_judd', 'auc_shuffled')
  lines = [
    f'# Comparison ({result["explainer"]} maps, {result["split"]} split)',
    '',
    f'Means with 95% bootstrap intervals; changes relative to `{base}` with paired '
    'bootstrap intervals over the same images. KLD: lower is better.',
    '',
    '| run | accuracy | mean AUC | ' + ' | '.join(key) + ' |',
    '|---|---|---|' + '---|' * len(key),
  ]
  for n in names:
    r = rows[n]
    lines.append(
      f'| {n} | {r["accuracy"]:.3f} | {r["mean_auc"]:.3f} | '
      + ' | '.join(
        f'{r[k]["mean"]:.3f} [{r[k]["ci95"][0]:.3f}, {r[k]["ci95"][1]:.3f}]' for k in key
      )
      + ' |'
    )
  lines += [
    '',
    f'Relative change against `{base}`:',
    '',
    '| run | ' + ' | '.join(key) + ' |',
    '|---|' + '---|' * len(key),
  ]
  for n in names[1:]:
    lines.append(
      f'| {n} | '
      + ' | '.join(
        f'{100 * ch[n][k]["change"]:+.1f}% [{100 * ch[n][k]["ci95"][0]:+.1f}, '
        f'{100 * ch[n][k]["ci95"][1]:+.1f}]'
        for k in key
      )
      + ' |'
    )
  lines += ['', '![KLD and NSS](comparison.png)', '']
  return '\n'.join(lines)


_WORKDIRS = flags.DEFINE_list(
  'workdirs', None, 'Evaluated run directories; the first is the reference.'
)
_NAMES = flags.DEFINE_list('names', None, 'Display names (default: folder names).')
_OUT = flags.DEFINE_string('out', None, 'Output folder.')
_EXPLAINER = flags.DEFINE_enum(
  'explainer', 'grad_cam', list(report.EXPLAINERS), 'Which explanation maps to compare.'
)
_SPLIT = flags.DEFINE_string('split', 'test', 'Evaluated split.')


def main(argv: Sequence[str]) -> None:
  del argv
  result = compare(_WORKDIRS.value, _OUT.value, _NAMES.value, _EXPLAINER.value, _SPLIT.value)
  print((epath.Path(_OUT.value) / 'comparison.md').read_text())
  del result


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdirs', 'out'])
  app.run(main)
