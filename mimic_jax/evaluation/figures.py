"""Figures of the evaluation report (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
import os
import textwrap

import matplotlib

matplotlib.use('Agg')
from etils import epath
import matplotlib.pyplot as plt
import numpy as np

from mimic_jax.evaluation import report


def _grey(image: np.ndarray) -> np.ndarray:
  g = image.mean(axis=-1) if image.ndim == 3 else image
  return (g - g.min()) / max(g.max() - g.min(), 1e-12)


# Colour map of explanation overlays (perceptually uniform, dark = 0).
HEAT_CMAP = 'inferno'


def gallery_rows(
  per_image_kld: np.ndarray, labels: np.ndarray, seed: int = 0, sample: int = 3
) -> list[tuple[int, list[tuple[int, str]]]]:
  """The gallery's images, by a stated rule: per class, a seeded random sample of ``sample``
  images and the worst and best image by the ensemble map's KLD (NaN KLDs left out). Returns
  ``[(class, [(index, why), ...]), ...]``."""
  rng = np.random.default_rng(seed)
  rows = []
  for k in np.unique(labels):
    idx = np.flatnonzero(labels == k)
    chosen = [(int(i), 'random') for i in rng.permutation(idx)[: min(sample, idx.size)]]
    finite = idx[np.isfinite(per_image_kld[idx])]
    if finite.size:
      order = finite[np.argsort(per_image_kld[finite], kind='stable')]
      for i, why in ((order[-1], 'worst KLD'), (order[0], 'best KLD')):
        if all(int(i) != c for c, _ in chosen):
          chosen.append((int(i), why))
    rows.append((int(k), chosen))
  return rows


def gallery(
  data: dict,
  class_names: Sequence[str],
  out_dir: str | os.PathLike,
  per_image: dict,
  explainer: str = 'grad_cam',
  seed: int = 0,
) -> list:
  """One figure per class (PNG and SVG), rows chosen by :func:`gallery_rows` on
  ``explainer``'s per-image KLD (``per_image``: ``{explainer: {'kld': [...], 'nss': [...]}}``).
  Columns: the image titled with the true class, the prediction and its probability; the gaze
  heatmap with the fixated pixels; each explainer's ensemble map over the image, titled with
  that image's KLD and NSS, on one colour scale per column (colour bars below)."""
  from scipy import special

  paths = []
  explainers = list(data['maps'])
  probabilities = special.softmax(np.asarray(data['scores'], np.float64), axis=-1)
  kld = np.asarray(per_image[explainer]['kld'], np.float64)
  for k, chosen in gallery_rows(kld, np.asarray(data['label']), seed):
    name = class_names[k]
    cols = 2 + len(explainers)
    fig, axes = plt.subplots(
      len(chosen),
      cols,
      figsize=(2.6 * cols, 2.9 * len(chosen) + 1.0),
      squeeze=False,
      layout='constrained',
    )
    maps = {e: data['maps'][e].mean(axis=0) for e in explainers}
    scale = {e: float(np.nanmax(maps[e][[i for i, _ in chosen]])) or 1.0 for e in explainers}
    scale['gaze'] = float(np.max(data['gaze'][[i for i, _ in chosen]])) or 1.0
    images = {}
    for r, (i, why) in enumerate(chosen):
      img = _grey(data['image'][i])
      pred = int(np.argmax(probabilities[i]))
      panels = [
        (
          f'{why}: true {name}\npred. {class_names[pred]} (p={probabilities[i, pred]:.2f})',
          None,
          '',
        ),
        ('gaze heatmap + fixations', data['gaze'][i], 'gaze'),
      ]
      for e in explainers:
        m = per_image[e]
        title = f'{e}\nKLD {m["kld"][i]:.2f}, NSS {m["nss"][i]:.2f}'
        panels.append((title, maps[e][i], e))
      for c, (title, heat, key) in enumerate(panels):
        ax = axes[r, c]
        ax.imshow(img, cmap='gray', vmin=0, vmax=1)
        if heat is not None:
          images[key] = ax.imshow(heat, cmap=HEAT_CMAP, alpha=0.55, vmin=0, vmax=scale[key])
        if key == 'gaze':
          ys, xs = np.nonzero(data['fixation_map'][i])
          ax.scatter(xs, ys, s=6, c='white', edgecolors='black', linewidths=0.4)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7.5)
    for c, key in enumerate(['', 'gaze', *explainers]):
      label = 'gaze density' if key == 'gaze' else report.EXPLAINERS.get(key, key)
      bar = fig.colorbar(
        images[key or 'gaze'], ax=axes[:, c], orientation='horizontal', fraction=0.04, pad=0.02
      )
      bar.set_label(textwrap.fill(label, 30), fontsize=6.5)
      bar.ax.tick_params(labelsize=6)
      bar.ax.set_visible(bool(key))  # the image column keeps the others' size
    fig.suptitle(
      f'true class {name}: {sum(w == "random" for _, w in chosen)} random image(s) (seed '
      f'{seed}) and the worst and best by {explainer} KLD',
      fontsize=9,
    )
    path = epath.Path(out_dir) / f'gallery_{name}.png'
    _save(fig, path, dpi=150, vector=True)
    paths.append(path)
  return paths


def explanation_figure(
  grey: np.ndarray,
  original_size: tuple[int, int],
  member_maps: np.ndarray,
  *,
  title: str,
  explainer: str,
  member_titles: Sequence[str],
) -> matplotlib.figure.Figure:
  """The figure ``explain`` writes for one image and explainer, in the manner of captum's
  ``visualize_image_attr_multiple``: the image at its original aspect ratio, the ensemble's map
  over it, and each sub-model's, on one colour scale with a colour bar.

  Args:
    grey: ``(S, S)`` the image as the model saw it (0-255 or 0-1).
    original_size: ``(H, W)`` of the original image: the panels are drawn at its aspect ratio.
    member_maps: ``(M, S, S)`` the sub-models' maps; the ensemble's is their mean.
    title: the figure's title (the image, the class explained and its probability).
    explainer: which explainer (its sign mode is stated under the colour bar).
    member_titles: a title per sub-model (e.g. its probability of the class).
  """
  height, width = original_size
  aspect = height / width
  maps = [('ensemble', member_maps.mean(axis=0))]
  if len(member_maps) > 1:
    maps += list(zip(member_titles, member_maps))
  cols = 1 + len(maps)
  panel_w = 2.6
  fig, axes = plt.subplots(
    1, cols, figsize=(panel_w * cols, panel_w * aspect + 1.3), squeeze=False, layout='constrained'
  )
  extent = (0, width, height, 0)
  img = _grey(grey)
  vmax = float(np.max(member_maps)) or 1.0
  axes[0, 0].imshow(img, cmap='gray', vmin=0, vmax=1, extent=extent)
  axes[0, 0].set_title('original', fontsize=8)
  shown = None
  for ax, (name, heat) in zip(axes[0, 1:], maps):
    ax.imshow(img, cmap='gray', vmin=0, vmax=1, extent=extent)
    shown = ax.imshow(heat, cmap=HEAT_CMAP, alpha=0.55, vmin=0, vmax=vmax, extent=extent)
    ax.set_title(name, fontsize=8)
  for ax in axes[0]:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect('equal')
  bar = fig.colorbar(shown, ax=list(axes[0, 1:]), orientation='horizontal', fraction=0.05, pad=0.04)
  bar.set_label(
    f'{report.EXPLAINERS.get(explainer, explainer)} (one scale for all panels)', fontsize=7
  )
  bar.ax.tick_params(labelsize=6)
  fig.suptitle(title, fontsize=9)
  return fig


# Panels of the training-curves figure: (title, metrics.jsonl keys drawn in it).
CURVES = (
  ('loss', ('train/loss', 'train/ce', 'train/penalty')),
  ('accuracy', ('train/accuracy', 'validation/accuracy')),
  ('validation Grad-CAM KLD to gaze (lower is better)', ('validation/kld',)),
  ('validation Grad-CAM NSS (higher is better)', ('validation/nss',)),
  ("mimic's discriminator cross-entropy (chance: ln M)", ('train/disc_ce',)),
)


def training_curves(records: Sequence[dict], path: str | os.PathLike) -> epath.Path | None:
  """A PNG of the run's logged scalars against step (``records``: the rows of its
  ``metrics.jsonl``); ``None`` if nothing was logged."""
  if not records:
    return None
  logged = {k for r in records for k in r}
  curves = [(title, keys) for title, keys in CURVES if logged & set(keys)]
  fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
  for ax, (title, keys) in zip(axes[0], curves):
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
  _save(fig, path, dpi=150, vector=True)
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


def _save(fig: matplotlib.figure.Figure, path: epath.Path, dpi: int, vector: bool = False) -> None:
  """PNG (and, with ``vector``, an SVG beside it) through epath, so that gs:// works."""
  with path.open('wb') as f:
    fig.savefig(f, format='png', dpi=dpi)
  if vector:
    with path.with_suffix('.svg').open('wb') as f:
      fig.savefig(f, format='svg')
  plt.close(fig)


def save_figure(fig: matplotlib.figure.Figure, path: str | os.PathLike, dpi: int = 150) -> None:
  """``fig`` as a PNG at ``path`` and an SVG beside it."""
  _save(fig, epath.Path(path), dpi, vector=True)


def comparison_chart(
  names: Sequence[str],
  rows: dict,
  path: str | os.PathLike,
  what: str = '',
  metrics: Sequence[str] = ('information_gain', 'kld', 'nss'),
) -> None:
  """Bar charts of ``metrics`` (means with 95% intervals) for the compared runs (reference
  rows, named ``reference: ...``, in grey); ``what`` says what the bars are (the explainer, the
  split, over how many images or seeds), shown as the figure's title."""
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.9), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    shown = [n for n in names if metric in rows[n] and np.isfinite(rows[n][metric]['mean'])]
    means = [rows[n][metric]['mean'] for n in shown]
    lo = [max(0.0, rows[n][metric]['mean'] - rows[n][metric]['ci95'][0]) for n in shown]
    hi = [max(0.0, rows[n][metric]['ci95'][1] - rows[n][metric]['mean']) for n in shown]
    colours = ['#aaaaaa' if n.startswith('reference:') else '#3a7bd5' for n in shown]
    ax.bar(range(len(shown)), means, yerr=[lo, hi], capsize=4, color=colours)
    ax.set_xticks(range(len(shown)), shown, rotation=30, ha='right', fontsize=7)
    better = 'lower' if metric == 'kld' else 'higher'
    label = {'information_gain': 'IG over the prior (bits)'}.get(metric, metric.upper())
    ax.set_title(f'{label} ({better} is better)', fontsize=9)
    ax.axhline(0, color='black', linewidth=0.6)
  fig.suptitle(what or 'means with 95% intervals', fontsize=9)
  fig.tight_layout()
  _save(fig, epath.Path(path), dpi=150, vector=True)
