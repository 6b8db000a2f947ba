"""The input pipeline: TFDS ArrayRecord -> grain -> per-process batches.

Training: every epoch is a seeded permutation of the split cut into global batches; each
process reads and preprocesses only its contiguous ``global_batch / process_count`` part of
each, so the global batches do not depend on the number of processes. Training batches are
a grain ``MapDataset`` indexed by step, so resuming at step ``s`` starts exactly where the
interrupted run was (the data position is the step). Reading runs in background threads
with prefetch. Evaluation: each process reads a strided share, padded to equal batches.

Batch dict (per process, ``b`` examples, S the builder's image size):
  ``image`` float32 ``(b, S, S, C)`` normalised; ``label`` int32 ``(b,)``;
  ``gaze`` float32 ``(b, S, S)`` summing to 1; ``fixation_map`` uint8 ``(b, S, S)``;
  ``mask`` bool ``(b,)`` (False on evaluation padding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import sys

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from data_builders.mimic_cxr_egd import prepare
from mimic_jax.data import staging

IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], np.float32)


def preprocess(example: dict, input_channels: int) -> dict:
  """One TFDS example -> model inputs. Grey images are scaled to [0, 1] and normalised with
  ImageNet statistics: replicated to 3 channels (pretrained-weight compatible) or kept as one
  channel with the mean of the three channels' statistics."""
  image = np.asarray(example['image'], np.float32) / 255.0
  if input_channels == 3:
    image = (np.repeat(image, 3, axis=-1) - IMAGENET_MEAN) / IMAGENET_STD
  else:
    image = (image - IMAGENET_MEAN.mean()) / IMAGENET_STD.mean()
  return {
    'image': image,
    'label': np.int32(example['label']),
    'gaze': np.asarray(example['gaze'], np.float32),
    'fixation_map': np.asarray(example['fixation_map'], np.uint8),
    'mask': np.bool_(True),
  }


@dataclasses.dataclass
class SplitInfo:
  """Sizes that the training loop needs."""

  num_examples: int
  steps_per_epoch: int


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """``(S, S, C)`` of the model inputs: the build's image size and ``model.input_channels``."""
  size = prepare.image_size(config.data.builder_config)
  return (size, size, config.model.input_channels)


def data_source(data: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
  """Random-access source of one split of the configured build (``mimic_cxr_egd`` or
  ``reflacx``)."""
  name = f'{staging.dataset_name(data)}/{staging.build_name(data)}'
  return tfds.data_source(name, split=split, data_dir=staging.local_data_dir(data))


class _StepIndices:
  """Step -> the example indices this process reads for that step's global batch.

  Epoch ``e`` is the permutation ``default_rng((seed, e))`` of the split; global batch ``s``
  of an epoch is its ``s``-th run of ``global_batch`` indices (the remainder is dropped), and
  process ``p`` of ``P`` reads the ``p``-th contiguous ``global_batch / P`` of them. The global
  batches are therefore the same for any number of processes, and the process-local parts
  concatenate in process order, as ``jax.make_array_from_process_local_data`` lays them out.
  """

  def __init__(
    self, num_examples: int, global_batch: int, seed: int, process_index: int, process_count: int
  ):
    self._n, self._g, self._seed = num_examples, global_batch, seed
    self._local = global_batch // process_count
    self._offset = process_index * self._local
    self.steps_per_epoch = num_examples // global_batch

  def __len__(self) -> int:
    return sys.maxsize  # endless: one entry per step

  def __getitem__(self, step: int) -> np.ndarray:
    epoch, within = divmod(int(step), self.steps_per_epoch)
    order = np.random.default_rng((self._seed, epoch)).permutation(self._n)
    start = within * self._g + self._offset
    return order[start : start + self._local]


def train_dataset(
  source: Sequence[dict],
  *,
  global_batch: int,
  input_channels: int,
  seed: int,
  process_index: int | None = None,
  process_count: int | None = None,
) -> tuple[grain.MapDataset, SplitInfo]:
  """Endless, epoch-wise reshuffled training batches of this process, indexed by step.

  Each process reads only its ``global_batch / process_count`` examples of every global
  batch (see :class:`_StepIndices`).
  """
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  if global_batch % pc:
    raise ValueError(f'batch_size={global_batch} is not divisible by the process count {pc}')
  if len(source) < global_batch:
    raise ValueError(
      f'the training split has {len(source)} examples, fewer than one batch '
      f'of {global_batch}; lower config.batch_size'
    )
  indices = _StepIndices(len(source), global_batch, seed, pi, pc)

  def read(idx: np.ndarray) -> dict:
    examples = [preprocess(source[int(i)], input_channels) for i in idx]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}

  ds = grain.MapDataset.source(indices).map(read)
  return ds, SplitInfo(num_examples=len(source), steps_per_epoch=indices.steps_per_epoch)


def iterate_from(
  ds: grain.MapDataset, start_step: int, *, threads: int = 4, prefetch: int = 8
) -> Iterator[dict]:
  """Iterator over ``ds[start_step:]`` with threaded reading and prefetch."""
  return iter(
    ds[start_step:].to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
    )
  )


def eval_batches(
  source: Sequence[dict],
  *,
  global_batch: int,
  input_channels: int,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict]:
  """All examples of a split, in order, in batches padded to full size (``mask`` False on
  padding). Every process yields the same number of batches."""
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  local_batch = global_batch // pc
  n = len(source)
  per_process = -(-n // pc)
  n_batches = -(-per_process // local_batch)
  idx = list(range(pi, n, pc))
  for b in range(n_batches):
    chunk = [
      preprocess(source[i], input_channels) for i in idx[b * local_batch : (b + 1) * local_batch]
    ]
    pad = local_batch - len(chunk)
    if pad:
      template = chunk[0] if chunk else preprocess(source[0], input_channels)
      filler = {k: np.zeros_like(v) for k, v in template.items()}
      chunk += [filler] * pad
    yield {k: np.stack([c[k] for c in chunk]) for k in chunk[0]}
