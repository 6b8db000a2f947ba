r"""Packing rate of the reflacx builder on a full-size synthetic REFLACX tree.

  python benchmarks/pack_reflacx.py --phase_images 5,5,100 --config 224 [--workdir /tmp/pack]

Writes a synthetic REFLACX tree at real MIMIC sizes (about 3000 x 2500 JPGs, 120 fixations
per reading), builds it, and reports readings/s and the time extrapolated to REFLACX's 3,052
readings. Also times one reading's heatmap made at the grid size (separable) against the
full-resolution official map area-resized, and checks they agree.
"""

from collections.abc import Sequence
import json
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from data_builders.mimic_cxr_egd import gaze_maps
from data_builders.reflacx import heatmap
from data_builders.reflacx import prepare
from data_builders.reflacx import reflacx_format as fmt
from data_builders.synthetic_reflacx import generate

_PHASES = flags.DEFINE_list('phase_images', ['5', '5', '100'], 'Images of phases 1, 2, 3.')
_CONFIG = flags.DEFINE_string('config', '224', 'Builder config.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Scratch folder (default: a temp dir).')


def main(argv: Sequence[str]) -> None:
  del argv
  work = _WORKDIR.value or tempfile.mkdtemp(prefix='pack_reflacx_')
  manual, data_dir = os.path.join(work, 'manual'), os.path.join(work, 'tfds')
  shutil.rmtree(work, ignore_errors=True)
  t0 = time.time()
  plans = generate.write_tree(manual, tuple(int(v) for v in _PHASES.value), scale=1.0)
  generate_s = time.time() - t0
  readings = sum(len(p.reading_ids) for p in plans)
  t0 = time.time()
  prepare.build(manual, data_dir, config=_CONFIG.value, num_workers=2)
  build_s = time.time() - t0
  p = next(p for p in plans if p.phase == 3)
  path = os.path.join(manual, *generate.REFLACX_DIR, 'main_data', p.reading_ids[0], 'fixations.csv')
  fix = fmt.read_fixations(path)
  size = int(_CONFIG.value)
  t0 = time.time()
  fast = heatmap.resized_heatmap(fix, p.width, p.height, size)
  fast_s = time.time() - t0
  t0 = time.time()
  full = heatmap.heatmap(fix, p.width, p.height)
  rows = gaze_maps.area_resize_matrix(p.height, size)
  cols = gaze_maps.area_resize_matrix(p.width, size)
  slow = rows @ full @ cols.T
  slow_s = time.time() - t0
  print(
    json.dumps(
      {
        'images': len(plans),
        'readings': readings,
        'generate_s': round(generate_s, 1),
        'build_s': round(build_s, 1),
        'readings_per_s': round(readings / build_s, 2),
        'reflacx_3052_readings_s': round(3052 / (readings / build_s)),
        'one_heatmap_grid_s': round(fast_s, 3),
        'one_heatmap_full_then_resize_s': round(slow_s, 3),
        'max_abs_difference': float(np.abs(fast - slow / slow.sum()).max()),
      },
      indent=1,
    )
  )


if __name__ == '__main__':
  app.run(main)
