"""DenseNet-121 (Huang et al. 2017) in Flax Linen, layer for layer as torchvision's.

Input ``(B, H, W, C)``; logits ``(B, num_classes)``. Exposes each dense block's output as
``block{i}`` and the final feature map (after the last BatchNorm + ReLU, 1024 channels at
H/32) as ``features`` through ``perturb``/``sow`` for Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any


class DenseNet(nn.Module):
  """DenseNet-BC with ``block_sizes`` layers per dense block."""

  block_sizes: Sequence[int] = (6, 12, 24, 16)
  growth_rate: int = 32
  init_features: int = 64
  bn_size: int = 4
  num_classes: int = 3
  norm: str = 'batch'  # BatchNorm only, as torchvision
  dtype: Any = None  # computation dtype (None: the inputs'; parameters stay float32)
  conv: ModuleDef = nn.Conv  # every convolution's module (flax's, or a drop-in replacement)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype)
    x = conv(self.init_features, (7, 7), (2, 2), padding=3, name='conv0')(x)
    x = nn.relu(norm(name='norm0')(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i, n_layers in enumerate(self.block_sizes):
      for j in range(n_layers):
        y = nn.relu(norm(name=f'block{i + 1}_layer{j + 1}_norm1')(x))
        y = conv(self.bn_size * self.growth_rate, (1, 1), name=f'block{i + 1}_layer{j + 1}_conv1')(
          y
        )
        y = nn.relu(norm(name=f'block{i + 1}_layer{j + 1}_norm2')(y))
        y = conv(self.growth_rate, (3, 3), padding=1, name=f'block{i + 1}_layer{j + 1}_conv2')(y)
        x = jnp.concatenate([x, y], axis=-1)
      x = self.perturb(f'block{i + 1}', x)
      self.sow('intermediates', f'block{i + 1}', x)
      if i < len(self.block_sizes) - 1:
        x = nn.relu(norm(name=f'transition{i + 1}_norm')(x))
        x = conv(x.shape[-1] // 2, (1, 1), name=f'transition{i + 1}_conv')(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(norm(name='norm5')(x))
    x = self.perturb('features', x)
    self.sow('intermediates', 'features', x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(
      jnp.mean(x, axis=(1, 2))
    )
    return logits if self.dtype is None else logits.astype(jnp.float32)


DenseNet121 = functools.partial(DenseNet, block_sizes=(6, 12, 24, 16))
