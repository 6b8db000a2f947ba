r"""mimic-jax entry point.

  python main.py --config=configs/mimic.py:synthetic --workdir=runs/synthetic

Prepares the dataset (for the ``synthetic`` variant: writes the synthetic PhysioNet tree and
builds it with the same TFDS builder as real data) and prints its summary. Training lands with
the training-core issue; until then the job stops after the dataset.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from data_builders.mimic_cxr_egd import prepare
from mimic_jax import synthetic_data

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  builder = synthetic_data.ensure_dataset(config.data)
  print(prepare.summary(builder))
  logging.info('Dataset ready; training is not implemented yet (workdir %s unused).',
               _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
