"""The training loop: mesh and shardings, input pipeline, jit steps, checkpoints, logs.

``train_and_evaluate(config, workdir)`` trains until ``num_train_steps`` (or ``num_epochs``),
resuming from the latest checkpoint in ``workdir/checkpoints`` if there is one (parameters,
optimiser, BatchNorm statistics, the random key and, since batches are indexed by step, the
data position). A checkpoint that cannot be read back (a run killed while writing it) is
skipped for the one before. SIGTERM makes the loop write a checkpoint at the next step
boundary and raise :class:`Preempted` (``main.py`` exits with ``PREEMPTED_EXIT_CODE``).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mimic_jax import compile_options
from mimic_jax import config_check
from mimic_jax import input_pipeline
from mimic_jax import metric_writer
from mimic_jax import models
from mimic_jax import pretrained
from mimic_jax import steps


PREEMPTED_EXIT_CODE = 42


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss; nothing after the last good step was saved."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint of ``step`` was written. Rerun the command to resume."""

  def __init__(self, step: int):
    super().__init__(f'preempted (SIGTERM): checkpoint at step {step} written; rerun the same '
                     'command to resume')
    self.step = step


class _SigtermFlag:
  """Records SIGTERM (what a spot/preemptible VM receives) instead of dying mid-step."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    """True if any process got SIGTERM, so that all stop at the same step."""
    if jax.process_count() == 1:
      return self.received
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.int32(self.received))))


def _restore_latest_good(ckpt, state, writer):
  """Restores the newest checkpoint that reads back; falls back past corrupted ones.

  Returns ``(state, step)``, with step 0 and the given state if none reads back.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  for step in sorted(ckpt.all_steps(), reverse=True):
    try:
      restored = ckpt.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except
      writer.log(f'Checkpoint step {step} cannot be restored ({type(e).__name__}: '
                 f'{str(e)[:200]}); trying the previous one')
      continue
    return restored, step
  return state, 0


def _absolute(path) -> epath.Path:
  """Orbax wants absolute paths; URLs such as ``gs://`` are left as they are."""
  path = str(path)
  return epath.Path(path if '://' in path else os.path.abspath(path))


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over ``devices`` (default: all).

  Auto axes: the steps are written for one device and XLA partitions them from the input
  shardings (explicit-sharding mode rejects the reshapes that vmapped convolutions make).
  """
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ('data',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def is_discriminator_phase(config, step: int, steps_per_epoch: int) -> bool:
  """``mimic`` alternation: epoch (or step) index % period == 0 trains the discriminator."""
  index = step // steps_per_epoch if config.mimic.alternation == 'epoch' else step
  return index % config.mimic.period == 0


def _fmt_time(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def _to_global(batch: dict, sharding) -> dict:
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _eval_sums(state, batch):
  """Correct predictions, summed negative log-likelihood and example count of a batch."""
  logp = steps.predict(state, batch['image'])
  mask = batch['mask'].astype(jnp.float32)
  nll = -jnp.take_along_axis(logp, batch['label'][:, None], axis=-1)[:, 0]
  return jnp.stack([jnp.sum((jnp.argmax(logp, -1) == batch['label']) * mask),
                    jnp.sum(nll * mask), jnp.sum(mask)])


def evaluate(state, config, source, data_sharding, sums_fn) -> dict[str, float]:
  """Accuracy and CE of the ensemble prediction over a whole split (every process reads a
  share; the sums are global)."""
  total = np.zeros(3)
  for batch in input_pipeline.eval_batches(source, global_batch=config.batch_size,
                                           input_channels=config.model.input_channels):
    g = _to_global({k: batch[k] for k in ('image', 'label', 'mask')}, data_sharding)
    total += np.asarray(jax.device_get(sums_fn(state, g)), np.float64)
  correct, nll, count = total
  return {'accuracy': correct / count, 'ce': nll / count}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None,
                       stop_after: int | None = None) -> steps.TrainState:
  """Trains ``config`` in ``workdir``; returns the final state.

  Args:
    config: see ``configs/mimic.py``.
    workdir: run directory (local or ``gs://``): checkpoints, logs, config.
    devices: devices of the data-parallel mesh (default: all).
    stop_after: stop (with a checkpoint) after this global step, as if interrupted.
  """
  mesh = make_mesh(devices)
  config_check.validate(config, num_devices=mesh.size)
  workdir = _absolute(workdir)
  writer = metric_writer.MetricWriter(workdir)
  try:
    return _train(config, workdir, mesh, writer, stop_after)
  finally:
    writer.close()


def _train(config, workdir, mesh, writer, stop_after) -> steps.TrainState:
  """The body of :func:`train_and_evaluate`."""
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=1))

  data_sharding = NamedSharding(mesh, P('data'))
  repl = NamedSharding(mesh, P())
  train_source = input_pipeline.data_source(config.data, 'train')
  train_ds, info = input_pipeline.train_dataset(
      train_source, global_batch=config.batch_size,
      input_channels=config.model.input_channels, seed=config.seed)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * info.steps_per_epoch)
  state = _initial_state(config, mesh, train_ds[0]['image'].shape[1:])
  ckpt = ocp.CheckpointManager(
      workdir / 'checkpoints',
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True))
  start = 0
  if ckpt.latest_step() is not None:
    state, start = _restore_latest_good(ckpt, state, writer)
    writer.log(f'Resumed from checkpoint step {start} in {workdir / "checkpoints"}')

  options = compile_options.for_config(config)
  member = jax.jit(functools.partial(steps.member_step, config), donate_argnums=(0,),
                   out_shardings=(repl, repl), compiler_options=options)
  disc = jax.jit(functools.partial(steps.disc_step, config), donate_argnums=(0,),
                 out_shardings=(repl, repl), compiler_options=options)
  sums_fn = jax.jit(_eval_sums, out_shardings=repl, compiler_options=options)
  val_source = input_pipeline.data_source(config.data, 'validation')

  def save(step):
    ckpt.save(step, args=ocp.args.StandardSave(state))

  writer.log(f'Training {config.method} ({steps.num_members(config)} x {config.model.arch}) '
             f'for {total_steps} steps, {info.steps_per_epoch} per epoch, global batch '
             f'{config.batch_size} on {mesh.size} device(s); workdir {workdir}')
  it = input_pipeline.iterate_from(train_ds, start, threads=config.data.threads,
                                   prefetch=config.data.prefetch)
  acc = None
  t0, done_at_t0 = time.time(), start
  end = total_steps if stop_after is None else min(total_steps, stop_after)
  step = start
  with jax.set_mesh(mesh), _SigtermFlag() as sigterm:
    while step < end:
      batch = _to_global(next(it), data_sharding)
      use_disc = config.method == 'mimic' and is_discriminator_phase(
          config, step, info.steps_per_epoch)
      state, m = (disc if use_disc else member)(state, batch)
      acc = m if acc is None else acc.merge(m)
      step += 1
      last = step == end
      if step % config.log_every_steps == 0 or step % config.checkpoint_every_steps == 0 or last:
        scalars = {k: float(v) for k, v in acc.compute().items()}
        acc = None
        if not all(np.isfinite(list(scalars.values()))):
          ckpt.wait_until_finished()
          raise NonFiniteLossError(
              f'non-finite training metrics at step {step}: {scalars}; stopped without '
              f'checkpointing this state (last checkpoint: step {ckpt.latest_step()}). Lower '
              'config.learning_rate or check the inputs.')
        writer.write_scalars(step, scalars, prefix='train/')
        rate = (step - done_at_t0) * config.batch_size / max(time.time() - t0, 1e-9)
        eta = (total_steps - step) * config.batch_size / max(rate, 1e-9)
        writer.log(f'step {step}/{total_steps} epoch {step / info.steps_per_epoch:.2f} | '
                   + ' '.join(f'{k} {v:.4f}' for k, v in scalars.items())
                   + f' | {rate:.1f} ex/s | ETA {_fmt_time(eta)}')
      if step % info.steps_per_epoch == 0 and (
          step // info.steps_per_epoch) % config.eval_every_epochs == 0 or last:
        val = evaluate(state, config, val_source, data_sharding, sums_fn)
        writer.write_scalars(step, val, prefix='validation/')
        writer.log(f'validation at step {step}: ' +
                   ' '.join(f'{k} {v:.4f}' for k, v in val.items()))
      if step % config.checkpoint_every_steps == 0 or last:
        save(step)
      if not last and sigterm.any_process():
        if ckpt.latest_step() != step:
          save(step)
        ckpt.wait_until_finished()
        writer.log(f'SIGTERM: checkpoint at step {step} written; exiting with code '
                   f'{PREEMPTED_EXIT_CODE}. Rerun the same command to resume.')
        raise Preempted(step)
  ckpt.wait_until_finished()
  ckpt.close()
  return state


def _initial_state(config, mesh, image_shape, load_pretrained: bool = True
                   ) -> steps.TrainState:
  """Freshly initialised state (seeded by ``config.seed``), replicated over ``mesh``; with
  ``config.model.pretrained``, the sub-models' backbones come from that file."""
  model = models.create_model(config.model)
  repl = NamedSharding(mesh, P())
  init = jax.jit(functools.partial(steps.create_state, config, model, image_shape),
                 out_shardings=repl, compiler_options=compile_options.for_config(config))
  state = init(jax.random.PRNGKey(config.seed))
  if not (load_pretrained and config.model.get('pretrained')):
    return state
  weights, _ = pretrained.load(config.model.pretrained, config.model.arch)
  fresh = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  stacked = pretrained.ensemble_from_pretrained(
      fresh, weights, config.model.arch, config.model.member_init, config.model.perturb_scale,
      seed=config.seed)
  stacked = jax.tree.map(
      lambda a: jax.make_array_from_callback(a.shape, repl, lambda idx: a[idx]), stacked)
  return state.replace(params=stacked['params'], batch_stats=stacked.get('batch_stats', {}))


def load_state(config: ml_collections.ConfigDict, workdir: str, devices=None):
  """The latest checkpointed state of a run (for evaluation), replicated on the mesh."""
  source = input_pipeline.data_source(config.data, 'train')
  image_shape = input_pipeline.preprocess(source[0], config.model.input_channels)['image'].shape
  state = _initial_state(config, make_mesh(devices), image_shape, load_pretrained=False)
  with ocp.CheckpointManager(_absolute(workdir) / 'checkpoints') as ckpt:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return ckpt.restore(ckpt.latest_step(), args=ocp.args.StandardRestore(abstract))
