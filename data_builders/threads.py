"""Ordered, bounded work in threads for the builders."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
import concurrent.futures
from typing import TypeVar

Item = TypeVar('Item')
Result = TypeVar('Result')


def ordered_map(
  fn: Callable[[Item], Result], items: Sequence[Item], num_workers: int | None
) -> Iterator[Result]:
  """``fn`` of each item, in order, computed by ``num_workers`` threads (0 or None: here).

  Threads, not processes: Pillow's decoding and NumPy/SciPy release the GIL, and threads need
  no process that would import the caller's ``__main__`` again (a script without a main
  guard, stdin, a notebook). At most ``4 * num_workers`` results are computed ahead, so memory
  stays bounded.
  """
  if not num_workers or len(items) <= 1:
    yield from map(fn, items)
    return
  window = 4 * num_workers
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    pending = collections.deque(pool.submit(fn, item) for item in items[:window])
    for item in items[window:]:
      yield pending.popleft().result()
      pending.append(pool.submit(fn, item))
    while pending:
      yield pending.popleft().result()
