r"""Packing rate of the mimic_cxr_egd builder on full-size synthetic images.

  python benchmarks/pack_egd.py --num_images 200 --config 224 [--workdir /tmp/pack]

Writes a synthetic tree at real MIMIC sizes (about 3000 x 2500 JPGs), builds it, and reports
images/s and the time extrapolated to the real EGD (1,083 images). Also times the fast gaze
heatmap against the full-resolution scipy reference on one image.
"""

import json
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from data_builders.mimic_cxr_egd import gaze_maps
from data_builders.mimic_cxr_egd import prepare
from data_builders.synthetic_egd import generate

_NUM_IMAGES = flags.DEFINE_integer('num_images', 200, 'Images to pack.')
_CONFIG = flags.DEFINE_string('config', '224', 'Builder config.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Scratch folder (default: a temp dir).')


def main(argv):
  del argv
  work = _WORKDIR.value or tempfile.mkdtemp(prefix='pack_egd_')
  manual, data = os.path.join(work, 'manual'), os.path.join(work, 'tfds')
  shutil.rmtree(work, ignore_errors=True)
  t0 = time.time()
  generate.write_tree(manual, _NUM_IMAGES.value, seed=0, scale=1.0, raw_gaze=False)
  t_gen = time.time() - t0
  t0 = time.time()
  builder = prepare.build(manual, data, config=_CONFIG.value)
  t_build = time.time() - t0
  rng = np.random.default_rng(0)
  x, y = rng.integers(0, 2544, 40), rng.integers(0, 3056, 40)
  t0 = time.time()
  fast = gaze_maps.static_heatmap(x, y, (3056, 2544), 224)
  t_fast = time.time() - t0
  t0 = time.time()
  ref = gaze_maps.reference_static_heatmap(x, y, (3056, 2544), 224)
  t_ref = time.time() - t0
  result = {
    'num_images': _NUM_IMAGES.value,
    'config': _CONFIG.value,
    'cpus': os.cpu_count(),
    'generate_s': round(t_gen, 1),
    'build_s': round(t_build, 1),
    'images_per_s': round(_NUM_IMAGES.value / t_build, 2),
    'extrapolated_1083_images_s': round(1083 * t_build / _NUM_IMAGES.value, 1),
    'heatmap_fast_s': round(t_fast, 4),
    'heatmap_reference_s': round(t_ref, 2),
    'heatmap_cc': float(np.corrcoef(fast.ravel(), ref.ravel())[0, 1]),
    'examples': {k: v.num_examples for k, v in builder.info.splits.items()},
  }
  print(json.dumps(result, indent=1))
  shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
