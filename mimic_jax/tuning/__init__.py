"""Backend-specific tuning behind one seam: ``resolve(config.xla)`` -> :class:`Tuning`.

Everything here changes how XLA computes a run's programs, never what they compute (the same
numbers up to float rounding, tested); models, methods and the training loop receive the
resolved choices and contain no backend names. It exists for XLA:CPU, where CI and the
embedded demo run: on GPUs and TPUs every ``auto`` resolves to plain JAX and flax, except
that a single TPU device runs the sub-models of an ensemble vmapped.

``config.xla``:

- ``conv_gradients``: ``'custom'`` runs every dense convolution as ``cpu_convs.Conv``, whose
  custom VJP XLA:CPU runs faster, above all in double backprop; ``'lax'``: flax's
  ``nn.Conv``; ``'auto'``: custom on CPU.
- ``cpu_conv_library``: ``'eigen'`` (XLA's own convolutions instead of YNNPACK's,
  ``compiler_options.py``), ``'xla_default'``, or ``'auto'``: eigen on CPU where this jaxlib
  has the option.
- ``ensemble_execution``: ``'vmap'``, ``'unrolled'`` or ``'scan'`` sub-models in one program
  (``mimic_jax.methods.base.map_members``; ``scan`` compiles one copy of the network, for
  compile time, never chosen by ``auto``: XLA:CPU runs its steps over 20 x slower), or
  ``'per_member'``: the training step's gradient as one program with one copy of the network,
  called once per sub-model (``mimic_jax.training.steps.PerMemberStep``; every other program
  unrolled); ``'auto'``: per_member on CPU, where it compiles the ``mimic`` step in a third of
  the time and runs its steps within 10% of one program's; vmap on a single TPU device; else
  unrolled (XLA:CPU's second-order gradients of vmap's grouped convolutions are slow, XLA:GPU
  did not compile them for DenseNet-121 in minutes, and on a mesh of several devices XLA
  replicates them instead of splitting the batch, openxla/xla#47945). Whether per_member pays
  on a GPU or TPU is not measured yet.

The process's malloc matters too on CPU, but only through the environment at start-up:
``scripts/xla_cpu_env.sh`` (see ``docs/performance.md``).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from mimic_jax.tuning import compiler_options
from mimic_jax.tuning import cpu_convs

# Allowed values, gathered by ``mimic_jax.config_check``.
CHOICES = {
  'xla.conv_gradients': ('auto', 'lax', 'custom'),
  'xla.cpu_conv_library': compiler_options.LIBRARIES,
  'xla.ensemble_execution': ('auto', 'vmap', 'unrolled', 'scan', 'per_member'),
}


@dataclasses.dataclass(frozen=True)
class Tuning:
  """A run's resolved backend choices (no ``'auto'`` left)."""

  backend: str
  conv_gradients: str  # 'lax' | 'custom'
  cpu_conv_library: str  # 'xla_default' | 'eigen' ('xla_default' off CPU)
  ensemble_execution: str  # in one program: 'vmap' | 'unrolled' | 'scan'
  per_member_steps: bool = False  # the step's gradient as one program per sub-model

  @property
  def conv(self) -> Any:
    """The module class of the models' dense convolutions."""
    return cpu_convs.Conv if self.conv_gradients == 'custom' else nn.Conv

  @property
  def compiler_options(self) -> dict[str, str]:
    """XLA options of every jit-compiled function of the run."""
    return compiler_options.for_library(self.cpu_conv_library)

  def jit(self, fn: Callable, **kwargs: Any) -> Callable:
    """``jax.jit(fn, **kwargs)`` with the run's compiler options."""
    return jax.jit(fn, compiler_options=self.compiler_options or None, **kwargs)

  def describe(self) -> str:
    """One line for the run's log."""
    return (
      f'backend {self.backend}: conv_gradients={self.conv_gradients}, '
      f'cpu_conv_library={self.cpu_conv_library}, '
      f'ensemble_execution={"per_member" if self.per_member_steps else self.ensemble_execution}'
    )


def resolve(
  xla: ml_collections.ConfigDict, backend: str | None = None, device_count: int | None = None
) -> Tuning:
  """Resolves every ``'auto'`` of ``config.xla`` for ``backend`` (default: JAX's) with
  ``device_count`` devices (default: all)."""
  backend = backend or jax.default_backend()
  device_count = jax.device_count() if device_count is None else device_count
  on_cpu = backend == 'cpu'
  conv_gradients = xla.conv_gradients
  if conv_gradients == 'auto':
    conv_gradients = 'custom' if on_cpu else 'lax'
  library = xla.cpu_conv_library
  if not on_cpu:
    library = 'xla_default'
  elif library == 'auto':
    library = 'eigen' if compiler_options.eigen_available() else 'xla_default'
  elif library == 'eigen' and not compiler_options.eigen_available():
    raise ValueError(
      f'config.xla.cpu_conv_library="eigen" needs an XLA option that jaxlib '
      f'{jax.__version__} does not have; use "auto" or "xla_default"'
    )
  execution = xla.ensemble_execution
  if execution == 'auto':
    if on_cpu:
      execution = 'per_member'
    else:
      execution = 'vmap' if backend == 'tpu' and device_count == 1 else 'unrolled'
  per_member = execution == 'per_member'
  return Tuning(
    backend=backend,
    conv_gradients=conv_gradients,
    cpu_conv_library=library,
    ensemble_execution='unrolled' if per_member else execution,
    per_member_steps=per_member,
  )
