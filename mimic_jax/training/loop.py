"""The training loop: batches -> jit-compiled steps over a device mesh -> checkpoints and logs.

``train_and_evaluate(config, workdir)`` trains until ``num_train_steps`` (or ``num_epochs``),
resuming from the newest checkpoint in ``workdir/checkpoints`` that reads back; validates
after every ``eval_every_epochs`` epochs; logs to TensorBoard, ``metrics.jsonl`` and
``log.txt``. SIGTERM makes it write a checkpoint at the next step boundary and raise
``mimic_jax.runtime.preemption.Preempted``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import os
import time

from etils import epath
import jax
import ml_collections
import numpy as np

from mimic_jax import methods
from mimic_jax import models
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import pipeline
from mimic_jax.evaluation import figures
from mimic_jax.evaluation import validation
from mimic_jax.methods import base
from mimic_jax.runtime import mesh as mesh_lib
from mimic_jax.runtime import preemption
from mimic_jax.training import checkpoints as checkpoints_lib
from mimic_jax.training import finite
from mimic_jax.training import metric_writer
from mimic_jax.training import state as state_lib
from mimic_jax.training import steps
from mimic_jax.training import workdir as workdir_lib
from mimic_jax.training import workdir_lock


class NonFiniteLossError(finite.NonFiniteError):
  """Training produced a NaN or infinite loss; nothing after the last good step was saved."""


def _stop_non_finite(
  what: str, ckpt: checkpoints_lib.Checkpoints, best: checkpoints_lib.Checkpoints
) -> None:
  """Raises :class:`finite.NonFiniteError` for ``what``, naming the last checkpoint kept."""
  ckpt.wait()
  best.wait()
  raise finite.NonFiniteError(
    f'{what}; stopped without checkpointing this state (last checkpoint: step '
    f'{ckpt.latest_step()}). Lower config.learning_rate or check the inputs.'
  )


def _fmt_time(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


class _StepClock:
  """Training speed and ETA from steady steps: a window between log lines in which a phase ran
  for the first time (its program compiling) or that contains validation is not counted."""

  def __init__(self):
    self._phases: set[str] = set()
    self._since: tuple[float, int] | None = None  # (time, step) the window started at
    self._steady = True
    self.steps, self.seconds = 0, 0.0

  def phase(self, phase: str) -> None:
    if phase not in self._phases:
      self._phases.add(phase)
      self._steady = False

  def pause(self) -> None:
    self._steady = False

  def tick(self, step: int) -> None:
    now = time.time()
    if self._since is not None and self._steady:
      self.seconds += now - self._since[0]
      self.steps += step - self._since[1]
    self._since, self._steady = (now, step), True

  def describe(self, step: int, total_steps: int, batch_size: int) -> str:
    if not self.steps:
      return 'ETA after compilation'
    per_step = self.seconds / self.steps
    return f'{batch_size / per_step:.1f} ex/s | ETA {_fmt_time((total_steps - step) * per_step)}'


def _first_examples(
  source: Sequence[dict], input_channels: int, sharding: jax.sharding.Sharding, count: int = 4
) -> dict:
  """The first (up to ``count``) validation examples, replicated: those whose explanations
  TensorBoard shows (4), or the game monitor's fixed batch."""
  n = min(count, len(source))
  examples = [pipeline.preprocess(source[i], input_channels) for i in range(n)]
  batch = {k: np.stack([e[k] for e in examples]) for k in ('image', 'label', 'gaze')}
  return jax.device_put(batch, sharding)


def _monitor_fn(method: base.Method, jit: Callable, repl: jax.sharding.Sharding):
  """The method's :meth:`monitor` of a train state, jit-compiled."""

  def monitor(state: state_lib.TrainState, batch: dict, rng: jax.Array) -> dict:
    return method.monitor(state.params, state.batch_stats, state.method_state, batch, rng)

  return jit(monitor, out_shardings=repl)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  tuning: tuning_lib.Tuning | None = None,
  devices: Sequence[jax.Device] | None = None,
  stop_after: int | None = None,
  new_run: bool = False,
) -> state_lib.TrainState:
  """Trains ``config`` (validated: ``mimic_jax.config_check``) in ``workdir``; returns the
  final state.

  Args:
    config: see ``configs/mimic.py``.
    workdir: run directory (local or ``gs://``): checkpoints, logs, config.
    tuning: the backend settings (default: resolved from ``config.xla`` here).
    devices: devices of the data-parallel mesh (default: all).
    stop_after: stop (with a checkpoint) after this global step, as if interrupted.
    new_run: if ``workdir`` holds another run, move it aside and start this one there
      (``mimic_jax.training.workdir``); otherwise that is an error.

  Raises ``workdir_lock.WorkdirLockedError`` if another live run trains in ``workdir``.
  """
  tuning = tuning or tuning_lib.resolve(config.xla)
  workdir = checkpoints_lib.absolute(workdir)
  notes = []  # the lock's and the claim's messages, logged once the writer exists
  with workdir_lock.hold(workdir, notes.append):
    workdir_lib.claim(workdir, config, notes.append, new_run=new_run)
    writer = metric_writer.MetricWriter(workdir)
    for note in notes:
      writer.log(note)
    try:
      return _train(config, workdir, tuning, mesh_lib.make_mesh(devices), writer, stop_after)
    finally:
      writer.close()


def _train(
  config: ml_collections.ConfigDict,
  workdir: epath.Path,
  tuning: tuning_lib.Tuning,
  mesh: jax.sharding.Mesh,
  writer: metric_writer.MetricWriter,
  stop_after: int | None,
) -> state_lib.TrainState:
  """The body of :func:`train_and_evaluate`."""
  method = methods.build(config, tuning.conv, tuning.ensemble_execution)
  data_sharding, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  train_source = pipeline.data_source(config.data, 'train')
  train_ds, info = pipeline.train_dataset(
    train_source,
    global_batch=config.batch_size,
    input_channels=config.model.input_channels,
    seed=config.seed,
  )
  total_steps = (
    config.num_train_steps
    if config.num_train_steps > 0
    else config.num_epochs * info.steps_per_epoch
  )
  state = checkpoints_lib.initial_state(method, mesh, pipeline.image_shape(config), jit=tuning.jit)
  ckpt = checkpoints_lib.Checkpoints(workdir, keep=config.keep_checkpoints)
  start = 0
  restored = ckpt.restore_newest_good(state, writer.log, quarantine=True)
  if restored is not None:
    state, start = restored
    writer.log(f'Resumed from checkpoint step {start}')
  writer.resume_at(start)  # what an interrupted attempt logged after it is replayed

  step_fns = {
    phase: steps.compile_step(method, phase, tuning.jit, repl, tuning.per_member_steps)
    for phase in method.phases
  }
  weights = jax.device_put(steps.loss_weights(method), repl)
  layer = models.gradcam_layer(config.model.arch)
  sums_fn = tuning.jit(
    functools.partial(
      validation.batch_sums,
      layer=layer,
      gradcam_target=config.evaluation.gradcam_target,
      execution=tuning.ensemble_execution,
    ),
    out_shardings=repl,
  )
  val_source = pipeline.data_source(config.data, 'validation')
  shown = _first_examples(val_source, config.model.input_channels, repl)
  monitor_batch = _first_examples(val_source, config.model.input_channels, repl, config.batch_size)
  monitor_fn = _monitor_fn(method, tuning.jit, repl)
  term_gradients = None
  if config.monitor_loss_terms and method.loss_weights():
    term_phase = method.loss_term_phase or method.phases[0]
    term_gradients = steps.LossTermGradients(
      method, term_phase, tuning.jit, repl, step_fns[term_phase]
    )
  display_fn = tuning.jit(
    functools.partial(validation.display_maps, method, layer=layer), out_shardings=repl
  )
  best = checkpoints_lib.Checkpoints(workdir, keep=1, kind='best', best_metric=config.best_metric)

  writer.log(f'Tuning: {tuning.describe()}')
  writer.log(
    f'Training {type(method).__name__} ({method.num_members} x {config.model.arch}) for '
    f'{total_steps} steps, {info.steps_per_epoch} per epoch, global batch '
    f'{config.batch_size} on {mesh.size} device(s)'
  )
  writer.write_hparams(
    workdir_lib.flat_config(config), [f'validation/{k}' for k in validation.BEST_MODES]
  )
  it = pipeline.iterate_from(
    train_ds, start, threads=config.data.threads, prefetch=config.data.prefetch
  )
  acc = None
  end = total_steps if stop_after is None else min(total_steps, stop_after)
  step = start
  clock = _StepClock()
  with jax.set_mesh(mesh), preemption.SigtermFlag() as sigterm:
    while step < end:
      batch = mesh_lib.to_global(next(it), data_sharding)
      phase = method.phase(step, info.steps_per_epoch)
      clock.phase(phase)
      state, m = step_fns[phase](state, batch, weights)
      acc = m if acc is None else acc.merge(m)
      step += 1
      last = step == end
      if step % config.log_every_steps == 0 or step % config.checkpoint_every_steps == 0 or last:
        scalars = {k: float(v) for k, v in acc.compute().items()}
        acc = None
        if not all(np.isfinite(list(scalars.values()))):
          ckpt.wait()
          raise NonFiniteLossError(
            f'non-finite training metrics at step {step}: {scalars}; stopped without '
            f'checkpointing this state (last checkpoint: step {ckpt.latest_step()}). Lower '
            'config.learning_rate or check the inputs.'
          )
        writer.write_scalars(step, scalars, prefix='train/')
        clock.tick(step)
        writer.log(
          f'step {step}/{total_steps} epoch {step / info.steps_per_epoch:.2f} | '
          + ' '.join(f'{k} {v:.4f}' for k, v in scalars.items())
          + f' | {clock.describe(step, total_steps, config.batch_size)}'
        )
      validate_now = (
        step % info.steps_per_epoch == 0
        and (step // info.steps_per_epoch) % config.eval_every_epochs == 0
        or last
      )
      checkpoint_now = step % config.checkpoint_every_steps == 0 or last
      if validate_now or checkpoint_now:
        bad = finite.non_finite_leaves({'params': state.params, 'batch_stats': state.batch_stats})
        if bad:
          _stop_non_finite(f'non-finite parameters at step {step}: {", ".join(bad)}', ckpt, best)
      if validate_now:
        val = validation.validate(
          state,
          val_source,
          sums_fn,
          batch_size=config.batch_size,
          input_channels=config.model.input_channels,
          sharding=data_sharding,
        )
        writer.write_scalars(step, val, prefix='validation/')
        writer.log(
          f'validation at step {step}: ' + ' '.join(f'{k} {v:.4f}' for k, v in val.items())
        )
        if not np.isfinite(val['ce']):
          what = f'non-finite validation loss at step {step} (ce {val["ce"]})'
          _stop_non_finite(what, ckpt, best)
        game = jax.device_get(monitor_fn(state, monitor_batch, jax.random.key(step)))
        if game:
          game = {k: float(v) for k, v in game.items()}
          game['after_discriminator_phase'] = float(phase == 'discriminator')
          writer.write_scalars(step, game, prefix='game/')
          writer.log(
            f'game at step {step} (after {"an" if phase[0] in "aeiou" else "a"} {phase} step): '
            + ' '.join(f'{k} {v:.4f}' for k, v in game.items() if k != 'after_discriminator_phase')
          )
        if term_gradients is not None:
          shares = term_gradients(state, monitor_batch, weights, jax.random.key(step))
          writer.write_scalars(step, shares, prefix='gradients/')
          writer.log(
            f'loss terms at step {step}: ' + ' '.join(f'{k} {v:.4f}' for k, v in shares.items())
          )
        maps = jax.device_get(display_fn(state, shown, jax.random.key(step)))
        writer.write_image(
          step,
          'validation/explanations',
          figures.validation_panel(np.asarray(shown['image']), np.asarray(shown['gaze']), maps),
        )
        if np.isfinite(val[config.best_metric]):
          best.save(step, state, metrics=val, after=ckpt)
        clock.pause()  # validation is not a training step
      if checkpoint_now:
        ckpt.save(step, state, after=best)
      if not last and sigterm.any_process():
        if ckpt.latest_step() != step:
          ckpt.save(step, state, after=best)
        ckpt.wait()
        best.wait()
        writer.log(
          f'SIGTERM: checkpoint at step {step} written; exiting with code '
          f'{preemption.EXIT_CODE}. Rerun the same command to resume.'
        )
        raise preemption.Preempted(step)
  best.wait()
  best.close()
  ckpt.wait()
  ckpt.close()
  return state
