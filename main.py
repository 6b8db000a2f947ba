r"""mimic-jax entry point.

  python main.py --config=configs/mimic.py:synthetic --workdir=runs/mimic [--mode=train]

Validates the config, prepares the dataset (for ``synthetic`` configs: writes the synthetic
PhysioNet tree and builds it with the same TFDS builder as real data), then, by ``--mode``:
``train`` (resuming from the latest checkpoint in the workdir; on SIGTERM it checkpoints at
the next step and exits with code 42), ``evaluate`` (the latest
checkpoint on the test split: metrics against gaze, report and gallery in
``<workdir>/eval/test/``), or ``train_and_evaluate``.
"""

import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from data_builders.mimic_cxr_egd import prepare
from mimic_jax import config_check
from mimic_jax import evaluate
from mimic_jax import synthetic_data
from mimic_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (local or gs://).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'train_and_evaluate'],
                          'What to do.')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split to evaluate.')
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
  if _MODE.value in ('train', 'train_and_evaluate'):
    try:
      train.train_and_evaluate(config, _WORKDIR.value)
    except train.Preempted as e:
      logging.warning('%s', e)
      sys.exit(train.PREEMPTED_EXIT_CODE)
  if _MODE.value in ('evaluate', 'train_and_evaluate'):
    evaluate.evaluate_run(config, _WORKDIR.value, split=_SPLIT.value)
    print(f'Evaluation report: {_WORKDIR.value}/eval/{_SPLIT.value}/report.md', flush=True)


if __name__ == '__main__':
  app.run(main)
