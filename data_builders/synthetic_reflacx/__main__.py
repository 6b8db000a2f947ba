r"""Writes a synthetic PhysioNet-format REFLACX + MIMIC-CXR-JPG tree.

  python -m data_builders.synthetic_reflacx --output_dir DIR [--phase_images 15,15,470] \
      [--seed 0] [--scale 0.5] [--readers 5] [--raw_gaze]
"""

from collections.abc import Sequence
import sys
import time

from absl import app
from absl import flags

from data_builders.synthetic_reflacx import generate

_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'manual_dir to write.', required=True)
_PHASES = flags.DEFINE_list(
  'phase_images', ['15', '15', '470'], 'Images of phases 1, 2 (every reader) and 3 (one reader).'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_SCALE = flags.DEFINE_float('scale', 0.5, 'Image size relative to real MIMIC (~3000x2500).')
_READERS = flags.DEFINE_integer('readers', 5, 'Simulated radiologists.')
_RAW_GAZE = flags.DEFINE_bool('raw_gaze', False, 'Also write every 1000 Hz gaze.csv.')


def main(argv: Sequence[str]) -> None:
  del argv
  if len(_PHASES.value) != 3:
    raise app.UsageError('--phase_images takes three counts: phases 1, 2 and 3')
  t0 = time.time()
  plans = generate.write_tree(
    _OUTPUT_DIR.value,
    tuple(int(v) for v in _PHASES.value),
    seed=_SEED.value,
    scale=_SCALE.value,
    num_readers=_READERS.value,
    raw_gaze=_RAW_GAZE.value,
  )
  readings = sum(len(p.reading_ids) for p in plans)
  print(f'{len(plans)} images, {readings} readings in {_OUTPUT_DIR.value}', file=sys.stderr)
  print(f'written in {time.time() - t0:.1f}s', file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
