"""Figures of the evaluation report (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
import os

import matplotlib

matplotlib.use('Agg')
from etils import epath
import matplotlib.pyplot as plt
import numpy as np


def _grey(image: np.ndarray) -> np.ndarray:
  g = image.mean(axis=-1) if image.ndim == 3 else image
  return (g - g.min()) / max(g.max() - g.min(), 1e-12)


def gallery(
  data: dict, class_names: Sequence[str], out_dir: str | os.PathLike, per_class: int = 4
) -> list:
  """One PNG per class: rows are test images; columns the image, the gaze heatmap with the
  fixated pixels, and each explainer's ensemble map overlaid on the image."""
  paths = []
  explainers = list(data['maps'])
  for k, name in enumerate(class_names):
    idx = np.flatnonzero(data['label'] == k)[:per_class]
    if idx.size == 0:
      continue
    cols = 2 + len(explainers)
    fig, axes = plt.subplots(len(idx), cols, figsize=(2.4 * cols, 2.5 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
      img = _grey(data['image'][i])
      pred = class_names[int(np.argmax(data['scores'][i]))]
      panels = [('image (pred. ' + pred + ')', None), ('gaze + fixations', data['gaze'][i])]
      panels += [(e, data['maps'][e].mean(axis=0)[i]) for e in explainers]
      for c, (title, heat) in enumerate(panels):
        ax = axes[r, c]
        ax.imshow(img, cmap='gray', vmin=0, vmax=1)
        if heat is not None:
          ax.imshow(heat, cmap='jet', alpha=0.45)
        if c == 1:
          ys, xs = np.nonzero(data['fixation_map'][i])
          ax.scatter(xs, ys, s=6, c='white', edgecolors='black', linewidths=0.4)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
          ax.set_title(title, fontsize=9)
    fig.suptitle(f'true class: {name}', fontsize=11)
    fig.tight_layout()
    path = epath.Path(out_dir) / f'gallery_{name}.png'
    _save(fig, path, dpi=90)
    paths.append(path)
  return paths


def _save(fig: matplotlib.figure.Figure, path: epath.Path, dpi: int) -> None:
  """PNG through epath, so that gs:// works."""
  with path.open('wb') as f:
    fig.savefig(f, format='png', dpi=dpi)
  plt.close(fig)


def comparison_chart(names: Sequence[str], rows: dict, path: str | os.PathLike) -> None:
  """Bar charts of KLD and NSS (means with 95% intervals) for the compared runs."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for ax, metric in zip(axes, ('kld', 'nss')):
    means = [rows[n][metric]['mean'] for n in names]
    lo = [rows[n][metric]['mean'] - rows[n][metric]['ci95'][0] for n in names]
    hi = [rows[n][metric]['ci95'][1] - rows[n][metric]['mean'] for n in names]
    ax.bar(
      names, means, yerr=[lo, hi], capsize=4, color=['#888888'] + ['#3a7bd5'] * (len(names) - 1)
    )
    ax.set_title(f'{metric.upper()} ({"lower" if metric == "kld" else "higher"} is better)')
    ax.tick_params(axis='x', rotation=20)
  fig.tight_layout()
  _save(fig, epath.Path(path), dpi=100)
