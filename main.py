r"""mimic-jax entry point.

  python main.py --config=configs/mimic.py:synthetic --workdir=runs/mimic [--mode=train]
  python main.py --workdir=runs/mimic --mode=evaluate [--config.evaluation.gradcam_target=...]
  python main.py --list    # the config variants, and every config key with its default

Validates the config and the workdir (a workdir belongs to one run: ``--new_run`` moves
another run there aside), prepares the dataset (for ``synthetic`` configs: writes the synthetic
PhysioNet tree and builds it with the same TFDS builder as real data), then, by ``--mode``:
``train`` (resuming from the newest checkpoint in the workdir that reads back; on SIGTERM it
checkpoints at the next step and exits with code 42), ``evaluate`` (the newest checkpoint that
reads back, on the test split: metrics against gaze, report and gallery in
``<workdir>/eval/test/``), or ``train_and_evaluate``. ``evaluate`` reads the run's own
``config.json``; ``--config.KEY=VALUE`` flags override only what they name.

Multi-process: run the same command in every process. On a Cloud TPU slice nothing more is
needed; elsewhere add ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``
(see mimic_jax/runtime/distributed.py). Every process evaluates on its local devices; process 0
writes logs and reports.
"""

from collections.abc import Sequence
import contextlib
import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import ml_collections
from ml_collections import config_flags
import tensorflow_datasets as tfds

from configs import mimic as mimic_config
from data_builders.mimic_cxr_egd import prepare
from mimic_jax import config_check
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import prepare as prepare_data
from mimic_jax.evaluation import evaluate
from mimic_jax.models import pretrained
from mimic_jax.runtime import compilation_cache
from mimic_jax.runtime import console
from mimic_jax.runtime import distributed
from mimic_jax.runtime import preemption
from mimic_jax.training import checkpoints
from mimic_jax.training import finite
from mimic_jax.training import loop
from mimic_jax.training import metric_writer
from mimic_jax.training import workdir as workdir_lib
from mimic_jax.training import workdir_lock

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Config file[:VARIANT], e.g. configs/mimic.py:gaze,synthetic. main.py --list prints the '
  'variants and every config key with its default.',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (local or gs://).', required=True)
_MODE = flags.DEFINE_enum(
  'mode', 'train', ['train', 'evaluate', 'train_and_evaluate'], 'What to do.'
)
_NEW_RUN = flags.DEFINE_bool(
  'new_run',
  False,
  'If the workdir holds another run (a config that differs in the model, method, data, '
  'optimiser or seed), move it aside to <workdir>/previous_runs/ and start this one there '
  '(without it, that is an error).',
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


def _prepare_dataset(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Process 0 prepares the dataset first (a shared data dir is built once); the others then
  find it ready, or build their own copy where the data dir is per host."""
  if jax.process_count() == 1:
    return prepare_data.prepare_dataset(config.data)
  from jax.experimental import multihost_utils

  builder = prepare_data.prepare_dataset(config.data) if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices('mimic_jax: dataset prepared by process 0')
  return builder or prepare_data.prepare_dataset(config.data)


def _explicit_overrides(argv: Sequence[str]) -> list[str]:
  """The dotted keys of the ``--config.KEY=VALUE`` (or ``--config.KEY VALUE``) flags given."""
  return [a[len('--config.') :].split('=', 1)[0] for a in argv if a.startswith('--config.')]


def _run_config() -> ml_collections.ConfigDict:
  """The config of this command: ``--config`` (with its overrides) to train; to evaluate, the
  run's own ``config.json`` with only the ``--config.KEY`` values given on the command line."""
  if _MODE.value == 'evaluate' and not epath.Path(_WORKDIR.value).exists():
    raise ValueError(f'no such workdir: {_WORKDIR.value}')
  stored = workdir_lib.stored_config(_WORKDIR.value)
  if _MODE.value != 'evaluate' or stored is None:
    if _CONFIG.value is None or _CONFIG_FOR_OVERRIDES_ONLY:
      raise ValueError(
        f'--config is required (no {_WORKDIR.value}/config.json to evaluate from)'
        if _MODE.value == 'evaluate'
        else '--config is required to train'
      )
    return _CONFIG.value
  added = workdir_lib.fill_missing(stored, mimic_config.get_config())
  if added:
    print(
      f'{_WORKDIR.value}/config.json predates the keys '
      + ', '.join(f'{k}={v!r}' for k, v in added.items())
      + '; evaluating with those defaults',
      flush=True,
    )
  for key in _explicit_overrides(sys.argv[1:]):
    config_check.set_value(stored, key, config_check.get(_CONFIG.value, key))
  return stored


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.quiet_libraries()
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
    config = _run_config()
    config_check.validate(config, jax.device_count())
    tuning = tuning_lib.resolve(config.xla)
    if _MODE.value != 'evaluate':
      workdir_lib.check(_WORKDIR.value, config, new_run=_NEW_RUN.value)
    else:
      workdir_lib.check_evaluation(_WORKDIR.value, config)
  except (ValueError, KeyError) as e:
    sys.exit(f'main.py: {e}')
  with contextlib.ExitStack() as stack:
    if _MODE.value != 'evaluate':  # one training run in a workdir at a time
      try:
        stack.enter_context(workdir_lock.hold(_WORKDIR.value, print))
      except workdir_lock.WorkdirLockedError as e:
        sys.exit(f'main.py: {e}')
    _run(config, tuning)


def _run(config: ml_collections.ConfigDict, tuning: tuning_lib.Tuning) -> None:
  """Prepares the dataset and trains and/or evaluates, as ``--mode`` says."""
  cache = compilation_cache.enable()
  logging.info(
    'JAX process %d/%d, %d local devices; %s; compilation cache %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    tuning.describe(),
    cache or 'off',
  )
  try:
    builder = _prepare_dataset(config)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'main.py: {e}')
  print(prepare.summary(builder), flush=True)
  try:
    if _MODE.value in ('train', 'train_and_evaluate'):
      loop.train_and_evaluate(config, _WORKDIR.value, tuning=tuning, new_run=_NEW_RUN.value)
    if _MODE.value in ('evaluate', 'train_and_evaluate'):
      evaluate.evaluate_run(config, _WORKDIR.value, split=_SPLIT.value, tuning=tuning)
      print(f'Evaluation report: {_WORKDIR.value}/eval/{_SPLIT.value}/report.md', flush=True)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(preemption.EXIT_CODE)
  except (
    checkpoints.CheckpointRestoreError,
    workdir_lib.WorkdirConflictError,
    workdir_lock.WorkdirLockedError,
    finite.NonFiniteError,
    metric_writer.MetricsFileError,
    pretrained.ConversionError,
    FileNotFoundError,
  ) as e:
    sys.exit(f'main.py: {e}')


def _load_config(path: str, variant: str) -> ml_collections.ConfigDict:
  """``get_config(variant)`` of the config file ``path``."""
  spec = importlib.util.spec_from_file_location('_mimic_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant or None) if variant else module.get_config()


def _print_choices(path: str = 'configs/mimic.py') -> None:
  """The variants of configs/mimic.py and every config key with its default (``--list``)."""
  from configs import mimic

  print(f'Variants (--config={path}:VARIANT[,DATA]): {", ".join(mimic.VARIANTS)}')
  print(f'Data parts (DATA): {", ".join(mimic.DATA_PARTS)}  e.g. --config={path}:gaze,synthetic')
  print('Config keys (--config.KEY=VALUE) and their defaults:')
  base = workdir_lib.flat_config(mimic.get_config())
  for key, value in base.items():
    print(f'  {key} = {value!r}')
  synthetic = workdir_lib.flat_config(mimic.get_config('synthetic'))
  print('With the synthetic data part, also:')
  for key, value in synthetic.items():
    if key not in base:
      print(f'  {key} = {value!r}')


# Set when ``--config`` was not given and evaluation's ``--config.KEY`` overrides were parsed
# against configs/mimic.py: then only the values named on the command line are used.
_CONFIG_FOR_OVERRIDES_ONLY = False
_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'mimic.py')


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an unknown ``--config.KEY`` reported by its whole dotted path
  (ml_collections names only the last part). ``--mode=evaluate`` takes ``--config.KEY=VALUE``
  overrides without ``--config`` (they are parsed against configs/mimic.py's types and applied
  to the run's own config.json)."""
  global _CONFIG_FOR_OVERRIDES_ONLY
  if '--list' in argv:
    _print_choices()
    sys.exit(0)
  given = any(a == '--config' or a.startswith('--config=') for a in argv)
  evaluating = '--mode=evaluate' in argv or any(
    a == '--mode' and b == 'evaluate' for a, b in zip(argv, argv[1:])
  )
  if not given and _explicit_overrides(argv) and evaluating:
    argv = [argv[0], f'--config={_DEFAULT_CONFIG}', *argv[1:]]
    _CONFIG_FOR_OVERRIDES_ONLY = True
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, flags.Error) as e:
    file_arg = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
    if file_arg:
      path, _, variant = file_arg.partition(':')
      try:
        base = _load_config(path, variant)
      except (ValueError, OSError) as bad:
        sys.exit(f'main.py: --config={file_arg}: {bad}')
      for key in _explicit_overrides(argv):
        try:
          config_check.get(base, key)
        except ValueError as missing:
          sys.exit(f'main.py: --config.{key}: {missing}')
    sys.exit(f'main.py: {type(e).__name__}: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
