"""The names of what evaluation scores, and the Markdown report of one evaluated run (plain
Python: ``mimic_jax.compare`` reads results without the training stack)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
import html
import os
import re

# Explainers every evaluation scores, per sub-model and averaged over the ensemble: name -> how
# its map is signed, as the figures state it (``maps.COMPUTE`` computes each).
EXPLAINERS = {
  'grad_cam': 'Grad-CAM: ReLU of the gradient-weighted activations',
  'input_gradients': '|input gradient|, summed over channels',
  'gradient_shap': '|GradientSHAP|, summed over channels',
}
# MIT saliency metrics per image (``saliency_metrics.py``); KLD is lower-is-better.
MAP_METRICS = (
  'information_gain',
  'sncc',
  'sauc',
  'kld',
  'nss',
  'cc',
  'sim',
  'auc_judd',
  'auc_borji',
  'auc_shuffled',
)
# Metrics relative to the prior (the mean training gaze map): information gain over it, in
# bits per fixation, and shuffled NCC, both 0 for a map as good as the prior (``sauc``, the
# REFLACX shuffled AUC against the prior, is 0.5 there and compared like the other AUCs).
PRIOR_RELATIVE = ('information_gain', 'sncc')
LOWER_IS_BETTER = frozenset({'kld'})
# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {'evaluation.gradcam_target': ('logit', 'ensemble_log_softmax')}


def checkpoint_text(results: dict) -> str:
  """Which checkpoint an evaluation scored, in words."""
  c = results.get('checkpoint')
  if not c:
    return 'Checkpoint not recorded (evaluated by an older version)'
  how = {'latest': 'the latest', 'best': 'the best by validation'}.get(c['select'], 'the given')
  return f'Checkpoint: step {c["step"]}, {how} ({c["path"]})'


def _fmt(entry: dict) -> str:
  lo, hi = entry['ci95']
  return f'{entry["mean"]:.4f} [{lo:.4f}, {hi:.4f}]'


def _count(entry: dict) -> str:
  return f'{entry["n"]}' + (f' ({entry["nan"]} NaN)' if entry.get('nan') else '')


def markdown_report(results: dict, figures: Sequence[str] = ()) -> str:
  """The human-readable report of :func:`evaluate_run`'s results, showing ``figures`` (PNG file
  names beside the report)."""
  c = results['classification']
  lines = [
    f'# Evaluation of `{results["workdir"]}` ({results["split"]} split)',
    '',
    f'Method `{results["method"]}` with {results["num_models"]} sub-model(s), '
    f'{results["num_images"]} images. {checkpoint_text(results)}. Means with 95% bootstrap '
    'intervals (2,000 resamples of images).',
    '',
    '## Classification',
    '',
    f'- accuracy {c["accuracy"]:.4f}, macro F1 {c["macro_f1"]:.4f}, mean one-vs-rest '
    f'ROC AUC {c["mean_auc"]:.4f}',
    '- AUC per class: ' + ', '.join(f'{k} {v:.4f}' for k, v in c['auc'].items()),
    f'- confusion matrix (rows true, columns predicted, order '
    f'{list(c["auc"])}): {c["confusion_matrix"]}',
    '',
    '## Explanations against radiologist gaze',
    '',
    'KLD lower is better; all other metrics higher is better. NSS, the AUCs and IG use '
    'the fixation map; KLD, CC, SIM and sNCC the gaze heatmap. Relative to the prior (the mean '
    'training gaze map, the same for every image): IG in bits per fixation over it, sNCC = '
    'CC(map, gaze) - CC(map, prior); both are 0 for a map as good as the prior; sAUC, the '
    'REFLACX shuffled AUC (positives from the gaze, negatives from the prior), is 0.5 there. '
    'The reference rows are scored by the same code: `uniform` (a constant map), `prior` (the '
    'prior itself) and, where images have several readers, `reader` (each reader against the '
    'others: the human ceiling).',
    '',
    '| map | ' + ' | '.join(MAP_METRICS) + ' |',
    '|---|' + '---|' * len(MAP_METRICS),
  ]
  for e, entry in results['explanations'].items():
    lines.append(f'| {e} | ' + ' | '.join(_fmt(entry['ensemble'][k]) for k in MAP_METRICS) + ' |')
  for name, ref in results.get('references', {}).items():
    cells = ' | '.join(_fmt(ref['scores'][k]) for k in MAP_METRICS)
    lines.append(f'| reference: {name} | {cells} |')
  shares = {
    e: v['share_prior_to_reader']
    for e, v in results['explanations'].items()
    if 'share_prior_to_reader' in v
  }
  if shares:
    lines += [
      '',
      'Share of the way from the prior to the reader ceiling (0: the prior, 1: another reader; '
      'nan where another reader scores no better than the prior): '
      + '; '.join(f'{e} NSS {v["nss"]:.2f}, CC {v["cc"]:.2f}' for e, v in shares.items()),
    ]
  lines += [
    '',
    'Images each mean is over (and how many were left out as NaN: a constant map, for which '
    'the z-score or min-max normalisation is undefined; KLD is defined for it):',
    '',
    '| explainer | ' + ' | '.join(MAP_METRICS) + ' |',
    '|---|' + '---|' * len(MAP_METRICS),
  ]
  for e, entry in results['explanations'].items():
    lines.append(f'| {e} | ' + ' | '.join(_count(entry['ensemble'][k]) for k in MAP_METRICS) + ' |')
  if 'shortcut' in results:
    sc = results['shortcut']
    lines += [
      '',
      '## Shortcut reliance (synthetic data)',
      '',
      f'Accuracy on test {sc["test_accuracy"]:.4f}, on the decoy split {sc["accuracy"]:.4f} '
      "(every corner marker in a wrong class's corner); shortcut reliance (the difference) "
      f'{sc["shortcut_reliance"]:+.4f}, 0 for a model that ignores the marker.'
      + (
        f' Per image: moving the marker flips {_fmt(sc["flip_rate"])} of the predictions and '
        "lowers the true class's probability by "
        f'{_fmt(sc["true_class_probability_drop"])} (paired; 0 for a model that ignores it).'
        if 'flip_rate' in sc
        else ''
      )
      + " Mass of each map in its image's marker corner (the marker and a margin: a uniform "
      f'map puts {sc.get("uniform_corner_mass", float("nan")):.3f} there):',
      '',
      '| explainer | test | decoy |',
      '|---|---|---|',
    ]
    for e, entry in sc['corner_mass'].items():
      lines.append(
        f'| {e} | {_fmt(entry["corner_mass_test"])} | {_fmt(entry["corner_mass_decoy"])} |'
      )
  if any('consistency' in v for v in results['explanations'].values()):
    lines += [
      '',
      '## Sub-models',
      '',
      '| explainer | sub-model KLD | sub-model NSS | mean pairwise correlation | '
      'CV consistency (%) |',
      '|---|---|---|---|---|',
    ]
    for e, entry in results['explanations'].items():
      if 'members' in entry:
        klds = ', '.join(f'{m["kld"]["mean"]:.3f}' for m in entry['members'])
        nsss = ', '.join(f'{m["nss"]["mean"]:.3f}' for m in entry['members'])
        cons = entry['consistency']
        lines.append(
          f'| {e} | {klds} | {nsss} | {cons["mean_pairwise_correlation"]:.4f} | '
          f'{cons["cv_consistency"]:.2f} |'
        )
  if any('distinguishability' in v for v in results['explanations'].values()):
    lines += [
      '',
      '## Distinguishability',
      '',
      'Held-out accuracy of fresh probes naming the sub-model that made each test map, trained '
      'on the maps of training images (chance 1/M; 95% bootstrap interval over test images): '
      "the method's discriminator architecture, and logistic regression on the maps.",
      '',
      '| explainer | discriminator probe | logistic probe | chance | training images |',
      '|---|---|---|---|---|',
    ]
    for e, entry in results['explanations'].items():
      d = entry.get('distinguishability')
      if d:
        lines.append(
          f'| {e} | {_fmt(d["discriminator"])} | {_fmt(d["logistic"])} | '
          f'{d["logistic"]["chance"]:.3f} | {d.get("train_images", "")} |'
        )
  if figures:
    lines += ['', '## Figures', '']
    for name in figures:
      lines += [f'![{name}]({name})', '']
  return '\n'.join(lines) + '\n'


def html_report(markdown_text: str, folder: str | os.PathLike) -> str:
  """A self-contained HTML page of a Markdown report: its images (files in ``folder``) are
  embedded as base64 data, so that the page opens in a browser with no server and no files
  beside it. Raises ``FileNotFoundError`` naming an image the report links that is missing."""
  import markdown  # only when writing a report

  body = markdown.markdown(markdown_text, extensions=['tables'])

  def embed(match: re.Match) -> str:
    path = os.path.join(folder, html.unescape(match.group(1)))
    if not os.path.exists(path):
      raise FileNotFoundError(f'the report links {path}, which does not exist')
    with open(path, 'rb') as f:
      data = base64.b64encode(f.read()).decode('ascii')
    return f'src="data:image/png;base64,{data}"'

  body = re.sub(r'src="([^":]+\.png)"', embed, body)
  title = html.escape(markdown_text.splitlines()[0].lstrip('# ').replace('`', ''))
  return (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    f'<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n'
    '</html>\n'
  )


_STYLE = (
  'body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}'
  'table{border-collapse:collapse;font-size:0.85em;margin:1em 0}'
  'th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}'
  'th:first-child,td:first-child{text-align:left}img{max-width:100%}'
)
