"""Depthwise convolution written so that XLA:CPU runs its first- and second-order gradients
fast.

XLA:CPU computes the kernel gradient of a depthwise (grouped) convolution as a *dense*
``C x k x k x C`` convolution whose diagonal it keeps: C times the FLOPs (EfficientNet-B0's
training step at 224 px: 54 GFLOP instead of 5.4, 4.7 x the time; ``benchmarks/RESULTS.md``).
:func:`depthwise` computes the same numbers as a sum over kernel taps of strided slices times
per-channel weights, so every gradient is a slice, pad, product or reduction, which XLA
fuses. It has the signature of ``lax.conv_general_dilated`` and is handed to
``flax.linen.Conv(conv_general_dilated=...)``: parameters keep their names and shapes and
pretrained weights load unchanged. NHWC input, HWIO kernels (flax's).

(A dense strided convolution written the same way, strided slices stacked into patches and
one matrix product, was tried for the ResNet stem, whose strided second-order kernel gradient
XLA:CPU loop-emits; it was not faster, RESULTS.md.)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax

_NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # flax's ConvDimensionNumbers


def depthwise(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
              rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
              precision=None):
  """Depthwise convolution (``feature_group_count`` = C) as ``sum_tap slice(x) * w[tap]``.

  Args: as ``lax.conv_general_dilated``; ``lhs`` ``(B, H, W, C)``, ``rhs`` ``(kh, kw, 1, C)``,
  ``padding`` ``((top, bottom), (left, right))`` or a string; dilations must be ones;
  ``precision`` is unused (products accumulate in float32 for narrower inputs).

  Returns ``(B, H', W', C)`` in ``lhs``'s dtype.
  """
  del precision
  kh, kw, one, channels = rhs.shape
  if (lhs.ndim != 4 or one != 1 or feature_group_count != channels
      or lhs.shape[-1] != channels):
    raise ValueError(f'depthwise convolution expects (B, H, W, C) input and a (kh, kw, 1, C) '
                     f'kernel with feature_group_count=C; got input {lhs.shape}, kernel '
                     f'{rhs.shape}, feature_group_count={feature_group_count}')
  for name, d in (('lhs_dilation', lhs_dilation), ('rhs_dilation', rhs_dilation)):
    if d is not None and any(v != 1 for v in d):
      raise ValueError(f'depthwise convolution: {name}={d} is not supported')
  if dimension_numbers is not None and tuple(dimension_numbers) != _NHWC:
    raise ValueError(f'depthwise convolution expects NHWC/HWIO, got {dimension_numbers}')
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
  x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  (sh, sw), (b, hp, wp, _) = window_strides, x.shape
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  # Kernel offset (i, j) multiplies this strided slice of the padded input.
  taps = [lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1,
                                       channels), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  acc = jnp.float32 if jnp.finfo(lhs.dtype).bits < 32 else lhs.dtype
  out = sum((t * w).astype(acc) for t, w in zip(taps, rhs.reshape(kh * kw, channels)))
  return out.astype(lhs.dtype)
