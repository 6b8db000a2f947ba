"""A workdir belongs to one run: its ``config.json`` says which.

Rerunning a command in a workdir resumes that run. A config that differs from the stored one
only in what may change on resume (how long to train, logging, checkpointing, evaluation, how
XLA computes, where the data lives) is logged and accepted; any other difference (the model,
the method, the data, the optimiser, the seed) is an error naming every differing key, since
the checkpoints there could not be resumed and would be mixed with the new run's. With
``new_run=True`` the old run's files are moved aside to ``previous_runs/<time>/``, never
deleted, and the new run starts in the emptied workdir.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import time
from typing import Any

from etils import epath
import jax
import ml_collections

# Keys (dotted prefixes) whose change does not make the stored checkpoints another run's.
RESUMABLE = (
  'num_epochs',
  'num_train_steps',
  'log_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'eval_every_epochs',
  'select_checkpoint',
  'best_metric',
  'evaluation.',
  'xla.',
  'data.data_dir',
  'data.manual_dir',
  'data.local_cache_dir',
  'data.threads',
  'data.prefetch',
)
# What a workdir holds of its run; ``new_run`` moves these aside.
RUN_FILES = ('checkpoints', 'config.json', 'metrics.jsonl', 'log.txt', 'tensorboard', 'eval')


class WorkdirConflictError(ValueError):
  """The workdir holds another run (a config that differs in keys that define the run)."""


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def differences(stored: dict, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """``{dotted key: (stored value, new value)}`` where ``config`` differs from ``stored`` (the
  JSON of ``config.json``), compared as JSON."""
  old = _flatten(stored)
  new = _flatten(json.loads(config.to_json_best_effort()))
  return {
    k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
  }


def resumable(key: str) -> bool:
  return any(key == r or (r.endswith('.') and key.startswith(r)) for r in RESUMABLE)


def claim(
  workdir: epath.Path,
  config: ml_collections.ConfigDict,
  log: Callable[[str], None],
  new_run: bool = False,
) -> None:
  """Checks that ``workdir`` holds no other run than ``config``'s (see the module docstring),
  moves an old run aside with ``new_run``, and writes ``config.json`` (process 0)."""
  stored_path = workdir / 'config.json'
  if stored_path.exists():
    stored = json.loads(stored_path.read_text())
    diff = differences(stored, config)
    defining = {k: v for k, v in diff.items() if not resumable(k)}
    if defining and not new_run:
      lines = '\n'.join(
        f'  config.{k}: {old!r} there, {new!r} now' for k, (old, new) in defining.items()
      )
      raise WorkdirConflictError(
        f'{workdir} holds another run: its config.json differs in keys that define a run:\n'
        f'{lines}\nUse another --workdir, or pass --new_run to move that run aside (to '
        f'{workdir}/previous_runs/) and start a new one here.'
      )
    if defining:
      moved = _move_aside(workdir)
      log(f'--new_run: the previous run in {workdir} was moved to {moved}')
    elif diff:
      log(
        'Resuming with changed settings: '
        + ', '.join(f'config.{k} {old!r} -> {new!r}' for k, (old, new) in diff.items())
      )
  elif (workdir / 'checkpoints').exists() and any((workdir / 'checkpoints').iterdir()):
    if not new_run:
      raise WorkdirConflictError(
        f'{workdir}/checkpoints holds checkpoints but {stored_path} is missing, so nothing says '
        'which run they belong to. Use another --workdir, or pass --new_run to move them aside.'
      )
    moved = _move_aside(workdir)
    log(f'--new_run: the checkpoints in {workdir} were moved to {moved}')
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    stored_path.write_text(config.to_json_best_effort(indent=1))


def _move_aside(workdir: epath.Path) -> epath.Path:
  """Moves the run files of ``workdir`` to ``previous_runs/<UTC time>/``; returns that folder."""
  target = workdir / 'previous_runs' / time.strftime('%Y%m%d-%H%M%S', time.gmtime())
  if jax.process_index() == 0:
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
      if (workdir / name).exists():
        (workdir / name).rename(target / name)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices('mimic_jax: previous run moved aside')
  return target
