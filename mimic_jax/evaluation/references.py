"""Reference maps: the scores a trivial answer, the centre bias and another human reach.

Every evaluation scores these beside the models' maps, with the same metrics, images and
bootstrap, so that a model's numbers can be read against them:

- ``uniform``: the same value at every pixel (what a map that says nothing scores);
- ``prior``: the mean gaze heatmap of the training split, one map for every image (the centre
  bias; Kümmerer et al., PNAS 2015). It is computed from training-split maps only;
- ``reader``: where the data holds several readings of an image, each reader's heatmap scored
  against the mean heatmap (and the fixations) of the other readers, averaged over the held-out
  readers (the REFLACX inter-observer protocol, Bigolin Lanfredi et al. 2021): the human
  ceiling. Absent where every image has one reading (EGD).

A reference is one entry of :data:`REFERENCES`: a function of the evaluated data that returns
its trials (maps to score, each against a gaze heatmap and fixation map), or ``None`` where the
data cannot give it. The scores of an image are the mean over its trials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Trial:
  """Maps to score, each against its gaze heatmap and fixation map (all ``(n, S, S)``), for
  the evaluated images ``images`` (indices; ``None``: all of them, in order)."""

  maps: np.ndarray
  gaze: np.ndarray
  fixation_map: np.ndarray
  images: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Context:
  """What references are computed from.

  Attributes:
    gaze: ``(N, S, S)`` the evaluated images' gaze heatmaps.
    fixation_map: ``(N, S, S)`` their fixation maps (non-zero: fixated).
    prior: ``(S, S)`` the mean training-split gaze heatmap.
    reader_gaze: ``(n, R, S, S)`` the heatmap of each of R readers of the n images that
      several readers read, or ``None``.
    reader_fixations: ``(n, R, S, S)`` their fixation maps, or ``None``.
    reader_images: ``(n,)`` which evaluated images those are (default: all N).
  """

  gaze: np.ndarray
  fixation_map: np.ndarray
  prior: np.ndarray
  reader_gaze: np.ndarray | None = None
  reader_fixations: np.ndarray | None = None
  reader_images: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Reference:
  name: str
  description: str
  trials: Callable[[Context], list[Trial] | None]


def _uniform(ctx: Context) -> list[Trial]:
  return [Trial(np.ones_like(ctx.gaze, np.float64), ctx.gaze, ctx.fixation_map)]


def _prior(ctx: Context) -> list[Trial]:
  maps = np.broadcast_to(np.asarray(ctx.prior, np.float64), ctx.gaze.shape)
  return [Trial(maps, ctx.gaze, ctx.fixation_map)]


def leave_one_reader_out(
  reader_gaze: np.ndarray, reader_fixations: np.ndarray, images: np.ndarray | None = None
) -> list[Trial]:
  """One trial per reader r of ``(n, R, S, S)`` readings (of the evaluated ``images``):
  reader r's heatmap against the mean heatmap and the union of the fixations of the other
  R - 1 readers."""
  num_readers = reader_gaze.shape[1]
  if num_readers < 2:
    raise ValueError(f'the reader ceiling needs at least 2 readers per image, not {num_readers}')
  trials = []
  for r in range(num_readers):
    others = [k for k in range(num_readers) if k != r]
    trials.append(
      Trial(
        maps=np.asarray(reader_gaze[:, r], np.float64),
        gaze=np.asarray(reader_gaze[:, others], np.float64).mean(axis=1),
        fixation_map=(np.asarray(reader_fixations[:, others]) != 0).any(axis=1),
        images=images,
      )
    )
  return trials


def every_reader(discarded: Sequence[np.ndarray]) -> list[int]:
  """Indices of the images read by the most readers (at least two), every reading with eye
  tracking (``discarded``: per image, a bool per reading): the images the ceiling uses."""
  most = max((len(d) for d in discarded), default=0)
  return [i for i, d in enumerate(discarded) if most > 1 and len(d) == most and not np.any(d)]


def _reader(ctx: Context) -> list[Trial] | None:
  if ctx.reader_gaze is None or ctx.reader_gaze.shape[1] < 2:
    return None
  return leave_one_reader_out(ctx.reader_gaze, ctx.reader_fixations, ctx.reader_images)


REFERENCES = {
  r.name: r
  for r in (
    Reference('uniform', 'the same value at every pixel', _uniform),
    Reference('prior', 'the mean training-split gaze heatmap (centre bias)', _prior),
    Reference('reader', 'each reader against the mean of the other readers', _reader),
  )
}
