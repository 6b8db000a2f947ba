r"""Builds the ``mimic_cxr_egd`` or ``reflacx`` TFDS dataset as ArrayRecord files, without
TensorFlow.

  python -m data_builders.build --manual_dir DIR --data_dir DIR [--config 224] \
      [--gaze_sigma 150] [--skip_invalid_rows]
  python -m data_builders.build --dataset reflacx --manual_dir DIR --data_dir DIR [--config 224]

Prints a summary (examples and patients per split, dropped fixations, skipped ids).
"""

from collections.abc import Sequence
import sys
import time

from absl import app
from absl import flags

from data_builders.mimic_cxr_egd import prepare
from data_builders.reflacx import prepare as reflacx_prepare

_DATASET = flags.DEFINE_enum('dataset', 'mimic_cxr_egd', ['mimic_cxr_egd', 'reflacx'], 'Dataset.')
_MANUAL_DIR = flags.DEFINE_string(
  'manual_dir',
  None,
  'Folder with egd-cxr/ (or reflacx-xray-localization/) and mimic-cxr-jpg/.',
  required=True,
)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir to write.', required=True)
_CONFIG = flags.DEFINE_string('config', '224', 'Builder config name: 224, 128 or 64.')
_GAZE_SIGMA = flags.DEFINE_float(
  'gaze_sigma',
  None,
  'Override the heatmap sigma (original px); the config is then named <config>_sigma<value>.',
)
_SKIP = flags.DEFINE_bool('skip_invalid_rows', False, 'Drop bad rows instead of failing.')
_NUM_WORKERS = flags.DEFINE_integer('num_workers', None, 'Image decoding threads (0: none).')


def main(argv: Sequence[str]) -> None:
  del argv
  t0 = time.time()
  if _DATASET.value == 'reflacx':
    if _GAZE_SIGMA.value is not None:
      raise app.UsageError('--gaze_sigma is for mimic_cxr_egd; REFLACX heatmaps use 1 degree')
    builder = reflacx_prepare.build(
      _MANUAL_DIR.value,
      _DATA_DIR.value,
      config=_CONFIG.value,
      skip_invalid_rows=_SKIP.value,
      num_workers=_NUM_WORKERS.value,
    )
    print(reflacx_prepare.summary(builder))
    print(f'built in {time.time() - t0:.1f}s', file=sys.stderr)
    return
  builder = prepare.build(
    _MANUAL_DIR.value,
    _DATA_DIR.value,
    config=_CONFIG.value,
    gaze_sigma=_GAZE_SIGMA.value,
    skip_invalid_rows=_SKIP.value,
    num_workers=_NUM_WORKERS.value,
  )
  print(prepare.summary(builder))
  print(f'built in {time.time() - t0:.1f}s', file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
