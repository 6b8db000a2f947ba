r"""mimic-jax entry point.

  python main.py --config=configs/mimic.py:synthetic --workdir=runs/mimic

Validates the config, prepares the dataset (for ``synthetic`` configs: writes the synthetic
PhysioNet tree and builds it with the same TFDS builder as real data), then trains, resuming
from the latest checkpoint in the workdir.
"""

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from data_builders.mimic_cxr_egd import prepare
from mimic_jax import config_check
from mimic_jax import synthetic_data
from mimic_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (local or gs://).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    config_check.validate(config)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  logging.info('JAX process %d/%d, %d local devices', jax.process_index(),
               jax.process_count(), jax.local_device_count())
  builder = synthetic_data.ensure_dataset(config.data)
  print(prepare.summary(builder), flush=True)
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
