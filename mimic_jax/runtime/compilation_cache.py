"""JAX's persistent compilation cache, on by default: a second run of the same programs (a
resumed run, another seed, an evaluation, a test) loads them instead of compiling.

The folder is ``$JAX_COMPILATION_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/mimic_jax/xla``
(``~/.cache/mimic_jax/xla``). ``JAX_ENABLE_COMPILATION_CACHE=false`` turns it off. Entries are
keyed by the program, the jaxlib version, the XLA flags and the device kind, so a stale entry
is never used; delete the folder to reclaim its space.
"""

from __future__ import annotations

import os
import pathlib

import jax


def default_dir() -> pathlib.Path:
  """``$XDG_CACHE_HOME/mimic_jax/xla`` (``~/.cache/mimic_jax/xla``)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(base) / 'mimic_jax' / 'xla'


def enable() -> str | None:
  """Points JAX's cache at the default folder unless the environment chose one or turned the
  cache off; returns the folder in use (``None``: off)."""
  if os.environ.get('JAX_ENABLE_COMPILATION_CACHE', '').lower() in ('0', 'false', 'no'):
    return None
  folder = jax.config.jax_compilation_cache_dir
  if not folder:
    folder = str(default_dir())
    jax.config.update('jax_compilation_cache_dir', folder)
  return folder
