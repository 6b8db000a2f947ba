"""Preemption: SIGTERM (what a spot or preemptible VM receives) becomes a checkpoint at the
next step boundary and exit code 42; rerunning the same command resumes."""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np

EXIT_CODE = 42


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint of ``step`` was written. Rerun the command to resume."""

  def __init__(self, step: int):
    super().__init__(
      f'preempted (SIGTERM): checkpoint at step {step} written; rerun the same command to resume'
    )
    self.step = step


class SigtermFlag:
  """Records SIGTERM instead of dying mid-step (a context manager; main thread only)."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self) -> SigtermFlag:
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    del signum, frame
    self.received = True

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    """True if any process got SIGTERM, so that all stop at the same step."""
    if jax.process_count() == 1:
      return self.received
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(self.received))))
