"""Train state and the pure, jit-compiled step functions (one per phase).

Every method is an ensemble of M stacked sub-models (``single`` and ``gaze`` on one model use
M = 1), so one code path serves all: parameters and BatchNorm statistics carry a leading axis
M and run under ``jax.vmap`` (or unrolled, ``config.ensemble.execution``); Adam is
elementwise, so one optimiser on the stacked tree is M
independent optimisers. The forward pass that gives the cross-entropy runs in train mode
(batch statistics, updated); explanations run in eval mode with the running averages, so each
example's map depends on that example alone.

Steps are written for one device, global batch semantics; ``train.py`` jits them over a mesh.
(No ``from __future__ import annotations`` here: clu reads the metric annotations.)
"""


from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics as clu_metrics
from flax.training import train_state

from mimic_jax import explain
from mimic_jax import methods


class TrainState(train_state.TrainState):
  """Stacked sub-models, their BatchNorm statistics, the discriminator (``mimic`` only) and
  the step's random key (raw uint32 ``[2]``, checkpointable)."""
  batch_stats: Any
  rng: jax.Array
  disc: train_state.TrainState | None = None


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  ce: clu_metrics.Average.from_output('ce')
  accuracy: clu_metrics.Average.from_output('accuracy')
  penalty: clu_metrics.Average.from_output('penalty')
  disc_ce: clu_metrics.Average.from_output('disc_ce')


def num_members(config: ml_collections.ConfigDict) -> int:
  """M: 1 for ``single``, ``ensemble.num_models`` for ``ensemble``/``mimic``,
  ``gaze.num_models`` for ``gaze``."""
  return {'single': 1, 'ensemble': config.ensemble.num_models,
          'mimic': config.ensemble.num_models, 'gaze': config.gaze.num_models}[config.method]


def _optimizer(lr: float) -> optax.GradientTransformation:
  return optax.adam(lr)


def create_state(config: ml_collections.ConfigDict, model, image_shape, rng) -> TrainState:
  """Initialises M sub-models (independent keys) and, for ``mimic``, the discriminator."""
  init_rng, disc_rng, step_rng = jax.random.split(rng, 3)
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = methods.init_ensemble(model, init_rng, x, num_members(config))
  disc = None
  if config.method == 'mimic':
    d = methods.Discriminator(num_models=num_members(config), hidden=config.mimic.disc_hidden)
    pool = config.mimic.post.pool
    side = image_shape[0] // pool
    dparams = d.init(disc_rng, jnp.zeros((1, side, side)))['params']
    disc = train_state.TrainState.create(apply_fn=d.apply, params=dparams,
                                         tx=_optimizer(config.mimic.disc_learning_rate))
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           tx=_optimizer(config.learning_rate),
                           batch_stats=variables.get('batch_stats', {}), disc=disc,
                           rng=jax.random.key_data(step_rng))


def _eval_variables(params, batch_stats):
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def _train_forward(state: TrainState, params, x, execution: str):
  """``(M, B, K)`` train-mode logits and the updated batch statistics."""
  if not state.batch_stats:
    return methods.map_members(lambda p: state.apply_fn({'params': p}, x, train=True), params,
                               execution=execution), {}

  def one(p, bs):
    logits, upd = state.apply_fn({'params': p, 'batch_stats': bs}, x, train=True,
                                 mutable=['batch_stats'])
    return logits, upd['batch_stats']

  return methods.map_members(one, params, state.batch_stats, execution=execution)


def _maps(config, state: TrainState, params, x, y, rng):
  mc = config.mimic
  return methods.member_explanations(
      state.apply_fn, _eval_variables(params, state.batch_stats), x, y, rng,
      explainer=mc.explainer, explainer_kwargs=mc.explainer_kwargs.to_dict(),
      post=mc.post.to_dict(), execution=config.ensemble.execution)


def _accuracy(member_logits, y):
  return jnp.mean(jnp.argmax(methods.ensemble_prediction(member_logits), -1) == y)


# Explainers evaluated at the input itself, whose forward pass is the CE forward's when the
# model has no batch statistics (train and eval mode are then the same function).
_AT_INPUT = {'input_gradients': lambda x, g: g, 'gradient_x_input': lambda x, g: x * g}


def shares_forward(config: ml_collections.ConfigDict, state: TrainState,
                   adversarial: bool = True) -> bool:
  """Whether the explanation reuses the CE forward pass (one forward per sub-model instead of
  two): models without BatchNorm, and the gaze KLD penalty or a mimic explainer at x."""
  if state.batch_stats:
    return False
  if config.method == 'gaze':
    return config.gaze.penalty == 'kld'
  return config.method == 'mimic' and adversarial and config.mimic.explainer in _AT_INPUT


def member_loss(config: ml_collections.ConfigDict, state: TrainState, params, batch: dict,
                rng, adversarial: bool = True):
  """The sub-models' loss and ``(metrics, new batch statistics)``; see :func:`member_step`."""
  x, y = batch['image'], batch['label']
  execution = config.ensemble.execution
  grads = None
  if shares_forward(config, state, adversarial):
    def one(p):
      return explain.input_gradients(lambda z: state.apply_fn({'params': p}, z, train=True),
                                     x, y)
    logits, grads = methods.map_members(one, params, execution=execution)  # (M, B, ...)
    new_bs = {}
  else:
    logits, new_bs = _train_forward(state, params, x, execution)
  ce = methods.ensemble_ce(logits, y)
  aux = {'ce': ce, 'penalty': jnp.zeros(()), 'disc_ce': jnp.zeros(()),
         'accuracy': _accuracy(logits, y)}
  loss = ce
  if config.method == 'gaze':
    if grads is not None:
      pen = methods.map_members(lambda g: methods.gradient_kld(g, batch['gaze']), grads,
                                execution=execution)
    else:
      pen = methods.map_members(
          lambda v: methods.gaze_penalty(state.apply_fn, v, x, y, batch['gaze'],
                                         penalty=config.gaze.penalty),
          _eval_variables(params, state.batch_stats), execution=execution)
    aux['penalty'] = pen.sum()
    loss = ce + config.gaze.weight * aux['penalty']
  elif config.method == 'mimic' and adversarial:
    if grads is not None:
      attr = _AT_INPUT[config.mimic.explainer](x, grads)
      maps = methods.map_members(lambda a: explain.postprocess(a, **config.mimic.post.to_dict()),
                                 attr, execution=execution)
    else:
      maps = _maps(config, state, params, x, y, rng)
    loss, mimic_aux = methods.mimic_member_loss(
        logits, maps, y, state.disc.apply_fn, state.disc.params, beta=config.mimic.beta,
        objective=config.mimic.objective,
        explanation_gradient=config.mimic.explanation_gradient)
    aux['disc_ce'] = mimic_aux['disc_ce']
  aux['loss'] = loss
  return loss, (aux, new_bs)


def batch_chunks(config: ml_collections.ConfigDict, state: TrainState, batch_size: int,
                 adversarial: bool = True) -> int:
  """K, the equal sub-batches whose losses :func:`member_step` computes as independent
  computations in one program (the loss is their mean, so the gradient is the whole batch's).

  ``config.batch_chunks``: ``K >= 1``, or ``0`` (auto): 2 on a single CPU device for a step
  of one sub-model through its explanation at the input (:func:`shares_forward`: the ``gaze``
  KLD penalty of a model without batch statistics), else 1. XLA:CPU splits each kernel of a
  program over the cores, and along the double-backprop step's chain of small fusions the
  cores wait on each other; two independent chains let its executor overlap them (5-19% off
  the step, ``benchmarks/RESULTS.md``, change 26). Chunks would change BatchNorm statistics, so
  ``K > 1`` with batch statistics is an error, as is a batch that ``K`` does not divide.
  """
  k = config.get('batch_chunks', 0)
  if k == 0:
    auto = (jax.default_backend() == 'cpu' and jax.device_count() == 1
            and num_members(config) == 1 and shares_forward(config, state, adversarial)
            and batch_size % 2 == 0)
    return 2 if auto else 1
  if k < 0 or batch_size % k:
    raise ValueError(f'config.batch_chunks={k} must be 0 (auto) or a positive divisor of the '
                     f'batch ({batch_size})')
  if k > 1 and state.batch_stats:
    raise ValueError(f'config.batch_chunks={k} needs a model without batch statistics '
                     f'(chunks would change them); use config.model.norm="group" or 1')
  return k


def member_step(config: ml_collections.ConfigDict, state: TrainState, batch: dict,
                adversarial: bool = True):
  """One update of the sub-models.

  ``single``/``ensemble``: sum of CEs. ``gaze``: plus ``gaze.weight`` times the sum over
  sub-models of the gaze penalty. ``mimic``: plus ``beta`` times the adversarial term when
  ``adversarial`` (else CE only: the discriminator phase of the alternation). For models
  without batch statistics the explanation at x shares the CE forward
  (:func:`shares_forward`); the numbers are the same. With :func:`batch_chunks` ``K > 1`` the
  loss and metrics are the means of those of K equal sub-batches (chunk ``i`` draws its
  explainer noise from the step key folded with ``i``).

  Returns ``(new_state, TrainMetrics)``.
  """
  rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
  k = batch_chunks(config, state, batch['image'].shape[0], adversarial)

  def loss_fn(params):
    if k == 1:
      return member_loss(config, state, params, batch, step_rng, adversarial)
    parts = [member_loss(config, state, params,
                         jax.tree.map(lambda a, i=i: a.reshape(k, -1, *a.shape[1:])[i], batch),
                         jax.random.fold_in(step_rng, i), adversarial) for i in range(k)]
    return jax.tree.map(lambda *v: sum(v) / k, *parts)  # no batch statistics: {}

  (_, (aux, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=new_bs,
                                    rng=jax.random.key_data(rng))
  return new_state, TrainMetrics.single_from_model_output(**aux)


def disc_step(config: ml_collections.ConfigDict, state: TrainState, batch: dict):
  """The discriminator phase of ``mimic``: sub-models take a CE step and the discriminator a
  step on their (detached) explanations."""
  x, y = batch['image'], batch['label']
  maps = jax.lax.stop_gradient(
      _maps(config, state, state.params, x, y, jax.random.fold_in(
          jax.random.wrap_key_data(state.rng), 1)))
  d_ce, d_grads = jax.value_and_grad(
      lambda p: methods.discriminator_ce(state.disc.apply_fn, p, maps))(state.disc.params)
  state = state.replace(disc=state.disc.apply_gradients(grads=d_grads))
  state, m = member_step(config, state, batch, adversarial=False)
  return state, m.replace(disc_ce=clu_metrics.Average.from_model_output(d_ce))


def predict(state: TrainState, x, execution: str = 'auto'):
  """``(B, K)`` ensemble log-probabilities (mean of the sub-models' log-softmax), eval mode."""
  logits = methods.ensemble_logits(state.apply_fn,
                                   _eval_variables(state.params, state.batch_stats), x,
                                   execution=execution)
  return methods.ensemble_prediction(logits)


def gradcam_maps(state: TrainState, x, y, layer: str = 'features', execution: str = 'auto'):
  """``(M, B, h, w)`` Grad-CAM of every sub-model for the classes ``y``."""
  variables = _eval_variables(state.params, state.batch_stats)
  return methods.map_members(
      lambda v: explain.grad_cam(state.apply_fn, v, x, y, layer=layer)[1], variables,
      execution=execution)
