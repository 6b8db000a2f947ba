"""TFDS ArrayRecord -> grain -> device batches.

Each process reads its own strided shard of a split (``process_index::process_count``),
shuffles it with a seed, differently every epoch, preprocesses, and batches
``global_batch / process_count`` examples. Training batches are a grain ``MapDataset``
indexed by step, so resuming at step ``s`` starts exactly where the interrupted run was
(the data position is the step). Reading runs in background threads with prefetch.

Batch dict (per process, ``b`` examples, S the builder's image size):
  ``image`` float32 ``(b, S, S, C)`` normalised; ``label`` int32 ``(b,)``;
  ``gaze`` float32 ``(b, S, S)`` summing to 1; ``fixation_map`` uint8 ``(b, S, S)``;
  ``mask`` bool ``(b,)`` (False on evaluation padding).
"""

from __future__ import annotations

import dataclasses

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from data_builders.mimic_cxr_egd import prepare

IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], np.float32)


def preprocess(example: dict, input_channels: int) -> dict:
  """One TFDS example -> model inputs. Grey images are scaled to [0, 1] and normalised with
  ImageNet statistics: replicated to 3 channels (pretrained-weight compatible) or kept as one
  channel with the mean of the three channels' statistics."""
  image = np.asarray(example['image'], np.float32) / 255.0
  if input_channels == 3:
    image = (np.repeat(image, 3, axis=-1) - IMAGENET_MEAN) / IMAGENET_STD
  elif input_channels == 1:
    image = (image - IMAGENET_MEAN.mean()) / IMAGENET_STD.mean()
  else:
    raise ValueError(f'config.model.input_channels={input_channels}; use 1 or 3')
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


def data_source(data: ml_collections.ConfigDict, split: str):
  """Random-access source of one split of the configured ``mimic_cxr_egd`` build."""
  name = f'mimic_cxr_egd/{prepare.config_name(data.builder_config, data.get("gaze_sigma"))}'
  return tfds.data_source(name, split=split, data_dir=data.data_dir)


def train_dataset(source, *, global_batch: int, input_channels: int, seed: int,
                  process_index: int | None = None, process_count: int | None = None,
                  ) -> tuple[grain.MapDataset, SplitInfo]:
  """Infinite, epoch-wise reshuffled training batches of this process, indexed by step."""
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  if global_batch % pc:
    raise ValueError(f'batch_size={global_batch} is not divisible by the process count {pc}')
  local_batch = global_batch // pc
  ds = grain.MapDataset.source(source)[pi::pc]
  steps = len(ds) // local_batch
  if steps == 0:
    raise ValueError(f'the training split has {len(ds)} examples per process, fewer than one '
                     f'batch of {local_batch}; lower config.batch_size')
  ds = (ds.shuffle(seed=seed).map(lambda ex: preprocess(ex, input_channels))
        .batch(local_batch, drop_remainder=True).repeat(None))
  return ds, SplitInfo(num_examples=len(source), steps_per_epoch=steps)


def iterate_from(ds: grain.MapDataset, start_step: int, *, threads: int = 4,
                 prefetch: int = 8):
  """Iterator over ``ds[start_step:]`` with threaded reading and prefetch."""
  return iter(ds[start_step:].to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)))


def eval_batches(source, *, global_batch: int, input_channels: int,
                 process_index: int | None = None, process_count: int | None = None):
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
    chunk = [preprocess(source[i], input_channels) for i in idx[b * local_batch:(b + 1) * local_batch]]
    pad = local_batch - len(chunk)
    if pad:
      template = chunk[0] if chunk else preprocess(source[0], input_channels)
      filler = {k: np.zeros_like(v) for k, v in template.items()}
      chunk += [filler] * pad
    yield {k: np.stack([c[k] for c in chunk]) for k in chunk[0]}
