"""XLA compiler options for a run's jitted functions: ``jax.jit(f, compiler_options=...)``.

``config.model.cpu_conv_library`` picks the library that runs dense convolutions (and their
gradients) on XLA:CPU. jaxlib 0.12 hands them to YNNPACK; XLA's own Eigen convolutions ran
every training step of the CPU configuration 14-25% faster (``benchmarks/RESULTS.md``,
change 9): YNNPACK computed the kernel gradients of the 3 x 3 convolutions at ~20 GFLOP/s.

- ``'xla_default'``: no options; XLA's choice.
- ``'eigen'``: YNNPACK keeps the dots and reductions it takes by default, not convolutions.
  An error where this jaxlib does not have the option.
- ``'auto'``: ``'eigen'`` on CPU where this jaxlib has the option, else ``'xla_default'``.

Where ``host_malloc`` restarted the process with its glibc settings, the options also split
XLA:CPU's temporaries into blocks that glibc keeps mapped (``host_malloc.xla_options``).

Options apply per compiled function, so two choices can be compared in one process.
"""

from __future__ import annotations

import functools

import jax
import ml_collections

from mimic_jax import host_malloc

LIBRARIES = ('auto', 'xla_default', 'eigen')
_YNN_FUSIONS = 'xla_cpu_experimental_ynn_fusion_type'
# jaxlib 0.12's default YNNPACK fusions (dots, reductions, convolutions) less convolutions;
# tests/test_compile_options.py checks that nothing else changes.
_WITHOUT_CONVOLUTIONS = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'


def for_config(config: ml_collections.ConfigDict) -> dict[str, str] | None:
  """The ``compiler_options`` for ``config.model.cpu_conv_library`` (default ``auto``) and
  the process's malloc settings on this backend: a dict, or ``None`` for XLA's defaults."""
  library = config.model.get('cpu_conv_library', 'auto')
  if library not in LIBRARIES:
    raise ValueError(f'config.model.cpu_conv_library={library!r} is invalid; choose one of '
                     f'{list(LIBRARIES)}')
  if jax.default_backend() != 'cpu':
    return None
  options = {}
  if library != 'xla_default':
    if _accepted(_YNN_FUSIONS, _WITHOUT_CONVOLUTIONS):
      options[_YNN_FUSIONS] = _WITHOUT_CONVOLUTIONS
    elif library == 'eigen':
      raise ValueError(f'config.model.cpu_conv_library="eigen" needs the XLA option '
                       f'{_YNN_FUSIONS} (jaxlib 0.12), which jaxlib {jax.lib.__version__} '
                       f'does not have; use "auto" or "xla_default"')
  options.update((k, v) for k, v in host_malloc.xla_options().items() if _accepted(k, v))
  return options or None


@functools.cache
def _accepted(option: str, value: str) -> bool:
  """Whether this jaxlib's CPU compiler takes ``option=value`` (it rejects unknown ones)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(0.0).compile()
  except jax.errors.JaxRuntimeError:
    return False
  return True
