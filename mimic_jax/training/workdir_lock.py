"""A workdir is trained by one run at a time: ``<workdir>/run.lock`` names the holder.

A run (all its processes and hosts together) holds the lock from before it touches the workdir
until it ends. Another command that starts training in a held workdir stops at once with a
:class:`WorkdirLockedError` naming the workdir and the holder (host, pid, start time). A lock
whose holder is dead (same host, the pid gone or reused by another program) is taken over
with a warning, as a killed run leaves it behind.

What it guarantees: on one machine, or on hosts sharing a POSIX file system, two runs never
train in one workdir (the file is created with ``O_EXCL``). What it does not: on object storage
(``gs://``) creation is not atomic, so two runs started within the same second can both get it;
a lock held by a run on another host cannot be checked for life, so after that host died it has
to be deleted by hand (the message says which file). Evaluation and ``explain`` only read a
workdir and take no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import datetime
import json
import os
import socket

from etils import epath
import jax

LOCK_NAME = 'run.lock'

# Locks this process holds: path -> how many times taken (main.py and the loop both take it).
_held: dict[str, int] = {}


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir."""


def _start_ticks(pid: int) -> int | None:
  """When ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22), if known."""
  try:
    stat = open(f'/proc/{pid}/stat').read()
  except OSError:
    return None
  return int(stat.rsplit(')', 1)[1].split()[19])


def _holder() -> dict:
  return {
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'pid_start_ticks': _start_ticks(os.getpid()),
    'started': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC'),
    'processes': jax.process_count(),
  }


def _alive(holder: dict) -> bool | None:
  """Whether the holder runs: ``None`` where this host cannot tell (another host)."""
  if holder.get('host') != socket.gethostname():
    return None
  pid = int(holder.get('pid', -1))
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # it exists, as another user
  recorded, now = holder.get('pid_start_ticks'), _start_ticks(pid)
  return recorded is None or now is None or recorded == now


def _describe(holder: dict) -> str:
  return f'host {holder.get("host")}, pid {holder.get("pid")}, started {holder.get("started")}' + (
    f', {holder["processes"]} processes' if holder.get('processes', 1) > 1 else ''
  )


def _create(path: epath.Path, content: str) -> bool:
  """Creates ``path`` holding ``content`` unless it exists (atomically on a local disk)."""
  if '://' in str(path):
    if path.exists():
      return False
    path.write_text(content)
    return True
  try:
    fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    f.write(content)
  return True


def _acquire_here(path: epath.Path, log: Callable[[str], None]) -> str | None:
  """Takes the lock file for this process; returns why not (the holder) or ``None``."""
  mine = json.dumps(_holder())
  for _ in range(3):  # a concurrent takeover can delete the file between our reads
    if _create(path, mine):
      return None
    try:
      holder = json.loads(path.read_text())
    except FileNotFoundError:
      continue
    except (json.JSONDecodeError, UnicodeDecodeError):
      holder = {}
    alive = _alive(holder) if holder else False
    if alive is False:
      log(
        f'Warning: {path} was left by a run that is no longer alive '
        f'({_describe(holder) if holder else "unreadable"}); taking the workdir over.'
      )
      path.unlink(missing_ok=True)
      continue
    where = (
      'a live process'
      if alive
      else 'a process on another host, whose life cannot be checked from here; if no run is '
      f'live there, delete {path}'
    )
    return f'{path.parent} is in use by another run ({_describe(holder)}): {where}.'
  return f'could not take {path}: other processes keep creating and removing it'


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, log: Callable[[str], None] = print) -> Iterator[None]:
  """Holds ``workdir``'s lock for the ``with`` block (re-entrant within a process); raises
  :class:`WorkdirLockedError` if another live run holds it. Over several processes process 0
  takes it for the group and tells the others.

  A workdir this created and left empty (the command failed before writing anything) is
  removed again on the way out."""
  workdir = str(workdir)
  workdir = epath.Path(workdir if '://' in workdir else os.path.abspath(workdir))
  path = workdir / LOCK_NAME
  key = str(path)  # absolute: 'runs/x' and '/repo/runs/x' are one workdir
  if _held.get(key):
    _held[key] += 1
    try:
      yield
    finally:
      _held[key] -= 1
    return
  created = False
  why = None
  if jax.process_index() == 0:
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    why = _acquire_here(path, log)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    import numpy as np

    refused = multihost_utils.broadcast_one_to_all(np.int32(why is not None))
    if refused and why is None:
      why = f'{workdir} is in use by another run (process 0 could not take {path}; see its log)'
  if why is not None:
    if created:
      _remove_if_empty(workdir)
    raise WorkdirLockedError(why)
  _held[key] = 1
  try:
    yield
  finally:
    _held.pop(key, None)
    if jax.process_index() == 0:
      path.unlink(missing_ok=True)
      if created:
        _remove_if_empty(workdir)


def _remove_if_empty(workdir: epath.Path) -> None:
  with contextlib.suppress(OSError):
    if not any(workdir.iterdir()):
      workdir.rmdir()
