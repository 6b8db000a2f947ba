r"""Writes a synthetic PhysioNet-format EGD + MIMIC-CXR-JPG tree.

  python -m data_builders.synthetic_egd --output_dir DIR --num_images N --seed S \
      [--scale 1.0] [--shortcut train=0.9,validation=0.9,test=0] [--decoy] \
      [--reader realistic|evidence] [--readers 5] [--multi_reader_share 0.25]
"""

from collections.abc import Sequence
import sys
import time

from absl import app
from absl import flags

from data_builders.synthetic_egd import generate
from data_builders.synthetic_egd import readers

_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'manual_dir to write.', required=True)
_NUM_IMAGES = flags.DEFINE_integer('num_images', 60, 'Rows of master_sheet.csv.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_SCALE = flags.DEFINE_float(
  'scale',
  1.0,
  'Image size relative to real MIMIC (~3000x2500). Below ~0.35 the official '
  'formula truncates off-image fixations to pixel 0 instead of -1.',
)
_SHORTCUT = flags.DEFINE_string(
  'shortcut',
  '',
  'Per-split probability that a corner marker sits in its class corner, '
  'e.g. "train=0.9,validation=0.9,test=0"; splits not named get no marker.',
)
_RAW_GAZE = flags.DEFINE_bool('raw_gaze', True, 'Also write the 60 Hz eye_gaze.csv.')
_DECOY = flags.DEFINE_bool(
  'decoy',
  False,
  'The decoy twin of the tree the same flags write without it: every corner marker in a '
  "wrong class's corner, everything else the same.",
)


_READER = flags.DEFINE_enum(
  'reader',
  'realistic',
  list(readers.READER_KINDS),
  'The simulated radiologist: realistic (calibrated to REFLACX) or evidence (a perfect '
  'evidence mask).',
)
_READERS = flags.DEFINE_integer('readers', 5, 'Realistic readers (reader 0: fixations.csv).')
_MULTI = flags.DEFINE_float(
  'multi_reader_share', 0.25, 'Share of images every reader reads (synthetic_readers.csv).'
)


def parse_shortcut(text: str) -> dict[str, float]:
  out = {}
  for item in filter(None, text.split(',')):
    split, _, value = item.partition('=')
    if split not in ('train', 'validation', 'test') or not value:
      raise app.UsageError(
        f'--shortcut item {item!r}: expected SPLIT=PROB with SPLIT in train/validation/test'
      )
    p = float(value)
    if not 0.0 <= p <= 1.0:
      raise app.UsageError(f'--shortcut {split}={p}: a probability must be in [0, 1]')
    out[split] = p
  return out


def main(argv: Sequence[str]) -> None:
  del argv
  t0 = time.time()

  def progress(done: int, total: int):
    if done == total or done % max(1, total // 20) == 0:
      print(
        f'\r[synthetic_egd] images {done}/{total} ({time.time() - t0:.0f}s)',
        end='',
        file=sys.stderr,
        flush=True,
      )

  specs = generate.write_tree(
    _OUTPUT_DIR.value,
    _NUM_IMAGES.value,
    seed=_SEED.value,
    scale=_SCALE.value,
    shortcut=parse_shortcut(_SHORTCUT.value),
    raw_gaze=_RAW_GAZE.value,
    progress=progress,
    decoy=_DECOY.value,
    reader=_READER.value,
    num_readers=_READERS.value,
    multi_reader_share=_MULTI.value,
  )
  print(file=sys.stderr)
  counts = {s: sum(x.split == s for x in specs) for s in ('train', 'validation', 'test')}
  print(
    f'[synthetic_egd] wrote {len(specs)} images to {_OUTPUT_DIR.value} in '
    f'{time.time() - t0:.1f}s; images per split {counts}'
  )


if __name__ == '__main__':
  app.run(main)
