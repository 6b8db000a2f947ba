"""The training step: one update of a method's phase.

``train_step(method, phase, state, batch, weights)`` is a pure function written for one device
with global-batch semantics; :func:`compile_step` jits it over a device mesh, one program per
phase, or, with ``per_member=True``, as M calls of one program that takes the gradient of one
sub-model's share of the loss between a program that updates the method's state and one that
applies Adam to all (the same numbers; a program with one copy of the network compiles about
M times faster). It knows nothing about any particular method: the method updates its own state
(for ``mimic``, the discriminator) and gives the sub-models' loss, whose gradient updates them.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import numpy as np

from mimic_jax.methods import base
from mimic_jax.training import state as state_lib

Step = Callable[..., tuple[state_lib.TrainState, clu_metrics.Collection]]


@functools.cache
def metrics_class(names: tuple[str, ...]) -> type[clu_metrics.Collection]:
  """A ``clu`` collection averaging the scalars ``names`` over steps."""
  return clu_metrics.Collection.create(
    **{name: clu_metrics.Average.from_output(name) for name in names}
  )


def train_step(
  method: base.Method,
  phase: str,
  state: state_lib.TrainState,
  batch: dict,
  weights: dict[str, jax.Array] | None = None,
) -> tuple[state_lib.TrainState, clu_metrics.Collection]:
  """The method's state update, then one Adam step of the sub-models on its loss.

  ``batch``: ``image`` ``(B, H, W, C)``, ``label`` ``(B,)``, ``gaze`` ``(B, S, S)``.
  ``weights``: :func:`loss_weights` (``None``: compiled in as constants). The step
  key splits into the next state's key and this step's; the method's state update draws from
  the step's key folded with 1. Returns the new state and the step's metrics
  (``method.metric_names``).
  """
  method_state, method_scalars, next_key, step_key = _update_method_state(
    method, phase, state, batch
  )
  grads, new_batch_stats, scalars, logits = _member_gradients(
    method, phase, state.params, state.batch_stats, method_state, batch, step_key, weights
  )
  return _apply_gradients(
    method,
    state,
    grads,
    new_batch_stats,
    method_state,
    next_key,
    batch['label'],
    logits,
    {**scalars, **method_scalars},
  )


def _update_method_state(
  method: base.Method, phase: str, state: state_lib.TrainState, batch: dict
) -> tuple[Any, base.Aux, jax.Array, jax.Array]:
  """The method's new state, its scalars, and the next state's and this step's keys."""
  key = jax.random.wrap_key_data(state.rng)
  next_key, step_key = jax.random.split(key)
  method_state, method_scalars = method.update_method_state(
    state.params, state.batch_stats, state.method_state, batch, jax.random.fold_in(key, 1), phase
  )
  return method_state, method_scalars, next_key, step_key


def _member_gradients(
  method: base.Method,
  phase: str,
  params: Any,
  batch_stats: Any,
  method_state: Any,
  batch: dict,
  step_key: jax.Array,
  weights: dict[str, jax.Array] | None,
  member: jax.Array | None = None,
) -> tuple[Any, Any, base.Aux, jax.Array]:
  """``(gradients, new batch statistics, scalars, (M, B, K) logits)`` of the sub-models' loss;
  ``member``: of sub-model ``member``'s share alone (each output a stack of one)."""
  if member is not None:
    one = lambda t: jax.lax.dynamic_slice_in_dim(t, member, 1)  # noqa: E731
    params, batch_stats = jax.tree.map(one, params), jax.tree.map(one, batch_stats)

  def loss_fn(p: Any):
    return method.member_loss(p, batch_stats, method_state, batch, step_key, phase, weights, member)

  (_, (scalars, logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return grads, new_bs, scalars, logits


def _apply_gradients(
  method: base.Method,
  state: state_lib.TrainState,
  grads: Any,
  new_batch_stats: Any,
  method_state: Any,
  next_key: jax.Array,
  labels: jax.Array,
  logits: jax.Array,
  scalars: base.Aux,
) -> tuple[state_lib.TrainState, clu_metrics.Collection]:
  """Adam on the stacked sub-models, and the step's metrics (accuracy from all logits)."""
  new_state = state.apply_gradients(
    grads=grads,
    batch_stats=new_batch_stats,
    method_state=method_state,
    rng=jax.random.key_data(next_key),
  )
  scalars = {**scalars, 'accuracy': base.ensemble_accuracy(logits, labels)}
  metrics = metrics_class(method.metric_names).single_from_model_output(**scalars)
  return new_state, metrics


def _apply_member_gradients(
  method: base.Method,
  state: state_lib.TrainState,
  members: list[tuple[Any, Any, base.Aux, jax.Array]],
  method_state: Any,
  method_scalars: base.Aux,
  next_key: jax.Array,
  labels: jax.Array,
) -> tuple[state_lib.TrainState, clu_metrics.Collection]:
  """:func:`_apply_gradients` of the sub-models' :func:`_member_gradients`, stacked in order,
  their scalars summed."""
  stack = lambda *xs: jnp.concatenate(xs)  # noqa: E731
  grads = jax.tree.map(stack, *[m[0] for m in members])
  new_bs = jax.tree.map(stack, *[m[1] for m in members])
  scalars = jax.tree.map(lambda *xs: sum(xs), *[m[2] for m in members])
  logits = stack(*[m[3] for m in members])
  return _apply_gradients(
    method,
    state,
    grads,
    new_bs,
    method_state,
    next_key,
    labels,
    logits,
    {**scalars, **method_scalars},
  )


class PerMemberStep:
  """:func:`train_step` as three programs: the method's state update, the gradient of one
  sub-model's share of the loss (called once per sub-model, its index an argument) and Adam
  on all of them with the step's metrics."""

  def __init__(self, method: base.Method, phase: str, jit: Callable, out_sharding: Any = None):
    out = {} if out_sharding is None else {'out_shardings': out_sharding}
    self.programs = {
      'update': jit(functools.partial(_update_method_state, method, phase), **out),
      'gradients': jit(functools.partial(_member_gradients, method, phase), **out),
      'apply': jit(functools.partial(_apply_member_gradients, method), donate_argnums=(0,), **out),
    }
    # The sub-models' indices, placed like the state (replicated over every process's devices).
    self.indices = [jax.device_put(np.int32(m), out_sharding) for m in range(method.num_members)]

  def __call__(
    self, state: state_lib.TrainState, batch: dict, weights: dict | None = None
  ) -> tuple[state_lib.TrainState, clu_metrics.Collection]:
    return self.run(self.programs, state, batch, weights)

  def run(
    self, programs: dict[str, Callable], state: Any, batch: dict, weights: dict | None = None
  ) -> tuple[state_lib.TrainState, clu_metrics.Collection]:
    """One step with ``programs``: the jitted ones, or those of :meth:`lower` compiled."""
    method_state, method_scalars, next_key, step_key = programs['update'](state, batch)
    members = [
      programs['gradients'](
        state.params, state.batch_stats, method_state, batch, step_key, weights, m
      )
      for m in self.indices
    ]
    return programs['apply'](state, members, method_state, method_scalars, next_key, batch['label'])

  def lower(self, state: Any, batch: dict, weights: dict | None = None) -> dict[str, Any]:
    """The three programs lowered for these arguments (for benchmarks), by name."""
    update = self.programs['update'].trace(state, batch)
    method_state, method_scalars, next_key, step_key = update.out_info
    args = (state.params, state.batch_stats, method_state, batch, step_key, weights)
    gradients = self.programs['gradients'].trace(*args, self.indices[0])
    members = [gradients.out_info] * len(self.indices)
    apply = self.programs['apply'].trace(
      state, members, method_state, method_scalars, next_key, batch['label']
    )
    return {'update': update.lower(), 'gradients': gradients.lower(), 'apply': apply.lower()}


class LossTermGradients:
  """How much of the sub-models' gradient each weighted loss term gives, in the phase a step
  function runs: for each weight ``w`` of ``method.loss_weights()`` (a loss linear in it), the
  term's gradient ``g(weights) - g(weights, w = 0)`` against the gradient of the loss with every
  weight 0 (the cross-entropy's): ``{w}_over_ce`` the ratio of their norms, ``{w}_cosine`` their
  cosine, over all sub-models' parameters. It takes the gradient one sub-model at a time: with
  a :class:`PerMemberStep` through the step's own program (nothing new to compile), else through
  one program of one sub-model's gradient (about 1/M of a one-program step's compile time)."""

  def __init__(
    self,
    method: base.Method,
    phase: str,
    jit: Callable = jax.jit,
    out_sharding: Any = None,
    step_fn: Step | None = None,
  ):
    """``step_fn``: the run's compiled step of ``phase`` (:func:`compile_step`)."""
    out = {} if out_sharding is None else {'out_shardings': out_sharding}
    if isinstance(step_fn, PerMemberStep):
      self.gradients, self.indices = step_fn.programs['gradients'], step_fn.indices
    else:
      self.gradients = jit(functools.partial(_member_gradients, method, phase), **out)
      self.indices = [jax.device_put(np.int32(m), out_sharding) for m in range(method.num_members)]
    self.names = list(method.loss_weights())
    self.reduce = jit(_term_sums, **out)

  def __call__(
    self, state: state_lib.TrainState, batch: dict, weights: dict, key: jax.Array
  ) -> dict[str, float]:
    def grads(w: dict) -> list:
      return [
        self.gradients(state.params, state.batch_stats, state.method_state, batch, key, w, m)[0]
        for m in self.indices
      ]

    zero = {k: jnp.zeros_like(v) for k, v in weights.items()}
    ce = grads(zero)
    out = {}
    for name in self.names:
      ce_sq, term_sq, dot = (
        float(v) for v in self.reduce(ce, grads({**zero, name: weights[name]}))
      )
      out[f'{name}_over_ce'] = float(np.sqrt(term_sq / ce_sq)) if ce_sq > 0 else float('nan')
      denominator = np.sqrt(term_sq * ce_sq)
      out[f'{name}_cosine'] = dot / denominator if denominator > 0 else 0.0
    return out


def _term_sums(ce: list, total: list) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(|ce|^2, |total - ce|^2, <total - ce, ce>)`` over every leaf of the gradient lists."""
  pairs = list(zip(jax.tree.leaves(ce), jax.tree.leaves(total)))
  ce_sq = sum(jnp.sum(c**2) for c, _ in pairs)
  term_sq = sum(jnp.sum((t - c) ** 2) for c, t in pairs)
  dot = sum(jnp.sum((t - c) * c) for c, t in pairs)
  return ce_sq, term_sq, dot


def compile_step(
  method: base.Method,
  phase: str,
  jit: Callable[..., Callable] = jax.jit,
  out_sharding: Any = None,
  per_member: bool = False,
) -> Step:
  """The jit-compiled :func:`train_step` of ``phase``: ``(state, batch, weights) -> (new state,
  metrics)``, donating ``state``. ``jit``: ``jax.jit`` or the run's (compiler options);
  ``out_sharding``: of every output (the mesh's replicated sharding). ``per_member``: a
  :class:`PerMemberStep` (methods of one sub-model keep one program)."""
  if per_member and method.num_members > 1:
    return PerMemberStep(method, phase, jit, out_sharding)
  out = {} if out_sharding is None else {'out_shardings': out_sharding}
  return jit(functools.partial(train_step, method, phase), donate_argnums=(0,), **out)


def loss_weights(method: base.Method) -> dict[str, jax.Array]:
  """The method's loss weights as float32 arrays, the step's ``weights`` argument."""
  return {k: jnp.float32(v) for k, v in method.loss_weights().items()}
