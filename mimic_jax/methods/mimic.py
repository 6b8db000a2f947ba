"""``mimic``, the paper's explanation ensemble (Watson et al., WACV 2023).

M sub-models and a discriminator (an MLP ``F -> hidden -> M``) that guesses which sub-model
made a true-class explanation map. Per sub-model the training explanation
(``config.mimic.explainer``, GradientSHAP by default) is post-processed (absolute value,
per-sample min-max, average-pooled by ``post.pool``). Phases:

- ``discriminator``: the discriminator takes a step on the sub-models' detached maps
  (minimising its cross-entropy ``CE_D``); the sub-models take a cross-entropy step.
- ``adversarial``: the sub-models minimise ``sum_m CE_m - beta * CE_D``
  (``objective='neg_ce'``) or ``sum_m CE_m + beta * CE(D, uniform)`` (``'confusion'``) with the
  discriminator fixed. The gradient flows through the explanation (double backprop,
  ``explanation_gradient='through'``); ``'stop'`` reproduces the released PyTorch code, where
  captum's attributions carry no graph and the adversarial term never reaches the sub-models.
- ``cross_entropy``: the sub-models take a cross-entropy step, the discriminator rests (only
  with ``first_phase='adversarial'`` and ``period > 2``).

The schedule (:meth:`Mimic.phase`) counts epochs (``alternation='epoch'``, the paper) or steps
from 0. ``first_phase='discriminator'`` (ours): the discriminator phase when the index is a
multiple of ``period``, else adversarial. ``first_phase='adversarial'`` (the released code,
whose epochs count from 1 and whose phase is ``epoch % period``: 1 adversarial, 0
discriminator, anything else neither): adversarial when ``index % period == 0``, the
discriminator when ``index % period == period - 1``, else ``cross_entropy``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from mimic_jax import explainers
from mimic_jax.explainers import postprocessing
from mimic_jax.methods import base

# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {
  'mimic.objective': ('neg_ce', 'confusion'),
  'mimic.alternation': ('epoch', 'step'),
  'mimic.first_phase': ('discriminator', 'adversarial'),
  'mimic.explanation_gradient': ('through', 'stop'),
  'mimic.disc_arch': ('mlp', 'conv'),
  'mimic.explainer': tuple(explainers.ATTRIBUTION_EXPLAINERS),
  'mimic.post.sign': postprocessing.SIGNS,
  'mimic.post.normalize': postprocessing.NORMALIZATIONS,
  'mimic.post.channels': postprocessing.CHANNEL_REDUCTIONS,
}
# Explainers evaluated at the input itself: for models without batch statistics their
# forward pass is the cross-entropy's (train and eval mode are the same function).
_AT_INPUT = {'input_gradients': lambda x, g: g, 'gradient_x_input': lambda x, g: x * g}


class Discriminator(nn.Module):
  """Guesses which of ``num_models`` sub-models made each ``(N, h, w)`` explanation map:
  ``(N, M)`` logits.

  ``arch='mlp'``: the paper's MLP ``F -> hidden -> M`` on the flattened map (the released code
  runs it on full-resolution maps, ``post.pool=1``, ``hidden=512``). ``'conv'``: two 3 x 3
  convolutions of stride 2 (``hidden // 4`` and ``hidden // 2`` channels, ReLU), then a dense
  layer to M, for maps whose difference is a local pattern rather than a pixel layout.
  """

  num_models: int
  hidden: int = 512
  arch: str = 'mlp'

  @nn.compact
  def __call__(self, maps: jax.Array) -> jax.Array:
    if self.arch == 'conv':
      h = maps[..., None]
      for features in (max(self.hidden // 4, 1), max(self.hidden // 2, 1)):
        h = nn.relu(nn.Conv(features, (3, 3), strides=(2, 2))(h))
    else:
      h = nn.relu(nn.Dense(self.hidden)(maps.reshape(maps.shape[0], -1)))
    return nn.Dense(self.num_models)(h.reshape(h.shape[0], -1))


def make_discriminator(mimic_config: Any, num_models: int) -> Discriminator:
  """The discriminator that ``config.mimic`` describes (``disc_arch``, ``disc_hidden``)."""
  return Discriminator(
    num_models=num_models, hidden=mimic_config.disc_hidden, arch=mimic_config.disc_arch
  )


def discriminator_logits(disc_apply: Any, disc_params: Any, maps: jax.Array) -> jax.Array:
  """``(M * B, M)`` discriminator logits of ``(M, B, h, w)`` maps, model-major."""
  m, b = maps.shape[:2]
  return disc_apply({'params': disc_params}, maps.reshape(m * b, *maps.shape[2:]))


def discriminator_ce(
  disc_apply: Any, disc_params: Any, maps: jax.Array, member: jax.Array | None = None
) -> jax.Array:
  """CE of the discriminator on ``(M, B, ...)`` maps, labels = sub-model index (model-major).

  ``member``: ``maps`` ``(1, B, ...)`` are sub-model ``member``'s alone, and the result is
  their share of the CE over all ``M`` sub-models' maps (the shares sum to it).
  """
  m, b = maps.shape[:2]
  logits = discriminator_logits(disc_apply, disc_params, maps)
  if member is None:
    return base.cross_entropy(logits, jnp.repeat(jnp.arange(m), b))
  num_models = logits.shape[-1]
  return base.cross_entropy(logits, jnp.full((b,), member)) / num_models


def adversarial_term(
  disc_apply: Any,
  disc_params: Any,
  maps: jax.Array,
  objective: str = 'neg_ce',
  member: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """``(adversarial term, CE_D)`` of the sub-models' maps against a fixed discriminator:
  ``-CE_D`` (``'neg_ce'``, the paper) or the CE of the discriminator's prediction against the
  uniform distribution over sub-models (``'confusion'``). ``member``: the shares of sub-model
  ``member``'s maps alone (:func:`discriminator_ce`)."""
  d_ce = discriminator_ce(disc_apply, disc_params, maps, member)
  if objective == 'neg_ce':
    return -d_ce, d_ce
  logits = discriminator_logits(disc_apply, disc_params, maps)
  num_models = logits.shape[-1]
  uniform = jnp.full_like(logits, 1.0 / num_models)
  confusion = optax.softmax_cross_entropy(logits, uniform).mean()
  return (confusion if member is None else confusion / num_models), d_ce


def discriminator_steps(
  disc: train_state.TrainState, maps: jax.Array, steps: int
) -> tuple[train_state.TrainState, base.Aux]:
  """``steps`` Adam steps of the discriminator on the detached ``(M, B, h, w)`` maps of one
  batch; returns it and ``{'disc_ce': CE_D before the first step}``."""

  def one(d: train_state.TrainState, _: None) -> tuple[train_state.TrainState, jax.Array]:
    d_ce, grads = jax.value_and_grad(lambda p: discriminator_ce(d.apply_fn, p, maps))(d.params)
    return d.apply_gradients(grads=grads), d_ce

  disc, ces = jax.lax.scan(one, disc, None, length=steps)
  return disc, {'disc_ce': ces[0]}


class Mimic(base.Method):
  """The explanation ensemble: ``ensemble.num_models`` sub-models and a discriminator."""

  phases = ('discriminator', 'adversarial', 'cross_entropy')
  loss_term_phase = 'adversarial'
  metric_names = base.Method.metric_names + ('disc_ce',)

  @property
  def num_members(self) -> int:
    return self.config.ensemble.num_models

  def phase(self, step: int, steps_per_epoch: int) -> str:
    mc = self.config.mimic
    index = step // steps_per_epoch if mc.alternation == 'epoch' else step
    if mc.first_phase == 'discriminator':
      return 'discriminator' if index % mc.period == 0 else 'adversarial'
    if index % mc.period == 0:
      return 'adversarial'
    return 'discriminator' if index % mc.period == mc.period - 1 else 'cross_entropy'

  def init_method_state(
    self, rng: jax.Array, image_shape: tuple[int, ...]
  ) -> train_state.TrainState:
    """The discriminator and its optimiser."""
    mc = self.config.mimic
    disc = make_discriminator(mc, self.num_members)
    side = image_shape[0] // mc.post.pool
    params = disc.init(rng, jnp.zeros((1, side, side)))['params']
    return train_state.TrainState.create(
      apply_fn=disc.apply, params=params, tx=base.optimizer(mc.disc_learning_rate)
    )

  def training_explanations(
    self,
    params: Any,
    batch_stats: Any,
    x: jax.Array,
    y: jax.Array,
    rng: jax.Array,
    member: jax.Array | None = None,
  ) -> jax.Array:
    """``(M, B, h, w)`` post-processed training explanations, differentiable in ``params``."""
    mc = self.config.mimic
    kwargs, post = mc.explainer_kwargs.to_dict(), mc.post.to_dict()
    return self.explanations(params, batch_stats, x, y, rng, mc.explainer, kwargs, post, member)

  def display_explanations(
    self,
    params: Any,
    batch_stats: Any,
    method_state: Any,
    x: jax.Array,
    y: jax.Array,
    rng: jax.Array,
  ) -> jax.Array:
    del method_state
    return self.training_explanations(params, batch_stats, x, y, rng)

  def update_method_state(
    self, params: Any, batch_stats: Any, method_state: Any, batch: dict, rng: jax.Array, phase: str
  ) -> tuple[Any, base.Aux]:
    if phase != 'discriminator':
      return method_state, {}
    maps = jax.lax.stop_gradient(
      self.training_explanations(params, batch_stats, batch['image'], batch['label'], rng)
    )
    return discriminator_steps(method_state, maps, self.config.mimic.disc_steps)

  def monitor(
    self,
    params: Any,
    batch_stats: Any,
    method_state: Any,
    batch: dict,
    rng: jax.Array,
  ) -> base.Aux:
    """The game on a fixed batch of validation images: the discriminator's accuracy
    (``disc_accuracy``, chance 1/M) and cross-entropy (``disc_ce``) on the sub-models' training
    maps, and the mean over images and sub-model pairs of the Pearson correlation of their maps
    (``map_correlation``). Empty when ``config.mimic.monitor`` is off. (The adversarial term's
    share of the gradient: ``steps.LossTermGradients``.)"""
    mc, disc = self.config.mimic, method_state
    if not mc.monitor:
      return {}
    maps = self.training_explanations(params, batch_stats, batch['image'], batch['label'], rng)
    m, b = maps.shape[:2]
    logits = discriminator_logits(disc.apply_fn, disc.params, maps)
    labels = jnp.repeat(jnp.arange(m), b)
    flat = maps.reshape(m, b, -1)
    z = (flat - flat.mean(-1, keepdims=True)) / (flat.std(-1, keepdims=True) + 1e-12)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    return {
      'disc_accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
      'disc_ce': base.cross_entropy(logits, labels),
      'map_correlation': jnp.mean(jnp.stack([(z[i] * z[j]).mean(-1) for i, j in pairs])),
    }

  def shares_forward(self, batch_stats: Any) -> bool:
    """Whether the training explanation reuses the cross-entropy's forward pass."""
    return not batch_stats and self.config.mimic.explainer in _AT_INPUT

  def loss_weights(self) -> dict[str, float]:
    return {'beta': self.config.mimic.beta}

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
  ) -> tuple[jax.Array, tuple[base.Aux, jax.Array, Any]]:
    if phase != 'adversarial':  # the discriminator or cross_entropy phase: CE only
      return super().member_loss(params, batch_stats, method_state, batch, rng, phase)
    beta = (weights or self.loss_weights())['beta']
    mc, disc = self.config.mimic, method_state
    x, y = batch['image'], batch['label']
    if self.shares_forward(batch_stats):
      logits, grads = self.train_forward_and_input_gradients(params, x, y)
      new_bs = {}
      post = mc.post.to_dict()
      maps = base.map_members(
        lambda g: explainers.postprocess(_AT_INPUT[mc.explainer](x, g), **post),
        grads,
        execution=self.execution,
      )
    else:
      logits, new_bs = self.train_forward(params, batch_stats, x)
      maps = self.training_explanations(params, batch_stats, x, y, rng, member)
    if mc.explanation_gradient == 'stop':
      maps = jax.lax.stop_gradient(maps)
    ce = base.ensemble_ce(logits, y)
    adversarial, d_ce = adversarial_term(disc.apply_fn, disc.params, maps, mc.objective, member)
    loss = ce + beta * adversarial
    return loss, (self.scalars(loss, ce, disc_ce=d_ce), logits, new_bs)
