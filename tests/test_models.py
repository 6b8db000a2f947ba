"""Model shapes, parameter counts against torchvision's published ones, and exposed layers."""

import functools
import re

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mimic_jax import models
from mimic_jax.models import densenet
from mimic_jax.tuning import compiler_options
from mimic_jax.tuning import cpu_convs


def _count(tree):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


# torchvision's documented totals with a 1000-class head on RGB input (resnet18 11,689,512;
# resnet50 25,557,032; densenet121 7,978,856; efficientnet_b0 5,288,548); ours have 3
# classes, so swap the head.
@pytest.mark.parametrize(
  'arch,torchvision_total,features',
  [
    ('resnet18', 11_689_512, 512),
    ('resnet50', 25_557_032, 2048),
    ('densenet121', 7_978_856, 1024),
    ('efficientnet_b0', 5_288_548, 1280),
  ],
)
def test_parameter_counts_match_torchvision(arch, torchvision_total, features):
  model = models.create_model(
    ml_collections.ConfigDict({'arch': arch, 'num_classes': 3, 'norm': 'batch', 'width': 64})
  )
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  expected = torchvision_total - (features * 1000 + 1000) + (features * 3 + 3)
  assert _count(shapes['params']) == expected


@pytest.mark.parametrize('arch', ['tiny_resnet', 'resnet18', 'densenet121', 'efficientnet_b0'])
def test_forward_shapes_and_features_layer(arch):
  model = models.create_model(
    ml_collections.ConfigDict({'arch': arch, 'num_classes': 3, 'norm': 'batch', 'width': None})
  )
  x = jnp.ones((2, 32, 32, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  logits, state = jax.jit(functools.partial(model.apply, train=False, mutable=['intermediates']))(
    variables, x
  )
  assert logits.shape == (2, 3)
  feats = state['intermediates']['features'][0]
  assert feats.ndim == 4 and feats.shape[0] == 2
  _, upd = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
    variables, x
  )
  assert set(upd) == {'batch_stats'}


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
    jnp.dtype('float32')
  }
  ref = jax.jit(functools.partial(f32.apply, train=False))(variables, x)
  low = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
  assert low.dtype == jnp.float32
  _, inter = jax.jit(functools.partial(bf16.apply, train=False, mutable=['intermediates']))(
    variables, x
  )
  assert inter['intermediates']['features'][0].dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa: the same logits to about 1e-2 of their scale.
  np.testing.assert_allclose(low, ref, atol=0.05 * float(jnp.max(jnp.abs(ref))) + 1e-3)


def test_pooled_downsampling_keeps_shapes_and_parameters():
  """``downsample='pool'``: 2 x 2 average pooling + stride-1 convolutions at the stage
  transitions; the same parameter shapes and feature-map sizes as the strided ResNet."""
  x = jnp.ones((2, 64, 64, 1))
  out = {}
  for mode in ('stride', 'pool'):
    model = models.create_model(
      ml_collections.ConfigDict(
        {'arch': 'tiny_resnet', 'num_classes': 3, 'norm': 'group', 'width': 16, 'downsample': mode}
      )
    )
    variables = model.init(jax.random.key(0), x)
    _, inter = model.apply(variables, x, mutable=['intermediates'])
    out[mode] = (
      jax.tree.map(jnp.shape, variables['params']),
      {k: v[0].shape for k, v in inter['intermediates'].items()},
    )
  assert out['stride'] == out['pool']
  assert out['pool'][1]['features'] == (2, 8, 8, 64)
  # A pooled block = the stride-1 block applied to the 2 x 2 average-pooled input.
  from mimic_jax.models import resnet

  h = jax.random.normal(jax.random.key(3), (2, 16, 16, 16))
  pooled_block = resnet.BasicBlock(32, 2, 'group', downsample='pool')
  v = pooled_block.init(jax.random.key(4), h, train=False)
  plain_block = resnet.BasicBlock(32, 1, 'group')
  np.testing.assert_allclose(
    pooled_block.apply(v, h, train=False),
    plain_block.apply(v, h.reshape(2, 8, 2, 8, 2, 16).mean(axis=(2, 4)), train=False),
    rtol=1e-5,
    atol=1e-6,
  )


@pytest.mark.parametrize(
  'kernel,stride,cin,pad',
  [
    (7, 2, 1, 3),
    (3, 2, 3, 1),
    (1, 2, 4, 0),
    (3, 1, 2, 1),
    (1, 1, 3, 0),
    (3, 1, 4, (0, 2)),
    (7, 2, 1, (2, 3)),
    (4, 3, 2, (0, 2)),
    (2, 2, 3, (1, 0)),
  ],
)
def test_cpu_conv_equals_lax_convolution_to_second_order(kernel, stride, cin, pad):
  """``cpu_convs.conv`` against ``lax``'s convolution in float64: the output, and the
  kernel and input gradients of a loss with a squared input gradient (double backprop)."""
  from jax import lax

  rng = np.random.default_rng(kernel * 10 + stride + cin)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(2, 13, 14, cin)))
    w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, 5)))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
    pads = pad if isinstance(pad, tuple) else (pad, pad)
    kw = dict(window_strides=(stride, stride), padding=[pads] * 2, dimension_numbers=dn)
    ref = functools.partial(lax.conv_general_dilated, **kw)
    mine = functools.partial(cpu_convs.conv, **kw)
    np.testing.assert_allclose(mine(x, w), ref(x, w), rtol=1e-12, atol=1e-12)

    def second_order(conv):
      def loss(w, x):
        gx = jax.grad(lambda z: jnp.sum(jnp.sin(conv(z, w))))(x)
        return jnp.sum(gx**2) + jnp.sum(conv(x, w) ** 3)

      return jax.grad(loss, argnums=(0, 1))(w, x)

    for a, b in zip(second_order(mine), second_order(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(b))))
  with pytest.raises(ValueError, match='feature_group_count=1'):
    cpu_convs.conv(
      jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 2, 4)), (2, 2), [(1, 1)] * 2, feature_group_count=2
    )


@pytest.mark.parametrize(
  'cin,strides,lowered',
  [
    (1, (2, 2), ((1, 1), 4)),
    (3, (2, 3), ((1, 1), 18)),
    (4, (2, 2), ((2, 2), 4)),
    (1, (1, 1), ((1, 1), 1)),
  ],
)
def test_cpu_conv_runs_narrow_strided_convolutions_on_space_to_depth_input(cin, strides, lowered):
  """The stems (strided, at most 3 input channels) compute their value as a stride-1
  convolution over ``s_h * s_w * Cin`` channels; wider or stride-1 ones stay as they are.
  The value is ``lax``'s (float64, also with unequal strides)."""
  rng = np.random.default_rng(cin)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(2, 16, 15, cin)))
    w = jnp.asarray(rng.normal(size=(7, 7, cin, 8)))
    kw = dict(
      window_strides=strides,
      padding=[(3, 2), (1, 3)],
      dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC')),
    )
    np.testing.assert_allclose(
      cpu_convs.conv(x, w, **kw), jax.lax.conv_general_dilated(x, w, **kw), rtol=1e-12, atol=1e-12
    )
    jaxpr = jax.make_jaxpr(functools.partial(cpu_convs.conv, **kw))(x, w)
  convs = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == 'conv_general_dilated']
  assert [(e.params['window_strides'], e.invars[0].aval.shape[-1]) for e in convs] == [lowered]


@pytest.mark.parametrize(
  'cin,strides,kernel',
  [(1, (2, 2), 7), (1, (2, 3), 7), (1, (3, 2), 4), (3, (2, 2), 7), (1, (1, 1), 7)],
)
def test_cpu_conv_input_gradient_of_grey_strided_convolution_is_one_product(cin, strides, kernel):
  """A grey stem's input gradient (strided, 1 input channel) is one matrix product and sums
  of its shifted slices, no convolution; RGB or stride-1 ones stay convolutions. It is
  ``lax``'s (float64, unequal strides, kernels that the strides do not divide, uneven
  padding)."""
  rng = np.random.default_rng(10 * cin + kernel)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(3, 17, 15, cin)))
    w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, 6)))
    kw = dict(
      window_strides=strides,
      padding=[(3, 2), (1, 3)],
      dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC')),
    )
    dy = jnp.asarray(rng.normal(size=jax.lax.conv_general_dilated(x, w, **kw).shape))

    def input_grad(conv):
      return jax.vjp(lambda x_: conv(x_, w, **kw), x)[1](dy)[0]

    np.testing.assert_allclose(
      input_grad(cpu_convs.conv),
      input_grad(jax.lax.conv_general_dilated),
      rtol=1e-12,
      atol=1e-12 * float(jnp.max(jnp.abs(dy))) * kernel**2,
    )
    hlo = jax.jit(functools.partial(input_grad, cpu_convs.conv)).lower().compile().as_text()
  narrow = cin == 1 and strides != (1, 1)
  # What XLA runs for the input gradient alone (the forward and the kernel gradient pruned).
  assert (hlo.count(' dot('), hlo.count(' convolution(')) == ((1, 0) if narrow else (0, 1))


@pytest.mark.parametrize(
  'batch,kernel,pads',
  [
    (2, (3, 3), ((1, 1), (1, 1))),
    (1, (5, 3), ((0, 4), (2, 1))),
    (3, (2, 2), ((1, 0), (0, 1))),
    (7, (3, 3), ((3, 3), (0, 0))),
    (8, (3, 3), ((1, 1), (1, 1))),
    (2, (1, 1), ((0, 0), (0, 0))),
  ],
)
def test_cpu_conv_kernel_gradient_of_few_examples_from_cotangent_windows(batch, kernel, pads):
  """Stride 1, wider than 1 x 1, at most 7 examples: the kernel gradient is one product of
  the input with the cotangent's shifted windows (no convolution); else ``lax``'s. Either
  way it is ``lax``'s kernel gradient (float64; padding wider than the kernel crops the
  windows)."""
  rng = np.random.default_rng(batch)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(batch, 9, 7, 6)))
    w = jnp.asarray(rng.normal(size=(*kernel, 6, 4)))
    kw = dict(
      window_strides=(1, 1),
      padding=pads,
      dimension_numbers=(
        jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
      ),
    )
    ref = jax.lax.conv_general_dilated(x, w, **kw)
    dy = jnp.asarray(rng.normal(size=ref.shape))

    def kernel_grad(conv):
      return jax.vjp(lambda w_: conv(x, w_, **kw), w)[1](dy)[0]

    np.testing.assert_allclose(
      kernel_grad(cpu_convs.conv),
      kernel_grad(jax.lax.conv_general_dilated),
      rtol=1e-12,
      atol=1e-12 * float(jnp.max(jnp.abs(ref))),
    )
    jaxpr = jax.make_jaxpr(functools.partial(kernel_grad, cpu_convs.conv))()
  windowed = batch <= 7 and kernel != (1, 1)
  names = [e.primitive.name for e in _equations(jaxpr.jaxpr)]
  assert ('dot_general' in names, names.count('conv_general_dilated')) == (
    (True, 2) if windowed else (False, 4)
  )  # forward, input gradient (+ lax's vjp: 2)


def test_densenet_with_custom_convolutions_agrees_with_flax():
  """A small DenseNet with ``cpu_convs.Conv`` (every convolution through ``cpu_convs.conv``)
  vs ``nn.Conv``: the same logits and the same parameter gradient of a double-backprop loss,
  float64, batch 2 (so the 3 x 3 kernel gradients are the windowed ones)."""
  make = functools.partial(
    densenet.DenseNet, block_sizes=(2, 2), growth_rate=4, init_features=8, bn_size=2
  )
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float64)
    variables = jax.tree.map(
      lambda v: v.astype(jnp.float64), make(conv=nn.Conv).init(jax.random.key(0), x)
    )

    def double_backprop(model):
      def loss(p):
        apply = lambda z: model.apply({**variables, 'params': p}, z)
        logits = apply(x)
        return jnp.sum(jax.grad(lambda z: apply(z)[:, 1].sum())(x) ** 2) + jnp.sum(
          logits**2
        ), logits

      return jax.jit(jax.grad(loss, has_aux=True))(variables['params'])

    jaxpr = str(jax.make_jaxpr(lambda v: make(conv=cpu_convs.Conv).apply(v, x))(variables))
    assert jaxpr.count('custom_vjp_call') == jaxpr.count('conv_general_dilated') == 10
    grads_m, logits_m = double_backprop(make(conv=cpu_convs.Conv))
    grads_c, logits_c = double_backprop(make(conv=nn.Conv))
    np.testing.assert_allclose(logits_m, logits_c, rtol=1e-10, atol=1e-12)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_c))
    for gm, gc in zip(jax.tree.leaves(grads_m), jax.tree.leaves(grads_c)):
      np.testing.assert_allclose(gm, gc, rtol=1e-9, atol=1e-11 * scale)


def _equations(jaxpr):
  """Every equation of ``jaxpr``, those of its sub-jaxprs (custom VJPs, pjit) included."""
  for e in jaxpr.eqns:
    yield e
    for sub in jax.extend.core.jaxprs_in_params(e.params):
      yield from _equations(sub)


def test_resnet_with_custom_convolutions_agrees_with_flax():
  """A ResNet with strided stem and stages, ``cpu_convs.Conv`` vs ``nn.Conv``: one parameter
  tree, the same logits and the same parameter gradient of a double-backprop loss (the
  input-gradient penalty the explanation methods train with), float64."""
  cfg = ml_collections.ConfigDict(
    {'arch': 'tiny_resnet', 'num_classes': 3, 'norm': 'group', 'width': 8, 'downsample': 'stride'}
  )
  custom = models.create_model(cfg, conv=cpu_convs.Conv)
  lax_model = models.create_model(cfg)
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 1), jnp.float64)
    params = jax.tree.map(lambda v: v.astype(jnp.float64), lax_model.init(jax.random.key(0), x))[
      'params'
    ]
    assert jax.tree.map(
      jnp.shape, jax.eval_shape(custom.init, jax.random.key(0), x)['params']
    ) == jax.tree.map(jnp.shape, params)

    def double_backprop(model):
      def loss(p):
        logit = lambda z: model.apply({'params': p}, z)[:, 1].sum()
        logits = model.apply({'params': p}, x)
        return jnp.sum(jax.grad(logit)(x) ** 2) + jnp.sum(logits**2), logits

      return jax.jit(jax.grad(loss, has_aux=True))(params)

    def custom_convs(model):  # every convolution: 9 (stem, 2 per block, 2 projections)
      jaxpr = str(jax.make_jaxpr(lambda p: model.apply({'params': p}, x))(params))
      return jaxpr.count('custom_vjp_call'), jaxpr.count('conv_general_dilated')

    assert (custom_convs(custom), custom_convs(lax_model)) == ((9, 9), (0, 9))
    grads_m, logits_m = double_backprop(custom)
    grads_c, logits_c = double_backprop(lax_model)
    np.testing.assert_allclose(logits_m, logits_c, rtol=1e-10, atol=1e-12)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_c))
    for gm, gc in zip(jax.tree.leaves(grads_m), jax.tree.leaves(grads_c)):
      np.testing.assert_allclose(gm, gc, rtol=1e-9, atol=1e-11 * scale)


def test_custom_conv_gradients_transpose_only_materialised_arrays():
  """XLA:CPU's kernel-gradient convolutions read transposed operands. With ``lax``'s
  gradients XLA fuses the elementwise work that produces them into those transposes: the
  forward GroupNorm and ReLU that produce a convolution's input (up to 10 arrays), and in
  double backprop the first- and second-order derivatives that produce a cotangent (up to
  14), all read and computed again in transposed order. ``cpu_convs.Conv`` materialises
  both operands first, so every transposed copy that a convolution reads copies one array,
  in the plain step and through double backprop."""
  cfg = ml_collections.ConfigDict(
    {'arch': 'tiny_resnet', 'num_classes': 3, 'norm': 'group', 'width': 8, 'downsample': 'stride'}
  )
  x = jax.random.normal(jax.random.key(1), (8, 32, 32, 1))  # lax's kernel gradients
  options = compiler_options.for_library('eigen')

  def transposed_operand_widths(conv, double_backprop):
    """How many arrays each transposing fusion that feeds a convolution reads."""
    model = models.create_model(cfg, conv=conv)
    params = model.init(jax.random.key(0), x)['params']

    def loss(p):
      penalty = 0.0
      if double_backprop:
        penalty = jnp.sum(jax.grad(lambda z: model.apply({'params': p}, z)[:, 1].sum())(x) ** 2)
      return penalty + jnp.sum(model.apply({'params': p}, x) ** 2)

    hlo = jax.jit(jax.grad(loss), compiler_options=options).lower(params).compile().as_text()
    entry = hlo[hlo.index('ENTRY') :]
    conv_operands = {
      o.strip()
      for ops in re.findall(r'= \S+ convolution\(([^)]*)\)', entry)
      for o in ops.split(',')
    }
    transposes = dict(re.findall(r'(%\S*transpose\S*) = \S+ fusion\(([^)]*)\)', entry))
    return [len(transposes[o].split(',')) for o in conv_operands if o in transposes]

  for double_backprop in (False, True):
    cpu = transposed_operand_widths(cpu_convs.Conv, double_backprop)
    lax_widths = transposed_operand_widths(nn.Conv, double_backprop)
    assert len(cpu) >= 8 and set(cpu) == {1}, (double_backprop, cpu)
    assert max(lax_widths) >= 5, (double_backprop, lax_widths)
