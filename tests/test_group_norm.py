"""``models.group_norm.GroupNorm`` against ``flax.linen.GroupNorm``: values, first- and
second-order gradients in float64, dtypes, parameter names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mimic_jax import models
from mimic_jax.models import group_norm


def _input_and_params(shape, seed):
  """Channels with their own offsets and spreads, and non-trivial scale and bias."""
  rng = np.random.default_rng(seed)
  c = shape[-1]
  x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, c) + rng.normal(size=c) * 2
  params = {'scale': rng.normal(size=c), 'bias': rng.normal(size=c)}
  return jnp.asarray(x), jax.tree.map(jnp.asarray, params)


@pytest.mark.parametrize(
  'shape,group_size', [((2, 5, 6, 16), 8), ((3, 7, 12), 4), ((2, 4, 3, 8), 8)]
)
def test_group_norm_equals_flax_to_second_order(shape, group_size):
  """The output, and the gradients in ``x``, ``scale`` and ``bias`` of a loss with a squared
  input gradient (double backprop, as the explanation methods train), float64."""
  mine = group_norm.GroupNorm(group_size=group_size)
  ref = nn.GroupNorm(num_groups=None, group_size=group_size)
  with jax.enable_x64(True):
    x, params = _input_and_params(shape, seed=sum(shape))
    np.testing.assert_allclose(
      mine.apply({'params': params}, x), ref.apply({'params': params}, x), rtol=1e-10, atol=1e-10
    )

    def second_order(module):
      def loss(p, x):
        apply = lambda z: module.apply({'params': p}, z)
        gx = jax.grad(lambda z: jnp.sum(jnp.sin(apply(z)) * jnp.arange(z.shape[-1])))(x)
        return jnp.sum(gx**2) + jnp.sum(apply(x) ** 3)

      return jax.grad(loss, argnums=(0, 1))(params, x)

    for a, b in zip(jax.tree.leaves(second_order(mine)), jax.tree.leaves(second_order(ref))):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(b))))


def test_group_norm_dtypes_and_parameters_follow_flax():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 16)), jnp.bfloat16)
  for dtype in (None, jnp.bfloat16):
    mine = group_norm.GroupNorm(group_size=8, dtype=dtype)
    ref = nn.GroupNorm(num_groups=None, group_size=8, dtype=dtype)
    variables = ref.init(jax.random.key(0), x)
    assert jax.tree.map(
      lambda v: (v.shape, v.dtype), mine.init(jax.random.key(0), x)
    ) == jax.tree.map(lambda v: (v.shape, v.dtype), variables)
    out, expected = mine.apply(variables, x), ref.apply(variables, x)
    assert out.dtype == expected.dtype == (dtype or jnp.float32)
    np.testing.assert_allclose(np.float32(out), np.float32(expected), rtol=2e-2, atol=2e-2)
  with pytest.raises(ValueError, match='group_size=8'):
    group_norm.GroupNorm(group_size=8).init(jax.random.key(0), jnp.ones((2, 4, 4, 12)))


def test_resnet_group_norm_parameter_tree_is_flax_s():
  """Checkpoints of ResNets with ``norm='group'`` keep flax's module names and shapes."""
  model = models.create_model(
    ml_collections.ConfigDict(
      {'arch': 'tiny_resnet', 'num_classes': 3, 'norm': 'group', 'width': 16}
    )
  )
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 32, 32, 1)))['params']
  assert set(params['BasicBlock_0']) == {'Conv_0', 'Conv_1', 'GroupNorm_0', 'GroupNorm_1'}
  assert jax.tree.map(jnp.shape, params['BasicBlock_1']['proj_norm']) == {
    'scale': (32,),
    'bias': (32,),
  }
