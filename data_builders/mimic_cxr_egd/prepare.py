"""Builds ``mimic_cxr_egd`` configs as ArrayRecord (no TensorFlow) and summarises them."""

import json
import os

import tensorflow_datasets as tfds

from data_builders.mimic_cxr_egd import mimic_cxr_egd_dataset_builder as egd_builder


def config_name(
  config: str, gaze_sigma: float | None = None, skip_invalid_rows: bool = False
) -> str:
  """Name of a named config, or of one derived from it by a sigma or skip override."""
  return (
    config
    + (f'_sigma{gaze_sigma:g}' if gaze_sigma is not None else '')
    + ('_skip' if skip_invalid_rows else '')
  )


def image_size(config: str) -> int:
  """The image side of a named builder config, pixels."""
  return {c.name: c.image_size for c in egd_builder.MimicCxrEgd.BUILDER_CONFIGS}[config]


def make_builder(
  manual_dir: str | os.PathLike,
  data_dir: str | os.PathLike,
  config: str = '224',
  gaze_sigma: float | None = None,
  skip_invalid_rows: bool = False,
  num_workers: int | None = None,
) -> egd_builder.MimicCxrEgd:
  """The builder for a named config, or a derived one for a sigma / skip override."""
  base = {c.name: c for c in egd_builder.MimicCxrEgd.BUILDER_CONFIGS}
  if config not in base:
    raise ValueError(f'unknown config {config!r}; choose one of {sorted(base)}')
  cfg = base[config]
  if gaze_sigma is not None or skip_invalid_rows:
    sigma = cfg.gaze_sigma if gaze_sigma is None else gaze_sigma
    name = config_name(config, gaze_sigma, skip_invalid_rows)
    cfg = egd_builder.EgdConfig(
      name=name,
      description=f'{cfg.description} (derived)',
      image_size=cfg.image_size,
      gaze_sigma=sigma,
      skip_invalid_rows=skip_invalid_rows,
    )
  del manual_dir  # passed to download_and_prepare
  return egd_builder.MimicCxrEgd(
    config=cfg, data_dir=data_dir, file_format='array_record', num_workers=num_workers
  )


def build(
  manual_dir: str | os.PathLike, data_dir: str | os.PathLike, **kwargs
) -> egd_builder.MimicCxrEgd:
  builder = make_builder(manual_dir, data_dir, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def summary(builder: tfds.core.DatasetBuilder) -> str:
  info = builder.info
  lines = [f'{info.full_name} at {builder.data_dir}']
  for name, split in info.splits.items():
    lines.append(f'  {name:<10} {split.num_examples:>5} examples')
  meta = dict(info.metadata or {})
  for key in (
    'patients_per_split',
    'dropped_calibration_fixations',
    'dropped_off_image_fixations',
    'dropped_duplicate_fixations',
    'image_format',
  ):
    lines.append(f'  {key}: {json.dumps(meta.get(key))}')
  skipped = meta.get('skipped_ids') or []
  lines.append(f'  skipped_ids ({len(skipped)}): {", ".join(skipped) if skipped else "none"}')
  return '\n'.join(lines)
