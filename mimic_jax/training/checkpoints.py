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

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

from mimic_jax import methods
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import pipeline
from mimic_jax.methods import base
from mimic_jax.models import pretrained
from mimic_jax.runtime import mesh as mesh_lib
from mimic_jax.training import state as state_lib


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
  weights, _ = pretrained.load(model.pretrained, model.arch)
  fresh = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  stacked = pretrained.ensemble_from_pretrained(
    fresh, weights, model.arch, model.member_init, model.perturb_scale, seed=seed
  )
  stacked = jax.tree.map(
    lambda a: jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx]), stacked
  )
  return state.replace(params=stacked['params'], batch_stats=stacked.get('batch_stats', {}))


class Checkpoints:
  """The orbax ``CheckpointManager`` of ``<workdir>/checkpoints`` (async saves)."""

  def __init__(self, workdir: str | os.PathLike, keep: int | None = None):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=keep is not None)
    self.directory = absolute(workdir) / 'checkpoints'
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: state_lib.TrainState) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def restore_newest_good(
    self, like: state_lib.TrainState, log: Callable[[str], None]
  ) -> tuple[state_lib.TrainState, int] | None:
    """The newest checkpoint that reads back into ``like``'s structure and shardings, and its
    step; ``None`` if there is none. Each one that fails is logged with its cause."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:
        log(
          f'Checkpoint step {step} cannot be restored ({type(e).__name__}: '
          f'{str(e)[:200]}); trying the previous one'
        )
        continue
      return restored, step
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def load_state(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  tuning: tuning_lib.Tuning | None = None,
  devices: Sequence[jax.Device] | None = None,
) -> state_lib.TrainState:
  """The latest checkpointed state of the run in ``workdir`` (trained with ``config``),
  replicated over ``devices`` (default: all)."""
  tuning = tuning or tuning_lib.resolve(config.xla)
  method = methods.build(config, tuning.conv, tuning.ensemble_execution)
  like = initial_state(
    method,
    mesh_lib.make_mesh(devices),
    pipeline.image_shape(config),
    jit=tuning.jit,
    load_pretrained=False,
  )
  checkpoints = Checkpoints(workdir)
  try:
    step = checkpoints.latest_step()
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {checkpoints.directory}')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return checkpoints.manager.restore(step, args=ocp.args.StandardRestore(abstract))
  finally:
    checkpoints.close()
