"""Scalars for TensorBoard (tensorboardX, no TensorFlow) and a plain-text log in the workdir.

Only process 0 writes. ``metrics.jsonl`` holds one JSON object per write; ``log.txt`` the
human-readable progress lines; ``tensorboard/`` the event files (``tensorboard --logdir``).
Object storage (``gs://``) cannot append: there the two text files are kept in memory
(starting from what a previous run left) and rewritten whole at each write.
"""

from __future__ import annotations

import json
import time

from absl import logging
from etils import epath
import jax


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

  def log(self, line: str) -> None:
    if not self._active:
      return
    logging.info('%s', line)
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
