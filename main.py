r"""mimic-jax entry point.

  python main.py --config=configs/mimic.py:synthetic --workdir=runs/mimic [--mode=train]

Validates the config, prepares the dataset (for ``synthetic`` configs: writes the synthetic
PhysioNet tree and builds it with the same TFDS builder as real data), then, by ``--mode``:
``train`` (resuming from the latest checkpoint in the workdir; on SIGTERM it checkpoints at
the next step and exits with code 42), ``evaluate`` (the latest
checkpoint on the test split: metrics against gaze, report and gallery in
``<workdir>/eval/test/``), or ``train_and_evaluate``.

Multi-process: run the same command in every process. On a Cloud TPU slice nothing more is
needed; elsewhere add ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``
(see mimic_jax/runtime/distributed.py). Every process evaluates on its local devices; process 0
writes logs and reports.
"""

from collections.abc import Sequence
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from data_builders.mimic_cxr_egd import prepare
from mimic_jax import config_check
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import prepare as prepare_data
from mimic_jax.evaluation import evaluate
from mimic_jax.runtime import distributed
from mimic_jax.runtime import preemption
from mimic_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (local or gs://).')
_MODE = flags.DEFINE_enum(
  'mode', 'train', ['train', 'evaluate', 'train_and_evaluate'], 'What to do.'
)
_SPLIT = flags.DEFINE_string('split', 'test', 'Split to evaluate.')
_MULTIPROCESS = flags.DEFINE_enum(
  'multiprocess',
  'auto',
  ['auto', 'on', 'off'],
  'on: jax.distributed.initialize() finds the other processes (Cloud TPU VMs, GKE, Slurm); '
  'auto: only when the three flags below are given or the environment names the workers '
  '(see mimic_jax/runtime/distributed.py); off: one process.',
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0 (explicit multi-process runs).'
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
_LOCAL_DEVICES = flags.DEFINE_list(
  'local_device_ids', None, 'Devices of this process (e.g. one GPU per process).'
)
flags.mark_flags_as_required(['config', 'workdir'])


def _prepare_dataset(config: ml_collections.ConfigDict):
  """Process 0 prepares the dataset first (a shared data dir is built once); the others then
  find it ready, or build their own copy where the data dir is per host."""
  if jax.process_count() == 1:
    return prepare_data.prepare_dataset(config.data)
  from jax.experimental import multihost_utils

  builder = prepare_data.prepare_dataset(config.data) if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices('mimic_jax: dataset prepared by process 0')
  return builder or prepare_data.prepare_dataset(config.data)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    distributed.initialize(
      distributed.Settings(  # before anything touches a device
        mode=_MULTIPROCESS.value,
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
        local_device_ids=(
          None if _LOCAL_DEVICES.value is None else tuple(int(d) for d in _LOCAL_DEVICES.value)
        ),
      )
    )
    config_check.validate(config, jax.device_count())
    tuning = tuning_lib.resolve(config.xla)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  logging.info(
    'JAX process %d/%d, %d local devices; %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    tuning.describe(),
  )
  builder = _prepare_dataset(config)
  print(prepare.summary(builder), flush=True)
  if _MODE.value in ('train', 'train_and_evaluate'):
    try:
      loop.train_and_evaluate(config, _WORKDIR.value, tuning=tuning)
    except preemption.Preempted as e:
      logging.warning('%s', e)
      sys.exit(preemption.EXIT_CODE)
  if _MODE.value in ('evaluate', 'train_and_evaluate'):
    evaluate.evaluate_run(config, _WORKDIR.value, split=_SPLIT.value, tuning=tuning)
    print(f'Evaluation report: {_WORKDIR.value}/eval/{_SPLIT.value}/report.md', flush=True)


if __name__ == '__main__':
  app.run(main)
