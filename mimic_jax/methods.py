"""Training objectives: ``single``, ``ensemble``, ``mimic`` (explanation ensemble) and ``gaze``.

Ensembles keep their M sub-models as one parameter tree with a leading axis M and run them
with ``jax.vmap`` (or unrolled, see :func:`map_members`). Every loss here is a pure function of parameters and a batch, so one
``jax.value_and_grad`` gives the update; the ``mimic`` sub-model loss contains an explanation
(``jax.vjp`` inside), so its gradient is double backprop.

Shapes: images ``x`` float32 ``(B, H, W, C)``, labels ``y`` int ``(B,)``, gaze float32
``(B, S, S)`` summing to 1 per example.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mimic_jax import explain

KLD_EPS = 2.220446049250313e-16  # float64 machine epsilon, as the MIT saliency benchmark


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy, natural log."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def resolve_execution(execution: str) -> str:
  """``'auto'`` -> ``'vmap'`` on a single TPU device, else ``'unrolled'``; other values
  unchanged.

  On a mesh of several devices vmap's grouped convolutions do not keep the batch split: XLA's
  SPMD partitioner all-gathers the batch for every convolution with ``feature_group_count >
  1`` and runs it whole on each device (openxla/xla#47945; 0.80 of one device's FLOPs per
  device on 2 devices for the CPU config's ensembles, unrolled 0.50; benchmarks/RESULTS.md).
  """
  if execution != 'auto':
    return execution
  single_tpu = jax.default_backend() == 'tpu' and jax.device_count() == 1
  return 'vmap' if single_tpu else 'unrolled'


def map_members(fn: Callable, *stacked, execution: str = 'vmap'):
  """Applies ``fn`` to each sub-model's slice of the stacked pytrees ``stacked`` (leading axis
  M) and stacks the results.

  ``execution='vmap'``: one batched computation (``jax.vmap``); convolutions over stacked
  parameters become grouped convolutions. ``'unrolled'``: M separate computations in one
  program. Second-order gradients of the grouped convolutions are slow on XLA:CPU (13.2 s vs
  1.87 s for 3 tiny ResNets' GradientSHAP step) and on XLA:GPU did not compile in 6 minutes
  for 3 DenseNet-121s (85 GB planned, 8 GB unrolled; benchmarks/RESULTS.md).
  ``'auto'``: :func:`resolve_execution`.
  """
  execution = resolve_execution(execution)
  if execution == 'vmap':
    return jax.vmap(fn)(*stacked)
  if execution != 'unrolled':
    raise ValueError(f'execution={execution!r}; use "vmap", "unrolled" or "auto"')
  m = jax.tree.leaves(stacked[0])[0].shape[0]
  outs = [fn(*jax.tree.map(lambda t, i=i: t[i], stacked)) for i in range(m)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def init_ensemble(model: nn.Module, rng: jax.Array, x: jax.Array, num_models: int) -> dict:
  """``params`` (and ``batch_stats``) of ``num_models`` independently initialised sub-models,
  stacked on axis 0. (Not the zero ``perturbations`` the models make for Grad-CAM: their
  shape is ``x``'s batch.)"""
  variables = jax.vmap(lambda k: model.init(k, x))(jax.random.split(rng, num_models))
  return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}


def ensemble_logits(apply_fn: Callable, variables: dict, x: jax.Array,
                    execution: str = 'vmap') -> jax.Array:
  """``(M, B, K)`` logits of stacked sub-models in eval mode."""
  return map_members(lambda v: apply_fn(v, x, train=False), variables, execution=execution)


def ensemble_prediction(member_logits: jax.Array) -> jax.Array:
  """Mean of the sub-models' log-softmax: ``(M, B, K) -> (B, K)`` (the paper's output)."""
  return jax.nn.log_softmax(member_logits, axis=-1).mean(axis=0)


def ensemble_ce(member_logits: jax.Array, y: jax.Array) -> jax.Array:
  """Sum over sub-models of their mean cross-entropies."""
  return jax.vmap(cross_entropy, in_axes=(0, None))(member_logits, y).sum()


class Discriminator(nn.Module):
  """MLP ``F -> hidden -> M`` guessing which sub-model made a flattened explanation."""
  num_models: int
  hidden: int = 512

  @nn.compact
  def __call__(self, maps: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(self.hidden)(maps.reshape(maps.shape[0], -1)))
    return nn.Dense(self.num_models)(h)


def member_explanations(apply_fn: Callable, variables: dict, x, y, rng, *,
                        explainer: str = 'gradient_shap', explainer_kwargs: dict | None = None,
                        post: dict | None = None, execution: str = 'vmap') -> jax.Array:
  """``(M, B, h, w)`` post-processed true-class explanations of every sub-model.

  Sub-models run in eval mode inside the explanation (BatchNorm running averages), so each
  example's map depends on that example alone; gradients flow to the parameters.
  """
  fn = explain.ATTRIBUTION_EXPLAINERS[explainer]
  post = post or {'sign': 'abs', 'normalize': 'minmax'}
  rngs = jax.random.split(rng, jax.tree.leaves(variables)[0].shape[0])

  def one(v, k):
    _, attr = fn(lambda z: apply_fn(v, z, train=False), x, y, k, **(explainer_kwargs or {}))
    return explain.postprocess(attr, **post)

  return map_members(one, variables, rngs, execution=execution)


def discriminator_ce(disc_apply: Callable, disc_params: dict, maps: jax.Array) -> jax.Array:
  """CE of the discriminator on ``(M, B, ...)`` maps, labels = sub-model index (model-major)."""
  m, b = maps.shape[:2]
  logits = disc_apply({'params': disc_params}, maps.reshape(m * b, *maps.shape[2:]))
  return cross_entropy(logits, jnp.repeat(jnp.arange(m), b))


def mimic_member_loss(member_logits: jax.Array, maps: jax.Array, y: jax.Array,
                      disc_apply: Callable, disc_params: dict, *, beta: float = 1.0,
                      objective: str = 'neg_ce', explanation_gradient: str = 'through'):
  """Sub-models' loss of the explanation ensemble: ``sum_m CE_m + beta * adversarial``.

  Args:
    member_logits: ``(M, B, K)`` logits of the sub-models (train mode in training).
    maps: ``(M, B, h, w)`` their explanations from :func:`member_explanations`, still
      differentiable with respect to the sub-models' parameters.
    y: ``(B,)`` labels.
    disc_apply, disc_params: the discriminator (held fixed here).
    beta: weight of the adversarial term.
    objective: ``'neg_ce'`` (the paper): adversarial = ``-CE_D``; ``'confusion'``: CE of the
      discriminator's prediction against the uniform distribution over sub-models.
    explanation_gradient: ``'through'`` (double backprop) or ``'stop'``, which cuts the
      gradient at the explanation as the released PyTorch code did (captum builds no graph)
      and so leaves exactly the ``beta = 0`` gradient.

  Returns:
    ``(loss, aux)`` with ``aux = {'ce', 'disc_ce'}``.
  """
  ce = ensemble_ce(member_logits, y)
  if explanation_gradient == 'stop':
    maps = jax.lax.stop_gradient(maps)
  elif explanation_gradient != 'through':
    raise ValueError(f'explanation_gradient={explanation_gradient!r}; use "through" or "stop"')
  d_ce = discriminator_ce(disc_apply, disc_params, maps)
  if objective == 'neg_ce':
    adversarial = -d_ce
  elif objective == 'confusion':
    m, b = maps.shape[:2]
    logits = disc_apply({'params': disc_params}, maps.reshape(m * b, *maps.shape[2:]))
    adversarial = optax.softmax_cross_entropy(logits, jnp.full_like(logits, 1.0 / m)).mean()
  else:
    raise ValueError(f'objective={objective!r}; use "neg_ce" or "confusion"')
  return ce + beta * adversarial, {'ce': ce, 'disc_ce': d_ce}


def kld_loss(saliency: jax.Array, gaze: jax.Array) -> jax.Array:
  """Mean over the batch of MIT KLD(gaze || saliency): both sum-normalised per example,
  ``sum G log(eps + G / (S + eps))``. ``saliency`` and ``gaze`` are ``(B, S, S)``."""
  s = saliency / jnp.maximum(saliency.sum(axis=(1, 2), keepdims=True), KLD_EPS)
  g = gaze / jnp.maximum(gaze.sum(axis=(1, 2), keepdims=True), KLD_EPS)
  return jnp.mean(jnp.sum(g * jnp.log(KLD_EPS + g / (s + KLD_EPS)), axis=(1, 2)))


def gradient_kld(grads: jax.Array, gaze: jax.Array) -> jax.Array:
  """The ``kld`` gaze penalty from input gradients ``(B, H, W, C)``: |gradient| summed over
  channels, average-pooled to the ``(B, S, S)`` gaze grid, MIT KLD(gaze || it)."""
  sal = explain.postprocess(grads, sign='abs', normalize='none',
                            pool=grads.shape[1] // gaze.shape[1])
  return kld_loss(sal, gaze)


def gaze_penalty(apply_fn: Callable, variables: dict, x, y, gaze, *,
                 penalty: str = 'kld') -> jax.Array:
  """Gaze-alignment penalty of one model (``jax.vmap`` it over an ensemble), eval mode.

  ``penalty='kld'``: MIT KLD(gaze || |input gradient of the true-class logit| summed over
  channels and average-pooled to the gaze grid). ``'rrr'``: right for the right reasons (Ross
  et al. 2017), the squared input gradient of the summed log-probabilities weighted by
  ``1 - gaze / max(gaze)`` (the regions the radiologist did not look at), summed over pixels.
  Both are differentiable with respect to the parameters (double backprop).
  """
  logit_fn = lambda z: apply_fn(variables, z, train=False)  # pylint: disable=unnecessary-lambda-assignment
  if penalty == 'kld':
    _, g = explain.input_gradients(logit_fn, x, y)
    return gradient_kld(g, gaze)
  if penalty == 'rrr':
    g = jax.grad(lambda z: jax.nn.log_softmax(logit_fn(z)).sum())(x).sum(axis=-1)
    gz = jax.image.resize(gaze, (gaze.shape[0], *x.shape[1:3]), 'linear')
    mask = 1.0 - gz / jnp.maximum(gz.max(axis=(1, 2), keepdims=True), KLD_EPS)
    return jnp.mean(jnp.sum((mask * g) ** 2, axis=(1, 2)))
  raise ValueError(f'penalty={penalty!r}; use "kld" or "rrr"')
