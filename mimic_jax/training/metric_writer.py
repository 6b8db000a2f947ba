"""Scalars for TensorBoard (tensorboardX, no TensorFlow) and a plain-text log in the workdir.

Only process 0 writes. ``metrics.jsonl`` holds one JSON object per write; ``log.txt`` the
human-readable progress lines; ``tensorboard/`` the event files (``tensorboard --logdir``).
Object storage (``gs://``) cannot append: there the two text files are kept in memory
(starting from what a previous run left) and rewritten whole at each write.

A resumed run replays the steps after its checkpoint: :meth:`MetricWriter.resume_at` drops
their rows (and a last line torn by a crash) from ``metrics.jsonl`` and writes TensorBoard's
session-start marker at the step, with which TensorBoard discards the replayed steps' earlier
events, so every step is shown once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import json
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np


class MetricsFileError(ValueError):
  """A ``metrics.jsonl`` line other than the last is not JSON (names the file and line)."""


def read_rows(path: epath.Path, warn: Callable[[str], None] = logging.warning) -> list[dict]:
  """The rows of a ``metrics.jsonl``. A last line that is not JSON (a run killed while writing
  it) is dropped with a warning through ``warn``; any other raises :class:`MetricsFileError`."""
  lines = path.read_text().splitlines()
  numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
  rows = []
  for i, (n, line) in enumerate(numbered):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i < len(numbered) - 1:
        raise MetricsFileError(
          f'{path} line {n} is not JSON ({e}): {line[:80]!r}. Fix or delete that line.'
        ) from None
      warn(f'Warning: dropped the torn last line {n} of {path} (a run stopped while writing it)')
  return rows


class MetricWriter:
  """Writes scalars and progress lines for one run directory."""

  def __init__(self, workdir: str | epath.PathLike):
    self._active = jax.process_index() == 0
    self._dir = epath.Path(workdir)
    self._tb = None
    self._remote = '://' in str(workdir)
    self._text = {}  # remote only: file name -> full content
    if self._active:
      self._dir.mkdir(parents=True, exist_ok=True)
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(self._dir / 'tensorboard'))
      except Exception as e:
        logging.warning('TensorBoard event files disabled: %s', e)

  def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = '') -> None:
    if not self._active:
      return
    scalars = {f'{prefix}{k}': float(v) for k, v in scalars.items()}
    self._append('metrics.jsonl', json.dumps({'step': step, 'time': time.time(), **scalars}))
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()  # on disk now: a killed run keeps what it logged, like metrics.jsonl

  def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
    """An RGB uint8 ``(H, W, 3)`` image for TensorBoard's images tab."""
    if self._active and self._tb is not None:
      self._tb.add_image(tag, image, step, dataformats='HWC')
      self._tb.flush()

  def write_hparams(self, hparams: dict[str, Any], metric_tags: Sequence[str]) -> None:
    """The run's settings for TensorBoard's hyperparameters tab, with the scalar tags it should
    show beside them (written to this run's own event file)."""
    if not (self._active and self._tb is not None):
      return
    from tensorboardX.summary import hparams as hparams_summary

    values = {
      k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
    }
    for summary in hparams_summary(values, dict.fromkeys(metric_tags, 0.0)):
      self._tb._get_file_writer().add_summary(summary)
    self._tb.flush()

  def resume_at(self, step: int) -> None:
    """Forgets what was logged for steps after ``step`` (the checkpoint a run resumes from)."""
    if not self._active:
      return
    path = self._dir / 'metrics.jsonl'
    if path.exists():
      old = path.read_text()
      kept = ''.join(json.dumps(r) + '\n' for r in read_rows(path, self.log) if r['step'] <= step)
      if kept != old:
        path.write_text(kept)
        self._text.pop('metrics.jsonl', None)
    if self._tb is not None:
      from tensorboardX.proto import event_pb2

      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      self._tb._get_file_writer().add_event(
        event_pb2.Event(step=step, wall_time=time.time(), session_log=start)
      )
      self._tb.flush()

  def log(self, line: str) -> None:
    if not self._active:
      return
    print(line, flush=True)
    self._append('log.txt', line)

  def _append(self, name: str, line: str) -> None:
    path = self._dir / name
    if not self._remote:
      with path.open('a') as f:
        f.write(line + '\n')
      return
    if name not in self._text:
      self._text[name] = path.read_text() if path.exists() else ''
    self._text[name] += line + '\n'
    path.write_text(self._text[name])

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
