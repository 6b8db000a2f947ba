"""What every training method shares: M stacked sub-models, and the :class:`Method` interface.

Every method trains an ensemble of M sub-models (``single`` and ``gaze`` on one model: M = 1)
kept as one parameter tree with a leading axis M. Adam is elementwise, so one optimiser on the
stacked tree is M independent optimisers. The cross-entropy forward pass runs in train mode
(batch statistics, updated); explanations run in eval mode with the running averages, so an
example's map depends on that example alone.

A method owns its member count, its extra state (``mimic``'s discriminator), its phases and
its losses. Its loss is a sum of the sub-models' shares, so that the training step can also
run one sub-model per program (``member``: that sub-model's index, its parameters a stack of
one) and add the shares. ``mimic_jax.training.steps`` runs one phase of any method through
this interface and never asks which method it is; adding a method is a module in this package
registered in ``mimic_jax.methods.METHODS``.

Shapes: images ``x`` float ``(B, H, W, C)``, labels ``y`` int ``(B,)``, gaze float
``(B, S, S)`` summing to 1 per example, member logits ``(M, B, K)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mimic_jax import explainers

Variables = dict[str, Any]
# Per-step scalars a method reports: loss, ce, accuracy and the method's own.
Aux = dict[str, jax.Array]


def map_members(fn: Callable, *stacked: Any, execution: str = 'unrolled') -> Any:
  """Applies ``fn`` to each sub-model's slice of the stacked pytrees ``stacked`` (leading axis
  M) and stacks the results.

  ``execution='vmap'``: one batched computation (``jax.vmap``; convolutions over stacked
  parameters become grouped convolutions). ``'unrolled'``: M separate computations in one
  program. ``'scan'``: one copy of ``fn`` run M times in a loop (``jax.lax.map``), a program
  about M times smaller to compile. All give the same numbers; which is faster depends on the
  backend (``mimic_jax.tuning`` chooses).
  """
  if execution == 'vmap':
    return jax.vmap(fn)(*stacked)
  if execution == 'scan':
    return jax.lax.map(lambda args: fn(*args), stacked)
  m = jax.tree.leaves(stacked[0])[0].shape[0]
  outs = [fn(*jax.tree.map(lambda t, i=i: t[i], stacked)) for i in range(m)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def init_ensemble(model: nn.Module, rng: jax.Array, x: jax.Array, num_models: int) -> Variables:
  """``params`` (and ``batch_stats``) of ``num_models`` independently initialised sub-models,
  stacked on axis 0. (Not the zero ``perturbations`` the models make for Grad-CAM: their
  shape is ``x``'s batch.)"""
  variables = jax.vmap(lambda k: model.init(k, x))(jax.random.split(rng, num_models))
  return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}


def eval_variables(params: Any, batch_stats: Any) -> Variables:
  """The variables of an eval-mode forward pass (BatchNorm running averages, if any)."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy, natural log."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def ensemble_prediction(member_logits: jax.Array) -> jax.Array:
  """Mean of the sub-models' log-softmax: ``(M, B, K) -> (B, K)`` (the paper's output)."""
  return jax.nn.log_softmax(member_logits, axis=-1).mean(axis=0)


def ensemble_ce(member_logits: jax.Array, y: jax.Array) -> jax.Array:
  """Sum over sub-models of their mean cross-entropies."""
  return jax.vmap(cross_entropy, in_axes=(0, None))(member_logits, y).sum()


def ensemble_accuracy(member_logits: jax.Array, y: jax.Array) -> jax.Array:
  """Accuracy of the ensemble prediction's argmax."""
  return jnp.mean(jnp.argmax(ensemble_prediction(member_logits), -1) == y)


def ensemble_log_probs(
  apply_fn: Callable, variables: Variables, x: jax.Array, execution: str = 'unrolled'
) -> jax.Array:
  """``(B, K)`` ensemble log-probabilities of stacked sub-models in eval mode."""
  logits = map_members(lambda v: apply_fn(v, x, train=False), variables, execution=execution)
  return ensemble_prediction(logits)


def member_explanations(
  apply_fn: Callable,
  variables: Variables,
  x: jax.Array,
  y: jax.Array,
  rng: jax.Array,
  *,
  explainer: str,
  explainer_kwargs: dict | None = None,
  post: dict | None = None,
  execution: str = 'unrolled',
) -> jax.Array:
  """``(M, B, h, w)`` post-processed true-class explanations of every sub-model.

  Sub-models run in eval mode inside the explanation (BatchNorm running averages), so each
  example's map depends on that example alone; gradients flow to the parameters. ``rng``: one
  key, split into one per sub-model, or those ``(M,)`` typed keys.
  """
  fn = explainers.ATTRIBUTION_EXPLAINERS[explainer]
  post = post or {'sign': 'abs', 'normalize': 'minmax'}
  rngs = rng
  if not (jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 1):
    rngs = jax.random.split(rng, jax.tree.leaves(variables)[0].shape[0])

  def one(v: Variables, k: jax.Array):
    _, attr = fn(lambda z: apply_fn(v, z, train=False), x, y, k, **(explainer_kwargs or {}))
    return explainers.postprocess(attr, **post)

  return map_members(one, variables, rngs, execution=execution)


def member_grad_cams(
  apply_fn: Callable,
  variables: Variables,
  x: jax.Array,
  y: jax.Array,
  *,
  layer: str,
  target: str = 'logit',
  execution: str = 'unrolled',
) -> jax.Array:
  """``(M, B, h, w)`` Grad-CAM of every sub-model for the classes ``y`` at ``layer``.

  ``target='logit'``: each sub-model's class logit. ``'log_softmax'``: its class
  log-probability; the mean of these maps is the Grad-CAM of the ensemble's mean log-softmax
  (the released code's ensemble target), up to the factor 1 / M, since each sub-model's
  feature map reaches that mean only through its own term.
  """
  return map_members(
    lambda v: explainers.grad_cam(apply_fn, v, x, y, layer=layer, target=target)[1],
    variables,
    execution=execution,
  )


class Method:
  """A training method: M sub-models, optional extra state, phases and losses.

  The base class is the plain ensemble: the sum of the sub-models' cross-entropies, one
  phase. Subclasses override what differs. Every hook is a pure function of its arguments
  (jit-compiled by the training step, one program per phase).
  """

  # The names a step can run under (``phase`` returns one of them).
  phases: tuple[str, ...] = ('train',)
  # The scalars every step reports (a method adds its own).
  metric_names: tuple[str, ...] = ('loss', 'ce', 'accuracy')
  # The phase whose loss holds the terms that :meth:`loss_weights` weigh (``None``: the first).
  loss_term_phase: str | None = None

  def __init__(
    self, config: ml_collections.ConfigDict, model: nn.Module, execution: str = 'unrolled'
  ):
    """``config``: the run's validated config; ``model``: one sub-model's module;
    ``execution``: how to run the stacked sub-models (:func:`map_members`)."""
    self.config = config
    self.model = model
    self.execution = execution

  @property
  def num_members(self) -> int:
    """M, the number of sub-models."""
    raise NotImplementedError

  def phase(self, step: int, steps_per_epoch: int) -> str:
    """The phase of global step ``step`` (0-based)."""
    del step, steps_per_epoch
    return self.phases[0]

  def init_method_state(self, rng: jax.Array, image_shape: tuple[int, ...]) -> Any:
    """The method's own state beside the sub-models (``None``: none)."""
    del rng, image_shape
    return None

  def update_method_state(
    self, params: Any, batch_stats: Any, method_state: Any, batch: dict, rng: jax.Array, phase: str
  ) -> tuple[Any, Aux]:
    """Updates the method's own state before the sub-models' step of ``phase``; returns it
    and scalars to report. The sub-models' parameters are read, never changed."""
    del params, batch_stats, batch, rng, phase
    return method_state, {}

  def loss_weights(self) -> dict[str, float]:
    """The weights of the loss's terms in the config (``mimic``: ``beta``; ``gaze``:
    ``weight``). The training step takes them as array arguments, not compiled constants, so
    that runs differing only in them share their compiled programs."""
    return {}

  def member_loss(
    self,
    params: Any,
    batch_stats: Any,
    method_state: Any,
    batch: dict,
    rng: jax.Array,
    phase: str,
    weights: dict[str, jax.Array] | None = None,
    member: jax.Array | None = None,
  ) -> tuple[jax.Array, tuple[Aux, jax.Array, Any]]:
    """The sub-models' loss in ``phase`` and ``(scalars, (M, B, K) train-mode logits, new
    batch statistics)``; differentiated with respect to ``params``. ``weights``:
    :meth:`loss_weights` as arrays (``None``: the config's values). ``member``: the index of
    the one sub-model that ``params`` hold (a stack of one); the loss and the scalars are then
    its shares, which summed over the sub-models give the loss and scalars of all."""
    del method_state, rng, phase, weights, member
    logits, new_bs = self.train_forward(params, batch_stats, batch['image'])
    ce = ensemble_ce(logits, batch['label'])
    return ce, (self.scalars(ce, ce), logits, new_bs)

  def monitor(
    self,
    params: Any,
    batch_stats: Any,
    method_state: Any,
    batch: dict,
    rng: jax.Array,
  ) -> Aux:
    """Scalars that show the method's mechanism at work on a fixed validation batch (logged
    at every validation); ``{}``: the method has none to show."""
    del params, batch_stats, method_state, batch, rng
    return {}

  def display_explanations(
    self,
    params: Any,
    batch_stats: Any,
    method_state: Any,
    x: jax.Array,
    y: jax.Array,
    rng: jax.Array,
  ) -> jax.Array:
    """``(M, B, h, w)`` the explanation this method trains with (for TensorBoard); methods
    that train none show |input gradients| of the true class."""
    del method_state
    post = {'sign': 'abs', 'channels': 'sum', 'normalize': 'none'}
    return self.explanations(params, batch_stats, x, y, rng, 'input_gradients', {}, post)

  # ---- helpers for subclasses ------------------------------------------------------------

  def train_forward(self, params: Any, batch_stats: Any, x: jax.Array) -> tuple[jax.Array, Any]:
    """``(M, B, K)`` train-mode logits and the updated batch statistics."""
    apply = self.model.apply
    if not batch_stats:
      logits = map_members(
        lambda p: apply({'params': p}, x, train=True), params, execution=self.execution
      )
      return logits, {}

    def one(p: Any, bs: Any):
      logits, updates = apply(
        {'params': p, 'batch_stats': bs}, x, train=True, mutable=['batch_stats']
      )
      return logits, updates['batch_stats']

    return map_members(one, params, batch_stats, execution=self.execution)

  def train_forward_and_input_gradients(
    self, params: Any, x: jax.Array, cotangent: jax.Array | Callable[[jax.Array], jax.Array]
  ) -> tuple[jax.Array, jax.Array]:
    """``(M, B, K)`` logits and ``(M, B, H, W, C)`` input gradients from one forward pass per
    sub-model. ``cotangent``: the true classes ``y`` ``(B,)`` (gradients of their logits) or a
    function of the logits giving the ``(B, K)`` cotangent to pull back. Only for models
    without batch statistics, where train and eval mode are the same function, so the
    explanation can share the cross-entropy's forward pass (the numbers of two separate
    passes, tested)."""
    if not callable(cotangent):
      y = cotangent
      cotangent = lambda logits: jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)

    def one(p: Any) -> tuple[jax.Array, jax.Array]:
      logits, vjp = jax.vjp(lambda z: self.model.apply({'params': p}, z, train=True), x)
      return logits, vjp(cotangent(logits))[0]

    return map_members(one, params, execution=self.execution)

  def explanations(
    self,
    params: Any,
    batch_stats: Any,
    x: jax.Array,
    y: jax.Array,
    rng: jax.Array,
    explainer: str,
    explainer_kwargs: dict,
    post: dict,
    member: jax.Array | None = None,
  ) -> jax.Array:
    """:func:`member_explanations` of this method's sub-models (``member``: of the one
    sub-model ``params`` hold, with the key it has among all)."""
    if member is not None:
      rng = jax.lax.dynamic_slice_in_dim(jax.random.split(rng, self.num_members), member, 1)
    return member_explanations(
      self.model.apply,
      eval_variables(params, batch_stats),
      x,
      y,
      rng,
      explainer=explainer,
      explainer_kwargs=explainer_kwargs,
      post=post,
      execution=self.execution,
    )

  def scalars(self, loss: jax.Array, ce: jax.Array, **extra: jax.Array) -> Aux:
    """The loss's scalars, each a sum of the sub-models' shares: every name of
    ``metric_names`` but ``accuracy`` (the step's, from all the logits), zero where not
    given."""
    given = {'loss': loss, 'ce': ce, **extra}
    return {k: given.get(k, jnp.zeros(())) for k in self.metric_names if k != 'accuracy'}


def optimizer(learning_rate: float) -> optax.GradientTransformation:
  """The optimiser of the sub-models and of any extra model: Adam, its learning rate held in
  the optimiser state as an array (``optax.inject_hyperparams``), not compiled into the step,
  so that runs differing only in it share their compiled programs."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
