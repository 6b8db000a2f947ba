"""Model shapes, parameter counts against torchvision's published ones, and exposed layers."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mimic_jax import models


def _count(tree):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


# torchvision's documented totals with a 1000-class head on RGB input (resnet18 11,689,512;
# resnet50 25,557,032; densenet121 7,978,856; efficientnet_b0 5,288,548); ours have 3
# classes, so swap the head.
@pytest.mark.parametrize('arch,torchvision_total,features', [
    ('resnet18', 11_689_512, 512), ('resnet50', 25_557_032, 2048),
    ('densenet121', 7_978_856, 1024),
    ('efficientnet_b0', 5_288_548, 1280)])
def test_parameter_counts_match_torchvision(arch, torchvision_total, features):
  model = models.create_model(ml_collections.ConfigDict(
      {'arch': arch, 'num_classes': 3, 'norm': 'batch', 'width': 64}))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  expected = torchvision_total - (features * 1000 + 1000) + (features * 3 + 3)
  assert _count(shapes['params']) == expected


@pytest.mark.parametrize('arch', ['tiny_resnet', 'resnet18', 'densenet121', 'efficientnet_b0'])
def test_forward_shapes_and_features_layer(arch):
  model = models.create_model(ml_collections.ConfigDict(
      {'arch': arch, 'num_classes': 3, 'norm': 'batch', 'width': None}))
  x = jnp.ones((2, 32, 32, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  logits, state = jax.jit(functools.partial(model.apply, train=False,
                                            mutable=['intermediates']))(variables, x)
  assert logits.shape == (2, 3)
  feats = state['intermediates']['features'][0]
  assert feats.ndim == 4 and feats.shape[0] == 2
  _, upd = jax.jit(functools.partial(model.apply, train=True,
                                     mutable=['batch_stats']))(variables, x)
  assert set(upd) == {'batch_stats'}


def test_unknown_architecture_names_the_key():
  with pytest.raises(ValueError, match=r"config.model.arch='vgg' is unknown"):
    models.create_model(ml_collections.ConfigDict({'arch': 'vgg', 'num_classes': 3,
                                                   'norm': 'batch'}))


@pytest.mark.parametrize('arch', ['resnet18', 'densenet121', 'efficientnet_b0'])
def test_bfloat16_computation_keeps_float32_parameters_and_logits(arch):
  cfg = {'arch': arch, 'num_classes': 3, 'norm': 'batch', 'width': None}
  f32 = models.create_model(ml_collections.ConfigDict(cfg))
  bf16 = models.create_model(ml_collections.ConfigDict({**cfg, 'dtype': 'bfloat16'}))
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  init = jax.jit(f32.init)(jax.random.key(0), x)
  variables = {'params': init['params'], 'batch_stats': init['batch_stats']}
  shapes = jax.eval_shape(bf16.init, jax.random.key(0), x)
  assert {v.dtype for v in jax.tree.leaves((shapes['params'], shapes['batch_stats']))} == {
      jnp.dtype('float32')}
  ref = jax.jit(functools.partial(f32.apply, train=False))(variables, x)
  low = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
  assert low.dtype == jnp.float32
  _, inter = jax.jit(functools.partial(bf16.apply, train=False, mutable=['intermediates']))(
      variables, x)
  assert inter['intermediates']['features'][0].dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa: the same logits to about 1e-2 of their scale.
  np.testing.assert_allclose(low, ref, atol=0.05 * float(jnp.max(jnp.abs(ref))) + 1e-3)


def test_pooled_downsampling_keeps_shapes_and_parameters():
  """``downsample='pool'``: 2 x 2 average pooling + stride-1 convolutions at the stage
  transitions; the same parameter shapes and feature-map sizes as the strided ResNet."""
  x = jnp.ones((2, 64, 64, 1))
  out = {}
  for mode in ('stride', 'pool'):
    model = models.create_model(ml_collections.ConfigDict(
        {'arch': 'tiny_resnet', 'num_classes': 3, 'norm': 'group', 'width': 16,
         'downsample': mode}))
    variables = model.init(jax.random.key(0), x)
    _, inter = model.apply(variables, x, mutable=['intermediates'])
    out[mode] = (jax.tree.map(jnp.shape, variables['params']),
                 {k: v[0].shape for k, v in inter['intermediates'].items()})
  assert out['stride'] == out['pool']
  assert out['pool'][1]['features'] == (2, 8, 8, 64)
  # A pooled block = the stride-1 block applied to the 2 x 2 average-pooled input.
  from mimic_jax.models import resnet  # pylint: disable=g-import-not-at-top
  h = jax.random.normal(jax.random.key(3), (2, 16, 16, 16))
  pooled_block = resnet.BasicBlock(32, 2, 'group', downsample='pool')
  v = pooled_block.init(jax.random.key(4), h, train=False)
  plain_block = resnet.BasicBlock(32, 1, 'group')
  np.testing.assert_allclose(
      pooled_block.apply(v, h, train=False),
      plain_block.apply(v, h.reshape(2, 8, 2, 8, 2, 16).mean(axis=(2, 4)), train=False),
      rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='downsample'):
    models.create_model(ml_collections.ConfigDict(
        {'arch': 'tiny_resnet', 'num_classes': 3, 'norm': 'group', 'downsample': 'max'})
    ).init(jax.random.key(0), x)
