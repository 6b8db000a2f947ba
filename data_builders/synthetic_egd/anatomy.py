"""Chest-X-ray-like images with localised class evidence, and where a radiologist looks.

Everything is drawn in image fractions ``(u, v)`` = (column / W, row / H) on a coarse grid and
upsampled, so a 3000 x 2500 image costs about as much as a 512 px one. Intensities are in
[0, 1] before conversion to uint8. In a PA view the patient's left (heart) is on the image's
right.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

NORMAL, CHF, PNEUMONIA = 0, 1, 2
# The shortcut marker: a bright rectangle of these half-sides (u, v), centred per class at
# CORNERS (top-left Normal, top-right CHF, bottom-right pneumonia), outside every gazed region.
# Large enough that a small CNN picks it up: the baseline of the main job relies on it.
MARKER_HALF_SIDES = (0.09, 0.075)
CORNERS = ((0.1, 0.085), (0.9, 0.085), (0.9, 0.915))
_RENDER_SIDE = 512


@dataclasses.dataclass(frozen=True)
class Region:
  """An elliptical Gaussian region of interest in image fractions, with a gaze weight."""

  name: str
  u: float
  v: float
  su: float
  sv: float
  weight: float
  evidence: bool = False  # the class's finding (what an abnormality ellipse would outline)


@dataclasses.dataclass
class Case:
  """One synthetic image: the pixels, and the regions a radiologist would study."""

  pixels: np.ndarray  # uint8 (H, W)
  regions: list[Region]
  marker_corner: int | None  # index into CORNERS, or None without a shortcut marker
  boxes: dict[str, tuple[float, float, float, float]]  # name -> (x1, x2, y1, y2) pixels


def _ellipse(
  uu: np.ndarray, vv: np.ndarray, u: float, v: float, ru: float, rv: float, soft: float = 0.02
):
  d = np.sqrt(((uu - u) / ru) ** 2 + ((vv - v) / rv) ** 2)
  return 1.0 / (1.0 + np.exp((d - 1.0) / soft * min(ru, rv)))


def _blob(uu: np.ndarray, vv: np.ndarray, u: float, v: float, su: float, sv: float):
  return np.exp(-0.5 * (((uu - u) / su) ** 2 + ((vv - v) / sv) ** 2))


def render_case(
  label: int, height: int, width: int, rng: np.random.Generator, marker_corner: int | None
) -> Case:
  """Draws one H x W chest image of class ``label`` (0 Normal, 1 CHF, 2 pneumonia)."""
  scale = _RENDER_SIDE / max(height, width)
  rh, rw = max(8, round(height * scale)), max(8, round(width * scale))
  vv, uu = np.meshgrid((np.arange(rh) + 0.5) / rh, (np.arange(rw) + 0.5) / rw, indexing='ij')
  jitter = lambda s: rng.normal(0.0, s)

  img = 0.04 + 0.42 * _ellipse(uu, vv, 0.5 + jitter(0.01), 0.56, 0.46, 0.62, soft=0.03)
  lung_v, lung_rv = 0.45 + jitter(0.015), 0.27 + jitter(0.01)
  lungs = {
    'right lung': (0.32 + jitter(0.01), lung_v, 0.14 + jitter(0.005), lung_rv),
    'left lung': (0.68 + jitter(0.01), lung_v, 0.14 + jitter(0.005), lung_rv),
  }
  lung_mask = np.zeros_like(img)
  for u, v, ru, rv in lungs.values():
    lung_mask = np.maximum(lung_mask, _ellipse(uu, vv, u, v, ru, rv, soft=0.015))
  img -= 0.28 * lung_mask
  # Ribs: bright arcs across the lungs.
  for k in range(9):
    v0 = 0.2 + 0.065 * k + jitter(0.004)
    arc = v0 + 0.08 * (uu - 0.5) ** 2 * 4
    img += 0.1 * np.exp(-0.5 * ((vv - arc) / 0.009) ** 2) * lung_mask
  img += 0.2 * _ellipse(uu, vv, 0.5, 0.5, 0.035, 0.5, soft=0.01)  # spine / mediastinum
  for side in (-1, 1):  # clavicles
    img += (
      0.15
      * np.exp(-0.5 * ((vv - 0.17 - 0.06 * np.abs(uu - 0.5)) / 0.01) ** 2)
      * (np.abs(uu - 0.5 - side * 0.17) < 0.17)
    )
  heart_scale = 1.45 + jitter(0.05) if label == CHF else 1.0 + jitter(0.03)
  heart = (0.56 + 0.02 * (heart_scale - 1), 0.63, 0.12 * heart_scale, 0.1 * heart_scale)
  img += 0.3 * _ellipse(uu, vv, *heart, soft=0.015)
  img += 0.12 * (vv > lung_v + lung_rv - 0.03) * _ellipse(uu, vv, 0.5, 0.56, 0.44, 0.6)

  regions = [Region(n, u, v, ru / 2, rv / 2, 1.0) for n, (u, v, ru, rv) in lungs.items()]
  regions.append(Region('cardiac silhouette', heart[0], heart[1], heart[2] / 2, heart[3] / 2, 0.6))
  if label == CHF:
    for n, (u, v, _, _) in lungs.items():  # bilateral perihilar haze
      hu = u + (0.06 if u < 0.5 else -0.06)
      img += 0.22 * _blob(uu, vv, hu, v + 0.03, 0.08, 0.12) * lung_mask
      regions.append(Region(f'{n} haze', hu, v + 0.03, 0.06, 0.08, 1.6, evidence=True))
    regions.append(
      Region('enlarged heart', heart[0], heart[1], heart[2] / 2, heart[3] / 2, 2.5, evidence=True)
    )
  elif label == PNEUMONIA:
    u, v, ru, rv = list(lungs.values())[rng.integers(2)]
    cu, cv = u + rng.uniform(-0.5, 0.5) * ru, v + rng.uniform(-0.45, 0.55) * rv
    radius = rng.uniform(0.045, 0.075)
    img += 0.38 * _blob(uu, vv, cu, cv, radius, radius * 1.2) * lung_mask
    regions.append(Region('consolidation', cu, cv, radius * 0.8, radius, 5.0, evidence=True))
  if marker_corner is not None:
    mu, mv = CORNERS[marker_corner]
    hu, hv = MARKER_HALF_SIDES
    img = np.where((np.abs(uu - mu) < hu) & (np.abs(vv - mv) < hv), 0.95, img)
  img += rng.normal(0.0, 0.025, img.shape)
  img = np.clip(img, 0.0, 1.0)
  small = Image.fromarray(np.round(img * 255).astype(np.uint8), mode='L')
  pixels = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))
  boxes = {
    n: ((u - ru) * width, (u + ru) * width, (v - rv) * height, (v + rv) * height)
    for n, (u, v, ru, rv) in list(lungs.items()) + [('cardiac silhouette', heart)]
  }
  return Case(pixels=pixels, regions=regions, marker_corner=marker_corner, boxes=boxes)


def sample_gaze_targets(regions: list[Region], n: int, rng: np.random.Generator) -> np.ndarray:
  """``(n, 2)`` fixation targets (u, v) of a simulated radiologist, in image fractions.

  Each fixation picks a region with probability proportional to its weight and lands at a
  Gaussian offset from its centre; the shortcut marker is never a region.
  """
  weights = np.asarray([r.weight for r in regions])
  picks = rng.choice(len(regions), size=n, p=weights / weights.sum())
  out = np.empty((n, 2))
  for i, k in enumerate(picks):
    r = regions[k]
    out[i] = (r.u + rng.normal(0, r.su), r.v + rng.normal(0, r.sv))
  return np.clip(out, 0.01, 0.99)
