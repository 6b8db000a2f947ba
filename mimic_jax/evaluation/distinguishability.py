"""Can a fresh probe tell which sub-model made an explanation map?

The question MIMIC's discriminator asks during training, asked again after training by probes
that never saw the game: each is trained to name the sub-model of the maps of training-split
images and tested on the maps of the evaluated split's images. Held-out accuracy near chance
(1/M) means the sub-models' explanations are indistinguishable; near 1, that each sub-model
explains in its own recognisable way. Two probes:

- ``discriminator``: the method's discriminator architecture (``config.mimic``: ``disc_arch``,
  ``disc_hidden``) on the maps post-processed as mimic's discriminator sees them (per-map
  min-max, average-pooled by ``post.pool``), trained from scratch with Adam;
- ``logistic``: multinomial logistic regression (L2, L-BFGS) on the standardised per-map
  min-max maps average-pooled to at most 16 x 16: a simple, strong, deterministic probe.

Maps: ``(M, N, S, S)`` non-negative; the label of ``maps[m, n]`` is ``m``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from mimic_jax.evaluation import bootstrap

# The logistic probe's input side: maps are average-pooled down to at most this many pixels.
LOGISTIC_SIDE = 16


def minmax(maps: np.ndarray) -> np.ndarray:
  """Each ``(..., S, S)`` map scaled to [0, 1] (a constant map to 0)."""
  lo = maps.min(axis=(-2, -1), keepdims=True)
  span = maps.max(axis=(-2, -1), keepdims=True) - lo
  return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1.0), 0.0)


def avg_pool(maps: np.ndarray, factor: int) -> np.ndarray:
  """``(..., S, S)`` -> ``(..., S // factor, S // factor)`` block means (S cropped to a
  multiple of ``factor``)."""
  if factor <= 1:
    return maps
  s = (maps.shape[-1] // factor) * factor
  m = maps[..., :s, :s]
  shape = m.shape[:-2] + (s // factor, factor, s // factor, factor)
  return m.reshape(shape).mean(axis=(-3, -1))


def labelled(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(M, N, ...)`` -> ``(M * N, ...)`` maps and their ``(M * N,)`` sub-model labels."""
  m, n = maps.shape[:2]
  return maps.reshape(m * n, *maps.shape[2:]), np.repeat(np.arange(m), n)


def logistic_probe(train_maps: np.ndarray, test_maps: np.ndarray, l2: float = 1.0) -> np.ndarray:
  """Predicted sub-model ``(M * N_test,)`` of each test map (model-major) by multinomial
  logistic regression fitted to the training maps: features the min-max maps pooled to at most
  ``LOGISTIC_SIDE`` pixels a side, standardised with the training maps' statistics; loss the
  mean cross-entropy plus ``l2 / (2 n)`` times the squared weights (float64, L-BFGS)."""
  m = train_maps.shape[0]
  factor = max(1, -(-train_maps.shape[-1] // LOGISTIC_SIDE))
  feats = lambda maps: avg_pool(minmax(maps), factor).reshape(maps.shape[0] * maps.shape[1], -1)
  x, y = feats(train_maps).astype(np.float64), labelled(train_maps[..., :1, :1])[1]
  x_test = feats(test_maps).astype(np.float64)
  mean, std = x.mean(axis=0), x.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  x, x_test = (x - mean) / std, (x_test - mean) / std
  n, f = x.shape
  onehot = np.eye(m)[y]

  def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
    w, b = theta[: f * m].reshape(f, m), theta[f * m :]
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    loss = -(onehot * logp).sum() / n + 0.5 * l2 / n * (w**2).sum()
    dz = (p - onehot) / n
    return loss, np.concatenate([(x.T @ dz + l2 / n * w).ravel(), dz.sum(axis=0)])

  theta = scipy.optimize.minimize(
    loss_and_grad, np.zeros(f * m + m), jac=True, method='L-BFGS-B', options={'maxiter': 500}
  ).x
  w, b = theta[: f * m].reshape(f, m), theta[f * m :]
  return np.argmax(x_test @ w + b, axis=1)


def discriminator_probe(
  train_maps: np.ndarray,
  test_maps: np.ndarray,
  discriminator: Any,
  *,
  pool: int,
  steps: int,
  learning_rate: float = 1e-3,
  batch_size: int = 64,
  seed: int = 0,
) -> np.ndarray:
  """Predicted sub-model ``(M * N_test,)`` of each test map (model-major) by a fresh
  ``discriminator`` (a Flax module mapping ``(B, h, w)`` maps to ``(B, M)`` logits) trained
  for ``steps`` Adam steps on minibatches of the training maps (min-max, pooled by ``pool``)."""
  x, y = labelled(avg_pool(minmax(train_maps), pool).astype(np.float32))
  x_test = labelled(avg_pool(minmax(test_maps), pool).astype(np.float32))[0]
  key = jax.random.key(seed)
  params = discriminator.init(key, jnp.zeros((1, *x.shape[1:])))['params']
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params: Any, opt_state: Any, xb: jax.Array, yb: jax.Array) -> tuple[Any, Any]:
    def loss(p: Any) -> jax.Array:
      logits = discriminator.apply({'params': p}, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  batch = min(batch_size, len(x))
  order, pos = rng.permutation(len(x)), 0
  for _ in range(steps):
    if pos + batch > len(x):
      order, pos = rng.permutation(len(x)), 0
    idx = order[pos : pos + batch]
    pos += batch
    params, opt_state = step(params, opt_state, x[idx], y[idx])
  logits = jax.jit(lambda p, z: discriminator.apply({'params': p}, z))(params, x_test)
  return np.asarray(jnp.argmax(logits, axis=-1))


def held_out_accuracy(predicted: np.ndarray, num_models: int) -> dict:
  """``{'mean', 'ci95', 'n', 'chance'}``: the share of test maps whose sub-model was named,
  with a 95% bootstrap interval over images (an image's score: the share of its M maps named
  right), ``n`` test images, chance 1/M."""
  truth = np.repeat(np.arange(num_models), len(predicted) // num_models)
  per_image = (predicted == truth).reshape(num_models, -1).mean(axis=0)
  mean, lo, hi = bootstrap.mean_ci(per_image)
  return {'mean': mean, 'ci95': [lo, hi], 'n': int(len(per_image)), 'chance': 1.0 / num_models}


def probe_maps(
  train_maps: np.ndarray,
  test_maps: np.ndarray,
  discriminator: Any,
  *,
  pool: int,
  steps: int,
  seed: int = 0,
) -> dict[str, dict]:
  """Both probes' :func:`held_out_accuracy` on ``(M, N, S, S)`` maps, by probe name."""
  m = train_maps.shape[0]
  return {
    'discriminator': held_out_accuracy(
      discriminator_probe(train_maps, test_maps, discriminator, pool=pool, steps=steps, seed=seed),
      m,
    ),
    'logistic': held_out_accuracy(logistic_probe(train_maps, test_maps), m),
  }
