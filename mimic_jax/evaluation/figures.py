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


# Panels of the training-curves figure: (title, metrics.jsonl keys drawn in it).
CURVES = (
  ('loss', ('train/loss', 'train/ce', 'train/penalty')),
  ('accuracy', ('train/accuracy', 'validation/accuracy')),
  ('validation Grad-CAM KLD to gaze (lower is better)', ('validation/kld',)),
  ('validation Grad-CAM NSS (higher is better)', ('validation/nss',)),
)


def training_curves(records: Sequence[dict], path: str | os.PathLike) -> epath.Path | None:
  """A PNG of the run's logged scalars against step (``records``: the rows of its
  ``metrics.jsonl``); ``None`` if nothing was logged."""
  if not records:
    return None
  fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.2), squeeze=False)
  for ax, (title, keys) in zip(axes[0], CURVES):
    for key in keys:
      points = [(r['step'], r[key]) for r in records if key in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, marker='o' if len(points) < 30 else None, ms=3, label=key)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('step')
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  path = epath.Path(path)
  _save(fig, path, dpi=90)
  return path


def validation_panel(
  images: np.ndarray, gaze: np.ndarray, maps: dict[str, np.ndarray]
) -> np.ndarray:
  """An RGB uint8 ``(H, W, 3)`` picture for TensorBoard: one row per image, the image, the
  gaze heatmap over it, then for each sub-model each of ``maps`` (name -> ``(M, B, h, w)``)
  over the image."""
  n, m = len(images), next(iter(maps.values())).shape[0]
  cols = 2 + m * len(maps)
  fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n), squeeze=False)
  for r in range(n):
    img = _grey(images[r])
    panels = [('image', None), ('gaze', gaze[r])]
    panels += [(f'{name} {k + 1}', v[k, r]) for k in range(m) for name, v in maps.items()]
    for c, (title, heat) in enumerate(panels):
      ax = axes[r, c]
      ax.imshow(img, cmap='gray', vmin=0, vmax=1)
      if heat is not None:
        ax.imshow(
          heat, cmap='jet', alpha=0.5, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5)
        )
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(title, fontsize=7)
  fig.tight_layout()
  fig.canvas.draw()
  rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return rgb


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
