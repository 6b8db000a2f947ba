"""Starting JAX's multi-process runtime: every host runs the same program.

``initialize(...)`` must run before anything touches a device. Three cases:

- explicit: ``coordinator_address`` (``host:port`` of process 0), ``num_processes`` and
  ``process_id`` given (``main.py --coordinator_address=... --num_processes=...
  --process_id=...``): a multi-GPU host with one process per GPU, a cluster without a
  scheduler JAX knows, or several CPU processes on loopback (tests). On CPU the cross-process
  collectives are gloo's.
- detected (``--multiprocess=on``): ``jax.distributed.initialize()`` finds the other
  workers by itself, on Cloud TPU VMs (from the metadata server), GKE, Slurm. ``launch/``
  passes it. ``auto`` starts it only where the environment says so without a network query
  (``TPU_WORKER_HOSTNAMES`` with several workers, ``SLURM_JOB_ID``,
  ``JAX_COORDINATOR_ADDRESS``), since on a non-TPU single host it fails.
- otherwise (``auto`` without those, or ``off``) a single process, nothing to start.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import os

from absl import logging
import jax


@dataclasses.dataclass(frozen=True)
class Settings:
  """How this process joins the run. ``mode``: ``auto``, ``on`` or ``off`` (see above)."""

  mode: str = 'auto'
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None


def _tpu_worker_count(environ: Mapping[str, str] | None) -> int:
  """Workers of this Cloud TPU slice, from the variables the TPU VM runtime sets (0: not a
  TPU VM)."""
  hosts = environ.get('TPU_WORKER_HOSTNAMES', '')
  return len([h for h in hosts.split(',') if h]) if hosts else 0


def plan(settings: Settings, environ: Mapping[str, str] | None = None) -> dict | None:
  """The keyword arguments of ``jax.distributed.initialize`` for ``settings``, or None when
  this is a single-process run. Raises ValueError on incomplete explicit settings."""
  environ = os.environ if environ is None else environ
  explicit = (settings.coordinator_address, settings.num_processes, settings.process_id)
  if settings.mode == 'off':
    if any(v is not None for v in explicit):
      raise ValueError(
        '--multiprocess=off contradicts --coordinator_address/--num_processes/--process_id'
      )
    return None
  if settings.mode not in ('auto', 'on', 'off'):
    raise ValueError(f'--multiprocess={settings.mode!r}; use auto, on or off')
  if any(v is not None for v in explicit):
    missing = [
      n
      for n, v in zip(('coordinator_address', 'num_processes', 'process_id'), explicit)
      if v is None
    ]
    if missing:
      raise ValueError(
        f'multi-process run needs --{", --".join(missing)} as well (all three '
        'of --coordinator_address, --num_processes, --process_id)'
      )
    if not 0 <= settings.process_id < settings.num_processes:
      raise ValueError(
        f'--process_id={settings.process_id} is outside [0, '
        f'--num_processes={settings.num_processes})'
      )
    kwargs = {
      'coordinator_address': settings.coordinator_address,
      'num_processes': settings.num_processes,
      'process_id': settings.process_id,
    }
    if settings.local_device_ids is not None:
      kwargs['local_device_ids'] = list(settings.local_device_ids)
    return kwargs
  if (
    settings.mode == 'on'
    or _tpu_worker_count(environ) > 1
    or 'SLURM_JOB_ID' in environ
    or 'JAX_COORDINATOR_ADDRESS' in environ
  ):
    return {}
  return None


def initialize(settings: Settings) -> None:
  """Joins the multi-process run that ``settings`` describe (no-op for one process)."""
  kwargs = plan(settings)
  if kwargs is None:
    return
  if kwargs.get('coordinator_address') is not None:
    # CPU processes exchange gradients through gloo; GPUs and TPUs use their own collectives.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  logging.info(
    'joined the run as process %d of %d (%d local devices of %d)',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
