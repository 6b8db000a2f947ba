"""Checkpoints of a run: the initial state, saving, restoring with fallback, and loading for
evaluation.

A run's checkpoints are orbax's (``<workdir>/checkpoints/<step>``, the whole
:class:`~mimic_jax.training.state.TrainState`: parameters, optimiser, batch statistics, the
method's state and the random key; since batches are indexed by step, also the data
position). A checkpoint that cannot be read back (a run killed while writing it) is skipped
for the one before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import os
import sys
import time
from typing import Any

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

from mimic_jax import methods
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import pipeline
from mimic_jax.evaluation import validation as validation_lib
from mimic_jax.methods import base
from mimic_jax.models import pretrained
from mimic_jax.runtime import mesh as mesh_lib
from mimic_jax.training import finite
from mimic_jax.training import state as state_lib
from mimic_jax.training import workdir as workdir_lib


def absolute(path: str | os.PathLike) -> epath.Path:
  """Orbax wants absolute paths; URLs such as ``gs://`` are left as they are."""
  path = str(path)
  return epath.Path(path if '://' in path else os.path.abspath(path))


def initial_state(
  method: base.Method,
  mesh: jax.sharding.Mesh,
  image_shape: tuple[int, ...],
  jit: Callable = jax.jit,
  load_pretrained: bool = True,
) -> state_lib.TrainState:
  """A fresh state (seeded by ``config.seed``), replicated over ``mesh``; with
  ``config.model.pretrained``, every sub-model's backbone comes from that file.

  ``jit``: how to compile the initialisation (the run's compiler options)."""
  config = method.config
  repl = mesh_lib.replicated(mesh)
  init = jit(functools.partial(state_lib.create_state, method, image_shape), out_shardings=repl)
  state = init(jax.random.PRNGKey(config.seed))
  if not (load_pretrained and config.model.get('pretrained')):
    return state
  return graft_pretrained(state, config.model, config.seed, repl)


def graft_pretrained(
  state: state_lib.TrainState,
  model: ml_collections.ConfigDict,
  seed: int,
  sharding: jax.sharding.Sharding,
) -> state_lib.TrainState:
  """``state`` with every sub-model's backbone from ``model.pretrained`` (see
  ``mimic_jax.models.pretrained``); new classifier heads stay as initialised."""
  weights = pretrained.load(model.pretrained, model.arch)
  fresh = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  stacked = pretrained.ensemble_from_pretrained(
    fresh, weights, model.arch, model.member_init, model.perturb_scale, seed=seed
  )
  stacked = jax.tree.map(
    lambda a: jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx]), stacked
  )
  return state.replace(params=stacked['params'], batch_stats=stacked.get('batch_stats', {}))


class CheckpointRestoreError(RuntimeError):
  """No checkpoint of a run could be read back; names each one's step, path and cause."""

  def __init__(self, directory: epath.Path, failures: list[tuple[int, str, str]]):
    self.failures = failures
    lines = '\n'.join(f'  step {step} ({path}): {cause}' for step, path, cause in failures)
    super().__init__(f'no checkpoint in {directory} can be restored:\n{lines}')


def root_cause(error: BaseException) -> str:
  """One line for what went wrong: the innermost chained exception's type and first line."""
  while error.__cause__ is not None or (
    error.__context__ is not None and not error.__suppress_context__
  ):
    error = error.__cause__ or error.__context__
  message = str(error).strip().splitlines()
  return f'{type(error).__name__}: {message[0][:300] if message else ""}'


def _drop_late_callbacks_of_failed_reads() -> None:
  """Filters ``sys.unraisablehook`` (once per process) to drop exactly asyncio's
  ``RuntimeError('Event loop is closed')``: when one array of a checkpoint fails to read,
  orbax closes its event loop while tensorstore still delivers the other arrays' reads to it,
  and each delivery would print a traceback that buries the one real cause."""
  previous = sys.unraisablehook
  if getattr(previous, 'mimic_jax_filter', False):
    return

  def hook(unraisable: sys.UnraisableHookArgs) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
      previous(unraisable)

  hook.mimic_jax_filter = True
  sys.unraisablehook = hook


# Which checkpoint evaluation and explanation use (``config.select_checkpoint``): one of these,
# or a step number (of ``checkpoints/`` or ``checkpoints_best/``).
SELECTIONS = ('latest', 'best')


def valid_selection(select: str | int) -> bool:
  """Whether ``select`` names a checkpoint: ``'latest'``, ``'best'`` or a step number."""
  return str(select) in SELECTIONS or str(select).isdigit()


class Checkpoints:
  """An orbax ``CheckpointManager`` of a run (async saves).

  ``kind='latest'``: ``<workdir>/checkpoints``, the newest ``keep`` (what a run resumes from).
  ``kind='best'``: ``<workdir>/checkpoints_best``, the one whose validation ``best_metric``
  (``'accuracy'``, ``'ce'``, ``'kld'`` or ``'nss'``; saved with it) is best, kept by orbax's
  own best-checkpoint rule. ``keep=None``: for reading (nothing is created or deleted).
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    keep: int | None = None,
    kind: str = 'latest',
    best_metric: str = 'accuracy',
  ):
    self.workdir = absolute(workdir)
    self.kind = kind
    self.directory = self.workdir / ('checkpoints' if kind == 'latest' else 'checkpoints_best')
    best = {}
    if kind == 'best':
      best = {
        'best_fn': lambda metrics: metrics[best_metric],
        'best_mode': validation_lib.BEST_MODES[best_metric],
      }
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=keep is not None, **best)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(
    self,
    step: int,
    state: state_lib.TrainState,
    metrics: dict | None = None,
    after: Checkpoints | None = None,
  ) -> None:
    """Saves ``state`` as ``step`` (with ``metrics`` for the best checkpoint's rule).

    ``after``: the run's other manager. Over several processes its background save finishes
    first: two managers' cross-process barriers could otherwise pair up in different orders
    and deadlock."""
    if after is not None and jax.process_count() > 1:
      after.wait()
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

  def restore_step(self, step: int, like: state_lib.TrainState) -> state_lib.TrainState:
    """The checkpoint of ``step`` read back into ``like``'s structure and shardings; raises
    ``FileNotFoundError`` naming the steps there are, :class:`CheckpointRestoreError` if it
    does not read back."""
    steps = sorted(self.manager.all_steps())
    if step not in steps:
      raise FileNotFoundError(f'no checkpoint of step {step} in {self.directory} (steps: {steps})')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    _drop_late_callbacks_of_failed_reads()
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # a checkpoint that does not read back
      raise CheckpointRestoreError(
        self.directory, [(step, str(self.directory / str(step)), root_cause(e))]
      ) from None

  def restore_newest_good(
    self, like: state_lib.TrainState, log: Callable[[str], None], quarantine: bool = False
  ) -> tuple[state_lib.TrainState, int] | None:
    """The newest checkpoint that reads back into ``like``'s structure and shardings, and its
    step; ``None`` if there are no checkpoints. Each one that fails is logged with its cause
    and, with ``quarantine``, moved to ``<workdir>/quarantine/`` so that a later save of that
    step is written. Raises :class:`CheckpointRestoreError` if none reads back."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    _drop_late_callbacks_of_failed_reads()
    failures = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      path = self.directory / str(step)
      try:
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # any failure to read back: try the one before
        failures.append((step, str(path), root_cause(e)))
        log(f'Checkpoint step {step} ({path}) cannot be restored: {failures[-1][2]}')
        if quarantine:
          self._quarantine(step, log)
        continue
      return restored, step
    if failures:
      raise CheckpointRestoreError(self.directory, failures)
    return None

  def _quarantine(self, step: int, log: Callable[[str], None]) -> None:
    target = self.workdir / 'quarantine' / f'{step}-{time.strftime("%Y%m%d-%H%M%S", time.gmtime())}'
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target)
      log(f'Moved it to {target}')
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f'mimic_jax: checkpoint {step} quarantined')
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def load_state(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, **options: Any
) -> state_lib.TrainState:
  """The state of the run in ``workdir``: :func:`load_checkpoint` (same ``options``) without
  which checkpoint it is."""
  return load_checkpoint(config, workdir, **options)[0]


def load_checkpoint(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  tuning: tuning_lib.Tuning | None = None,
  devices: Sequence[jax.Device] | None = None,
  select: str | None = None,
  log: Callable[[str], None] = print,
) -> tuple[state_lib.TrainState, dict]:
  """The state of the run in ``workdir`` (trained with ``config``), replicated over ``devices``
  (default: all), and which checkpoint it is (``{'select', 'step', 'path'}``): ``select``
  (default ``config.select_checkpoint``) ``'latest'``, the newest checkpoint that reads back,
  ``'best'``, the best by validation ``config.best_metric`` (falling back likewise), or a step
  number (in ``checkpoints/``, else ``checkpoints_best/``). Raises ``FileNotFoundError``
  without checkpoints,
  :class:`CheckpointRestoreError` if none reads back,
  ``workdir.EvaluationConfigError`` (before any restore) if ``config`` differs from the run's
  ``config.json`` in keys that define the run, and ``finite.NonFiniteError`` if the
  checkpoint's parameters hold NaN or infinite values."""
  workdir_lib.check_evaluation(workdir, config)
  tuning = tuning or tuning_lib.resolve(config.xla)
  method = methods.build(config, tuning.conv, tuning.ensemble_execution)
  like = initial_state(
    method,
    mesh_lib.make_mesh(devices),
    pipeline.image_shape(config),
    jit=tuning.jit,
    load_pretrained=False,
  )
  select = str(select or config.get('select_checkpoint', 'latest'))
  if not valid_selection(select):
    raise ValueError(f'select_checkpoint={select!r}: use latest, best or a step number')
  kind = select if select in SELECTIONS else 'latest'
  checkpoints = Checkpoints(workdir, kind=kind)
  try:
    if select.isdigit():
      step = int(select)
      if step not in checkpoints.manager.all_steps():
        best = Checkpoints(workdir, kind='best')
        if best.directory.exists() and step in best.manager.all_steps():
          checkpoints.close()
          checkpoints = best
        else:
          best.close()
      state = checkpoints.restore_step(step, like)
    else:
      restored = checkpoints.restore_newest_good(like, log)
      if restored is None:
        raise FileNotFoundError(f'no checkpoint in {checkpoints.directory}: train the run first')
      state, step = restored
    path = checkpoints.directory / str(step)
    finite.check_state(state, f'checkpoint step {step} ({path})')
    return state, {'select': select, 'step': int(step), 'path': str(path)}
  finally:
    checkpoints.close()
