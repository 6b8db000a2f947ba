"""glibc malloc settings that keep XLA:CPU's per-step temporaries in memory between steps.

XLA:CPU gives every execution of a compiled step one temporary buffer (XLA's buffer
assignment; the CPU configuration's steps: plain 23 MiB, ``gaze`` 64 MiB, ``ensemble`` 66 MiB,
``mimic_ig`` 184 MiB, ``mimic_gshap`` 370 MiB), allocated with ``malloc`` on a runtime thread
and freed when the step ends. glibc serves such blocks from a fresh ``mmap`` (or a fresh 64 MiB
heap of the thread's arena, unmapped again once empty), so each step faults its temporaries
in again, 4 KiB at a time: 50 ms of system time in a 125 ms ``gaze`` step and 145 ms in a
360 ms ``mimic_ig`` step on the 2-core machine of ``benchmarks/RESULTS.md`` (change 21).

``TUNABLES`` (glibc reads them when a process starts, hence the restart below; ``hugetlb``
from glibc 2.35 on, older versions ignore it):
no ``mmap`` for large blocks, never trim freed memory, grow arenas by 256 MiB so that an empty
heap is kept, and transparent huge pages for what is still mapped. The cost: the process keeps
its peak heap as resident memory.

A thread's arena grows in heaps of at most 64 MiB (glibc's ``HEAP_MAX_SIZE`` on 64-bit), and a
larger block is mmapped and unmapped on free whatever the tunables (``ensemble`` and ``mimic``
temporaries: 35 ms of system time in a 300 ms ``mimic_ig`` step). ``xla_options`` therefore
goes with them: XLA's ``xla_multiheap_size_constraint_per_heap`` splits the temporaries into
allocations of at most ``XLA_TEMP_BLOCK_BYTES``, which the retained heaps serve (change 22).

``config.host_malloc``:

- ``'retain'``: restart the process (same interpreter and arguments, ``os.execve``) with
  ``TUNABLES`` added to ``GLIBC_TUNABLES`` (entries the user set win); an error off glibc.
- ``'glibc_default'``: leave malloc alone.
- ``'auto'``: ``'retain'`` on Linux with glibc when JAX computes on the CPU (``JAX_PLATFORMS``
  starts with ``cpu``, or no accelerator plugin is installed), else ``'glibc_default'``:
  on GPU and TPU the step's temporaries live in device memory.

Call ``apply`` first thing in ``main``, before anything starts threads or touches a device.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys

from absl import logging

SETTINGS = ('auto', 'retain', 'glibc_default')
TUNABLES = {
    'glibc.malloc.mmap_threshold': str(2**31 - 1),
    'glibc.malloc.trim_threshold': str(2**31 - 1),
    'glibc.malloc.top_pad': str(2**28),
    'glibc.malloc.hugetlb': '1',
}
# Set in the restarted process, so that it does not restart again.
MARKER = 'MIMIC_JAX_HOST_MALLOC'
# Half a thread-arena heap, so that a block fits into a heap that already holds others.
XLA_TEMP_BLOCK_BYTES = 32 * 2**20
_XLA_HEAP_OPTION = 'xla_multiheap_size_constraint_per_heap'
_TPU_MODULES = ('libtpu',)


def with_tunables(environ: dict[str, str]) -> dict[str, str]:
  """A copy of ``environ`` whose ``GLIBC_TUNABLES`` also holds ``TUNABLES``; entries already
  there keep their values."""
  entries = [e for e in environ.get('GLIBC_TUNABLES', '').split(':') if e]
  present = {e.split('=', 1)[0] for e in entries}
  entries += [f'{k}={v}' for k, v in TUNABLES.items() if k not in present]
  return {**environ, 'GLIBC_TUNABLES': ':'.join(entries), MARKER: 'retain'}


def is_glibc() -> bool:
  return sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


def jax_computes_on_cpu() -> bool:
  """Whether JAX will run on the CPU, decided without initialising a backend (which must
  wait for ``jax.distributed.initialize``): see ``computes_on_cpu``."""
  import jax  # pylint: disable=g-import-not-at-top
  accelerators = bool(importlib.metadata.entry_points(group='jax_plugins')) or any(
      importlib.util.find_spec(m) for m in _TPU_MODULES)
  return computes_on_cpu(jax.config.jax_platforms, accelerators)


def computes_on_cpu(platforms: str | None, accelerator_plugins: bool) -> bool:
  """``platforms`` (``jax_platforms``, e.g. ``'cuda,cpu'``) when set: its first entry is
  ``cpu``; else: no accelerator plugin (``jax_plugins`` entry points, libtpu) is installed."""
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not accelerator_plugins


def wanted(setting: str) -> bool:
  """Whether ``setting`` asks for ``TUNABLES`` in this process; a ValueError for an unknown
  setting, or ``'retain'`` where the C library is not glibc."""
  if setting not in SETTINGS:
    raise ValueError(f'config.host_malloc={setting!r} is invalid; choose one of '
                     f'{list(SETTINGS)}')
  if setting == 'glibc_default':
    return False
  if setting == 'retain':
    if not is_glibc():
      raise ValueError(f'config.host_malloc="retain" needs Linux with glibc; this is '
                       f'{sys.platform} with {platform.libc_ver()[0] or "an unknown libc"}: '
                       'use "auto" or "glibc_default"')
    return True
  return is_glibc() and jax_computes_on_cpu()


def xla_options() -> dict[str, str]:
  """XLA compiler options that go with ``TUNABLES``: temporaries split into allocations of at
  most ``XLA_TEMP_BLOCK_BYTES``. Empty unless this process runs with the tunables (restarted
  by ``apply``)."""
  if os.environ.get(MARKER) != 'retain':
    return {}
  return {_XLA_HEAP_OPTION: str(XLA_TEMP_BLOCK_BYTES)}


def apply(setting: str) -> None:
  """Restarts this process with ``TUNABLES`` where ``setting`` wants them and they are not
  in place yet; otherwise returns."""
  if not wanted(setting) or os.environ.get(MARKER) == 'retain':
    return
  environ = with_tunables(dict(os.environ))
  logging.info('host_malloc=%s: restarting with GLIBC_TUNABLES=%s', setting,
               environ['GLIBC_TUNABLES'])
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
