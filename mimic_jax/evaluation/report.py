"""The names of what evaluation scores, and the Markdown report of one evaluated run (plain
Python: ``mimic_jax.compare`` reads results without the training stack)."""

from __future__ import annotations

# Explainers every evaluation scores, per sub-model and averaged over the ensemble.
EXPLAINERS = ('grad_cam', 'input_gradients', 'gradient_shap')
# MIT saliency metrics per image (``saliency_metrics.py``); KLD is lower-is-better.
MAP_METRICS = (
  'kld',
  'nss',
  'cc',
  'sim',
  'auc_judd',
  'auc_borji',
  'auc_shuffled',
  'information_gain',
)
LOWER_IS_BETTER = frozenset({'kld'})
# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {'evaluation.gradcam_target': ('logit', 'ensemble_log_softmax')}


def _fmt(entry: dict) -> str:
  lo, hi = entry['ci95']
  return f'{entry["mean"]:.4f} [{lo:.4f}, {hi:.4f}]'


def _count(entry: dict) -> str:
  return f'{entry["n"]}' + (f' ({entry["nan"]} NaN)' if entry.get('nan') else '')


def markdown_report(results: dict) -> str:
  """The human-readable report of :func:`evaluate_run`'s results."""
  c = results['classification']
  lines = [
    f'# Evaluation of `{results["workdir"]}` ({results["split"]} split)',
    '',
    f'Method `{results["method"]}` with {results["num_models"]} sub-model(s), '
    f'{results["num_images"]} images. Means with 95% bootstrap intervals (2,000 '
    'resamples of images).',
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
    'the fixation map; KLD, CC and SIM the gaze heatmap. IG is in bits over the mean '
    'training gaze map.',
    '',
    '| explainer | ' + ' | '.join(MAP_METRICS) + ' |',
    '|---|' + '---|' * len(MAP_METRICS),
  ]
  for e, entry in results['explanations'].items():
    lines.append(f'| {e} | ' + ' | '.join(_fmt(entry['ensemble'][k]) for k in MAP_METRICS) + ' |')
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
      f'{sc["shortcut_reliance"]:+.4f}, 0 for a model that ignores the marker. Mass of each '
      "map in its image's marker corner (the marker and a margin, 3.8% of the image: a uniform "
      'map puts 0.038 there):',
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
  lines += ['', 'Gallery: `gallery_<class>.png` beside this file.', '']
  return '\n'.join(lines)
