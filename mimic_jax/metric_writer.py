"""Scalars for TensorBoard (tensorboardX, no TensorFlow) and a plain-text log in the workdir.

Only process 0 writes. ``metrics.jsonl`` holds one JSON object per write; ``log.txt`` the
human-readable progress lines; ``tensorboard/`` the event files (``tensorboard --logdir``).
"""

from __future__ import annotations

import json
import time

import jax
from absl import logging
from etils import epath


class MetricWriter:
  """Writes scalars and progress lines for one run directory."""

  def __init__(self, workdir: str | epath.PathLike):
    self._active = jax.process_index() == 0
    self._dir = epath.Path(workdir)
    self._tb = None
    if self._active:
      self._dir.mkdir(parents=True, exist_ok=True)
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(str(self._dir / 'tensorboard'))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('TensorBoard event files disabled: %s', e)

  def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = '') -> None:
    if not self._active:
      return
    scalars = {f'{prefix}{k}': float(v) for k, v in scalars.items()}
    with (self._dir / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps({'step': step, 'time': time.time(), **scalars}) + '\n')
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)

  def log(self, line: str) -> None:
    if not self._active:
      return
    logging.info('%s', line)
    print(line, flush=True)
    with (self._dir / 'log.txt').open('a') as f:
      f.write(line + '\n')

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
