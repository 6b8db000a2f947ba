"""A workdir belongs to one run: its ``config.json`` says which.

Rerunning a command in a workdir resumes that run. A config that differs from the stored one
only in what may change on resume (how long to train, logging, checkpointing, evaluation, how
XLA computes, where the data lives) is logged and accepted; any other difference (the model,
the method, the data, the optimiser, the seed) is an error naming every differing key, since
the checkpoints there could not be resumed and would be mixed with the new run's. With
``new_run=True`` the old run's files are moved aside to ``previous_runs/<time>/``, never
deleted (everything in it but ``previous_runs/`` and the lock: checkpoints of both kinds, logs,
evaluations, explanations), and the new run starts in the emptied workdir.
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
# What ``new_run`` leaves in place: the earlier runs and the lock of the run now starting.
# Everything else in a workdir is the old run's and moves aside with it.
KEPT_BY_NEW_RUN = ('previous_runs', 'run.lock')
# The folders of a run's checkpoints (``checkpoints.Checkpoints``).
CHECKPOINT_DIRS = ('checkpoints', 'checkpoints_best')


# Keys (dotted prefixes) evaluation may set otherwise than the run's ``config.json``: what
# may change on resume, the data it evaluates on, and how many images a batch holds.
EVALUATION_MAY_CHANGE = RESUMABLE + ('data.', 'batch_size')


class WorkdirConflictError(ValueError):
  """The workdir holds another run (a config that differs in keys that define the run)."""


class EvaluationConfigError(WorkdirConflictError):
  """A config given to evaluate a run differs from the run's own in keys that define it."""


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


def fill_missing(
  stored: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict
) -> dict[str, Any]:
  """Gives ``stored`` (a ``config.json`` written by an older version) every key of
  ``defaults`` it lacks, with today's default, so that evaluation can read it (training keys
  change nothing in trained checkpoints; the keys evaluation reads, ``evaluation.*`` and the
  probe's ``mimic.disc_arch``, default to what older versions did); returns ``{dotted key:
  value}`` of those it added."""
  have = flat_config(stored)
  added = {}
  for key, value in flat_config(defaults).items():
    inside = lambda a, b: a.startswith(b + '.')  # noqa: E731
    if key in have or any(inside(h, key) or inside(key, h) for h in have):
      continue  # recorded, as a value or as a group of keys (data.synthetic: None by default)
    node = stored
    *path, leaf = key.split('.')
    source = defaults
    for part in path:
      source = source[part]
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = source[leaf]
    added[key] = value
  return added


def check(
  workdir: str | os.PathLike, config: ml_collections.ConfigDict, new_run: bool = False
) -> dict[str, tuple[Any, Any]]:
  """Raises :class:`WorkdirConflictError` if ``workdir`` holds another run and ``new_run`` is
  not set; returns the differences to the stored config (nothing is written)."""
  workdir = epath.Path(workdir)
  stored = stored_config(workdir)
  if stored is None:
    for ckpt in _unowned_checkpoints(workdir):
      if not new_run:
        raise WorkdirConflictError(
          f'{ckpt} holds checkpoints but {workdir}/config.json is missing, so nothing says '
          'which run they belong to. Use another --workdir, or pass --new_run to move them aside.'
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


def check_evaluation(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
  """Raises :class:`EvaluationConfigError` naming every key, other than
  :data:`EVALUATION_MAY_CHANGE`, in which ``config`` differs from ``workdir``'s
  ``config.json``: the checkpoints there hold that run's model, method and settings, and
  would fail to restore or be explained as another model. Nothing to check without a
  ``config.json`` (a run trained elsewhere); keys it predates (:func:`fill_missing`) are not
  compared."""
  stored = stored_config(workdir)
  if stored is None:
    return
  diff = differences(stored.to_dict(), config)
  recorded = flat_config(stored)
  defining = {
    k: v
    for k, v in diff.items()
    if not any(k == r or (r.endswith('.') and k.startswith(r)) for r in EVALUATION_MAY_CHANGE)
    and k in recorded
  }
  if defining:
    lines = '\n'.join(
      f'  config.{k}: {old!r} in config.json, {new!r} given' for k, (old, new) in defining.items()
    )
    raise EvaluationConfigError(
      f'{workdir} holds a run trained with other settings than the config given for '
      f'evaluation:\n{lines}\nIts checkpoints hold that run: evaluate with its own values '
      '(main.py --mode=evaluate reads its config.json; drop those flags), or another --workdir.'
    )


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
    not stored_path.exists() and bool(_unowned_checkpoints(workdir))
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


def _unowned_checkpoints(workdir: epath.Path) -> list[epath.Path]:
  """The checkpoint folders of ``workdir`` that hold anything."""
  folders = [workdir / name for name in CHECKPOINT_DIRS]
  return [f for f in folders if f.exists() and any(f.iterdir())]


def _move_aside(workdir: epath.Path) -> epath.Path:
  """Moves everything of the old run in ``workdir`` (all but :data:`KEPT_BY_NEW_RUN`) to
  ``previous_runs/<UTC time>/``; returns that folder."""
  stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime())
  target = workdir / 'previous_runs' / stamp
  if jax.process_index() == 0:
    n = 1
    while target.exists():  # two new runs within a second
      n += 1
      target = workdir / 'previous_runs' / f'{stamp}-{n}'
    target.mkdir(parents=True)
    for item in workdir.iterdir():
      if item.name not in KEPT_BY_NEW_RUN:
        item.rename(target / item.name)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices('mimic_jax: previous run moved aside')
  return target
