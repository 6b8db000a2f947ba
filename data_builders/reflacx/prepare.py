"""Builds ``reflacx`` configs as ArrayRecord (no TensorFlow) and summarises them."""

import json
import os

import tensorflow_datasets as tfds

from data_builders.reflacx import reflacx_dataset_builder as reflacx_builder


def config_name(config: str, skip_invalid_rows: bool = False) -> str:
  """Name of a named config, or of the one derived from it by skipping invalid rows."""
  return config + ('_skip' if skip_invalid_rows else '')


def make_builder(
  data_dir: str | os.PathLike,
  config: str = '224',
  skip_invalid_rows: bool = False,
  num_workers: int | None = None,
) -> reflacx_builder.Reflacx:
  """The builder for a named config, or a derived one that skips invalid rows."""
  base = {c.name: c for c in reflacx_builder.Reflacx.BUILDER_CONFIGS}
  if config not in base:
    raise ValueError(f'unknown reflacx config {config!r}; choose one of {sorted(base)}')
  cfg = base[config]
  if skip_invalid_rows:
    cfg = reflacx_builder.ReflacxConfig(
      name=config_name(config, True),
      description=f'{cfg.description} (derived)',
      image_size=cfg.image_size,
      skip_invalid_rows=True,
    )
  return reflacx_builder.Reflacx(
    config=cfg, data_dir=data_dir, file_format='array_record', num_workers=num_workers
  )


def build(
  manual_dir: str | os.PathLike, data_dir: str | os.PathLike, **kwargs
) -> reflacx_builder.Reflacx:
  builder = make_builder(data_dir, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def summary(builder: tfds.core.DatasetBuilder) -> str:
  info = builder.info
  lines = [f'{info.full_name} at {builder.data_dir}']
  for name, split in info.splits.items():
    lines.append(f'  {name:<10} {split.num_examples:>5} images')
  meta = dict(info.metadata or {})
  for key in (
    'readings_per_split',
    'patients_per_split',
    'images_with_every_reader_gazing',
    'discarded_readings',
    'dropped_filtered_fixations',
    'image_format',
  ):
    lines.append(f'  {key}: {json.dumps(meta.get(key))}')
  skipped = meta.get('skipped_ids') or []
  lines.append(f'  skipped_ids ({len(skipped)}): {", ".join(skipped) if skipped else "none"}')
  return '\n'.join(lines)
