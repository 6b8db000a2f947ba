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
import os
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


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``{dotted key: value}`` of every setting of ``config`` (as stored in ``config.json``)."""
  return _flatten(json.loads(config.to_json_best_effort()))


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


def stored_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict | None:
  """The config a workdir's run was started with (its ``config.json``), or ``None``."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    return None
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e})') from e


def check(
  workdir: str | os.PathLike, config: ml_collections.ConfigDict, new_run: bool = False
) -> dict[str, tuple[Any, Any]]:
  """Raises :class:`WorkdirConflictError` if ``workdir`` holds another run and ``new_run`` is
  not set; returns the differences to the stored config (nothing is written)."""
  workdir = epath.Path(workdir)
  stored = stored_config(workdir)
  if stored is None:
    ckpt = workdir / 'checkpoints'
    if ckpt.exists() and any(ckpt.iterdir()) and not new_run:
      raise WorkdirConflictError(
        f'{ckpt} holds checkpoints but {workdir}/config.json is missing, so nothing says which '
        'run they belong to. Use another --workdir, or pass --new_run to move them aside.'
      )
    return {}
  diff = differences(stored.to_dict(), config)
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
  return diff


def claim(
  workdir: epath.Path,
  config: ml_collections.ConfigDict,
  log: Callable[[str], None],
  new_run: bool = False,
) -> None:
  """Checks that ``workdir`` holds no other run than ``config``'s (:func:`check`), moves an
  old run aside with ``new_run``, and writes ``config.json`` (process 0)."""
  diff = check(workdir, config, new_run)
  stored_path = workdir / 'config.json'
  needs_move = any(not resumable(k) for k in diff) or (
    not stored_path.exists() and (workdir / 'checkpoints').exists()
  )
  if new_run and needs_move:
    moved = _move_aside(workdir)
    log(f'--new_run: the previous run in {workdir} was moved to {moved}')
  elif diff:
    log(
      'Resuming with changed settings: '
      + ', '.join(f'config.{k} {old!r} -> {new!r}' for k, (old, new) in diff.items())
    )
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
