"""A dense convolution whose first- and second-order gradients XLA:CPU runs fast.

:func:`conv` has the signature of ``lax.conv_general_dilated``; :data:`Conv` is
``flax.linen.Conv`` computing with it, so parameters keep their names and shapes and pretrained
weights load unchanged. Its value and derivatives, to any order double backprop uses, are
``lax``'s (float64-tested); only the way they are computed differs (``benchmarks/RESULTS.md``
has the measurements):

- Every cotangent that reaches a convolution's gradients, and the kernel gradient's input,
  is materialised behind an optimisation barrier before the gradient convolutions read it:
  otherwise XLA fuses the elementwise work that produces them (normalisation and ReLU
  derivatives) into the transposes that the kernel-gradient convolution needs, and computes
  it again there in transposed order.
- A strided convolution's input gradient is a stride-1 convolution and a depth-to-space
  (sub-pixel) rather than ``lax``'s input-dilated convolution, whose kernel derivative
  XLA:CPU emits as a scalar loop; that kernel derivative is, by the adjoint identity, the
  first-order kernel gradient of the strided convolution of the cotangent. With one input
  channel (a grey stem) the sub-pixel sums come from one matrix product instead.
- A strided convolution of an input with at most 3 channels (a stem) computes its value on
  the space-to-depth input, since Eigen packs few-channel patches slowly.
- Kernel gradients of stride-1 convolutions wider than 1 x 1 over fewer than 8 examples are
  one product with the cotangent's shifted windows: Eigen packs the batch innermost.

NHWC input, HWIO kernels (flax's).
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

_NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # flax's ConvDimensionNumbers
# ((top, bottom), (left, right)) pixels, or 'SAME' / 'VALID' where accepted.
Padding = str | Sequence[tuple[int, int]]


def _pads(
  lhs: jax.Array,
  kernel_hw: Sequence[int],
  window_strides: Sequence[int],
  padding: Padding,
  lhs_dilation: Sequence[int] | None,
  rhs_dilation: Sequence[int] | None,
  dimension_numbers: Any,
) -> tuple[tuple[int, int], ...]:
  """Checks what :func:`conv` does not support; returns the padding as pairs."""
  for name, d in (('lhs_dilation', lhs_dilation), ('rhs_dilation', rhs_dilation)):
    if d is not None and any(v != 1 for v in d):
      raise ValueError(f'dense convolution: {name}={d} is not supported')
  if dimension_numbers is not None and tuple(dimension_numbers) != _NHWC:
    raise ValueError(f'dense convolution expects NHWC/HWIO, got {dimension_numbers}')
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], kernel_hw, window_strides, padding)
  return tuple(tuple(p) for p in padding)


def _windows(x: jax.Array, kh: int, kw: int, out_hw: Sequence[int], strides: Sequence[int]) -> list:
  """For each kernel tap ``(i, j)`` (row-major), the strided slice of the padded ``x``
  ``(B, Hp, Wp, C)`` that it multiplies: ``kh * kw`` arrays ``(B, ho, wo, C)``."""
  (b, _, _, c), (ho, wo), (sh, sw) = x.shape, out_hw, strides
  return [
    lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
    for i in range(kh)
    for j in range(kw)
  ]


def conv(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: Padding,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  precision: Any = None,
) -> jax.Array:
  """``lax.conv_general_dilated`` with the custom VJP of the module docstring: the same
  value and derivatives (to any order that double backprop uses), computed differently.

  Args: as ``lax.conv_general_dilated``; ``lhs`` ``(B, H, W, Cin)``, ``rhs``
  ``(kh, kw, Cin, Cout)``; no dilations, ``feature_group_count`` 1.

  Returns ``(B, H', W', Cout)``.
  """
  if feature_group_count != 1 or lhs.ndim != 4:
    raise ValueError(
      f'dense convolution expects (B, H, W, C) input and '
      f'feature_group_count=1; got input {lhs.shape}, '
      f'feature_group_count={feature_group_count}'
    )
  padding = _pads(
    lhs, rhs.shape[:2], window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers
  )
  return _dense_conv(lhs, rhs, tuple(window_strides), padding, precision)


def _conv(
  x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Padding, precision: Any
) -> jax.Array:
  return lax.conv_general_dilated(
    x, w, strides, padding, dimension_numbers=lax.ConvDimensionNumbers(*_NHWC), precision=precision
  )


# Strided convolutions of inputs with at most this many channels (the grey and RGB stems)
# compute their value on the space-to-depth input (:func:`_conv_value`).
_SPACE_TO_DEPTH_MAX_CHANNELS = 3


def _kernel_phases(w: jax.Array, strides: Sequence[int]) -> jax.Array:
  """``w`` ``(kh, kw, Cin, Cout)`` zero-padded to whole strides and split by phase:
  ``(taps_h, s_h, taps_w, s_w, Cin, Cout)`` with ``[t, r, u, v] = w[t * s_h + r, u * s_w + v]``
  (``taps = ceil(k / s)``)."""
  (sh, sw), (kh, kw, cin, cout) = strides, w.shape
  taps_h, taps_w = -(-kh // sh), -(-kw // sw)
  wz = jnp.pad(w, ((0, taps_h * sh - kh), (0, taps_w * sw - kw), (0, 0), (0, 0)))
  return wz.reshape(taps_h, sh, taps_w, sw, cin, cout)


def _conv_value(
  x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Padding, precision: Any
) -> jax.Array:
  """The convolution's value ``(B, H', W', Cout)``. A strided convolution of an input with
  few channels (a stem) runs as a stride-1 convolution of the space-to-depth input
  (``s_h * s_w * Cin`` channels) with the kernel rearranged to match (``ceil(k / s)`` taps a
  side, zero past the kernel), since Eigen packs few-channel patches slowly; wider inputs keep
  ``lax``'s, for which the extra zero taps cost more than they save. Its derivatives are the
  custom VJP's, which never differentiate this function."""
  cin = x.shape[-1]
  if all(s == 1 for s in strides) or cin > _SPACE_TO_DEPTH_MAX_CHANNELS:
    return _conv(x, w, strides, padding, precision)
  (sh, sw), ((lh, _), (lw, _)) = strides, padding
  b, h, w_in, _ = x.shape
  phases = _kernel_phases(w, strides)
  taps_h, _, taps_w, _, _, cout = phases.shape
  ho, wo = (
    (n + lo + hi - k) // s + 1
    for n, k, s, (lo, hi) in zip(x.shape[1:3], w.shape[:2], strides, padding)
  )  # output size
  hp, wp = sh * (ho - 1 + taps_h), sw * (wo - 1 + taps_w)  # the padded input it reads
  # The high padding can be negative: rows no window reaches are cropped.
  xp = lax.pad(
    x, jnp.zeros((), x.dtype), ((0, 0, 0), (lh, hp - h - lh, 0), (lw, wp - w_in - lw, 0), (0, 0, 0))
  )
  xs = xp.reshape(b, hp // sh, sh, wp // sw, sw, cin).transpose(0, 1, 3, 2, 4, 5)
  ws = phases.transpose(0, 2, 1, 3, 4, 5).reshape(taps_h, taps_w, sh * sw * cin, cout)
  return _conv(
    xs.reshape(b, hp // sh, wp // sw, sh * sw * cin), ws, (1, 1), ((0, 0), (0, 0)), precision
  )


# Kernel gradients of stride-1 convolutions wider than 1 x 1 over at most this many
# examples are products with the cotangent's windows (:func:`_kernel_grad`).
_WINDOWED_KERNEL_GRAD_MAX_BATCH = 7


def _kernel_grad(
  x: jax.Array,
  dy: jax.Array,
  w: jax.Array,
  strides: Sequence[int],
  padding: Padding,
  precision: Any,
) -> jax.Array:
  """The kernel gradient ``(kh, kw, Cin, Cout)`` of ``_conv(x, w)`` at output cotangent
  ``dy`` ``(B, H', W', Cout)``: ``lax``'s, except for a stride-1 convolution wider than
  1 x 1 over at most ``_WINDOWED_KERNEL_GRAD_MAX_BATCH`` examples. XLA:CPU runs ``lax``'s as
  an Eigen convolution whose packed patches hold the batch innermost, so with few examples
  its packing crawls. There it is one product of ``x`` with the ``kh * kw`` shifted windows of
  the zero-padded ``dy``, contracting batch and space:
  ``dw[i, j, c, o] = sum_bhw x[b, h, w, c] dy[b, h + lo_h - i, w + lo_w - j, o]`` (``dy`` zero
  outside its extent, ``lo`` the low padding)."""
  (kh, kw, cin, cout), (b, h, w_in, _) = w.shape, x.shape
  if any(s != 1 for s in strides) or kh * kw == 1 or b > _WINDOWED_KERNEL_GRAD_MAX_BATCH:
    return jax.vjp(lambda w_: _conv(x, w_, strides, padding, precision), w)[1](dy)[0]
  ((lh, hh), (lw, hw)) = padding
  # Padded to H + kh - 1 rows, so that tap (i, j) reads the window starting at
  # (kh - 1 - i, kw - 1 - j): the windows of the taps in reverse order.
  dyp = lax.pad(
    dy,
    jnp.zeros((), dy.dtype),
    ((0, 0, 0), (kh - 1 - lh, kh - 1 - hh, 0), (kw - 1 - lw, kw - 1 - hw, 0), (0, 0, 0)),
  )
  windows = jnp.stack(
    _windows(dyp, kh, kw, (h, w_in), (1, 1))[::-1], axis=3
  )  # (B, H, W, kh * kw, Cout)
  dw = lax.dot_general(x, windows, (((0, 1, 2), (0, 1, 2)), ((), ())), precision=precision)
  return dw.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3).astype(w.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _dense_conv(
  x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Padding, precision: Any
) -> jax.Array:
  return _conv_value(x, w, strides, padding, precision)


def _dense_conv_fwd(
  x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Padding, precision: Any
):
  # Itself, not _conv: differentiating the VJP below (double backprop) differentiates this
  # forward too, and then with the same rule.
  return _dense_conv(x, w, strides, padding, precision), (x, w)


def _dense_conv_bwd(
  strides: Sequence[int],
  padding: Padding,
  precision: Any,
  residuals: tuple[jax.Array, jax.Array],
  dy: jax.Array,
):
  x, w = residuals
  dy = lax.optimization_barrier(dy)
  return (
    _input_grad(dy, w, x.shape, strides, padding, precision),
    _kernel_grad(lax.optimization_barrier(x), dy, w, strides, padding, precision),
  )


_dense_conv.defvjp(_dense_conv_fwd, _dense_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _input_grad(
  dy: jax.Array,
  w: jax.Array,
  x_shape: tuple[int, ...],
  strides: Sequence[int],
  padding: Padding,
  precision: Any,
) -> jax.Array:
  """The convolution's input gradient ``(B, H, W, Cin)`` for output cotangent ``dy``
  ``(B, H', W', Cout)``. Stride 1: ``lax``'s. Strided: computed sub-pixel, since ``lax``
  transposes a strided convolution into an input-dilated one, most of whose products are with
  inserted zeros. Input position ``Y = q * s + r`` of the padded input takes kernel taps
  ``r, r + s, ...``; so one stride-1 convolution of ``dy`` with the ``s * s`` phase kernels on
  its output channels, then depth-to-space, gives every position once. With one input channel
  (a grey stem) that convolution has only ``s * s`` output channels, which Eigen runs slowly:
  there :func:`_phase_sums_by_product` computes the same sums from one matrix product. Not for
  RGB stems, whose products would be ``taps_h * taps_w`` times the input gradient's size."""
  if all(s == 1 for s in strides):
    return jax.linear_transpose(
      lambda x_: _conv(x_, w, strides, padding, precision), jax.ShapeDtypeStruct(x_shape, dy.dtype)
    )(dy)[0]
  (sh, sw), ((lh, hh), (lw, hw)) = strides, padding
  b, h, w_in, cin = x_shape
  q_hw = (-(-(h + lh + hh) // sh), -(-(w_in + lw + hw) // sw))  # padded input / stride
  phases = _kernel_phases(w, strides)
  sums = _phase_sums_by_product if cin == 1 else _phase_sums_by_convolution
  out = sums(dy, phases, q_hw, precision)  # (B, qh, s_h, qw, s_w, Cin)
  dx = out.reshape(b, q_hw[0] * sh, q_hw[1] * sw, cin)[:, lh : lh + h, lw : lw + w_in]
  # The product's sums materialised: else XLA fuses them into every consumer (the
  # explanation's absolute value, its derivative's sign) and recomputes them there.
  return lax.optimization_barrier(dx) if cin == 1 else dx


def _phase_sums_by_convolution(
  dy: jax.Array, phases: jax.Array, q_hw: tuple[int, int], precision: Any
) -> jax.Array:
  """Every phase of :func:`_input_grad`'s padded input, ``(B, qh, s_h, qw, s_w, Cin)``:
  ``out[b, q, r, p, v, c] = sum_{t, u, o} dy[b, q - t, p - u, o] * phases[t, r, u, v, c, o]``
  (``dy`` zero outside its extent), as one stride-1 convolution with the flipped taps of
  each phase on its ``s_h * s_w * Cin`` output channels."""
  taps_h, sh, taps_w, sw, cin, cout = phases.shape
  (b, ho, wo, _), (qh, qw) = dy.shape, q_hw
  # kernel[t, u, o, (r, v, c)] = phases[taps_h - 1 - t, r, taps_w - 1 - u, v, c, o]
  kernel = (
    phases[::-1, :, ::-1].transpose(0, 2, 5, 1, 3, 4).reshape(taps_h, taps_w, cout, sh * sw * cin)
  )
  dyp = jnp.pad(dy, ((0, 0), (taps_h - 1, qh - ho), (taps_w - 1, qw - wo), (0, 0)))
  out = _conv(dyp, kernel, (1, 1), ((0, 0), (0, 0)), precision)  # (B, qh, qw, sh * sw * cin)
  return out.reshape(b, qh, qw, sh, sw, cin).transpose(0, 1, 3, 2, 4, 5)


def _phase_sums_by_product(
  dy: jax.Array, phases: jax.Array, q_hw: tuple[int, int], precision: Any
) -> jax.Array:
  """The same sums as :func:`_phase_sums_by_convolution`: one matrix product of the
  zero-padded ``dy`` with every tap of every phase (``taps_h * s_h * taps_w * s_w * Cin``
  columns, contracting ``Cout``), then the sum of its ``taps_h * taps_w`` shifted slices."""
  taps_h, sh, taps_w, sw, cin, cout = phases.shape
  (b, ho, wo, _), (qh, qw) = dy.shape, q_hw
  dyp = jnp.pad(dy, ((0, 0), (taps_h - 1, qh - ho), (taps_w - 1, qw - wo), (0, 0)))
  products = lax.dot_general(
    dyp, phases.reshape(-1, cout), (((3,), (1,)), ((), ())), precision=precision
  ).reshape(b, qh + taps_h - 1, qw + taps_w - 1, taps_h, sh, taps_w, sw * cin)
  shifted = [
    products[
      :, taps_h - 1 - t : taps_h - 1 - t + qh, taps_w - 1 - u : taps_w - 1 - u + qw, t, :, u, :
    ]
    for t in range(taps_h)
    for u in range(taps_w)
  ]  # (B, qh, qw, s_h, s_w * Cin)
  out = sum(shifted[1:], shifted[0])
  return out.reshape(b, qh, qw, sh, sw, cin).transpose(0, 1, 3, 2, 4, 5)


def _input_grad_fwd(
  dy: jax.Array,
  w: jax.Array,
  x_shape: tuple[int, ...],
  strides: Sequence[int],
  padding: Padding,
  precision: Any,
):
  return _input_grad(dy, w, x_shape, strides, padding, precision), (dy, w)


def _input_grad_bwd(
  x_shape: tuple[int, ...],
  strides: Sequence[int],
  padding: Padding,
  precision: Any,
  residuals: tuple[jax.Array, jax.Array],
  ct: jax.Array,
):
  """``_input_grad`` is linear in ``dy`` (adjoint: the convolution) and in ``w``: the kernel
  cotangent is the kernel gradient of the convolution of ``ct`` at output cotangent ``dy``
  (``lax``'s, a first-order kernel gradient, which XLA:CPU runs as a convolution also where
  strided)."""
  del x_shape
  dy, w = residuals
  ct = lax.optimization_barrier(ct)
  return (
    _conv_value(ct, w, strides, padding, precision),
    _kernel_grad(ct, dy, w, strides, padding, precision),
  )


_input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


# flax.linen.Conv computing with :func:`conv`.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv)
