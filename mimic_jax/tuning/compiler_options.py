"""XLA:CPU compiler options: which library runs the dense convolutions.

jaxlib 0.12 hands XLA:CPU's convolutions (and their gradients) to YNNPACK; XLA's own Eigen
convolutions run the demo configuration's training steps faster (``benchmarks/RESULTS.md``).
The option applies per compiled function (``jax.jit(..., compiler_options=...)``).
"""

from __future__ import annotations

import functools

import jax

LIBRARIES = ('auto', 'xla_default', 'eigen')
_YNN_FUSIONS = 'xla_cpu_experimental_ynn_fusion_type'
# jaxlib 0.12's default YNNPACK fusions (dots, reductions, convolutions) less convolutions;
# tests check that nothing else changes.
_WITHOUT_CONVOLUTIONS = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'


def for_library(library: str) -> dict[str, str]:
  """The options that make XLA:CPU run convolutions with ``library`` (resolved: not
  ``'auto'``): none for ``'xla_default'``."""
  return {_YNN_FUSIONS: _WITHOUT_CONVOLUTIONS} if library == 'eigen' else {}


def eigen_available() -> bool:
  """Whether this jaxlib's CPU compiler has the option that takes convolutions from YNNPACK."""
  return accepted(_YNN_FUSIONS, _WITHOUT_CONVOLUTIONS)


@functools.cache
def accepted(option: str, value: str) -> bool:
  """Whether this jaxlib's CPU compiler takes ``option=value`` (it rejects unknown ones)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(0.0).compile()
  except jax.errors.JaxRuntimeError:
    return False
  return True
