"""Finiteness checks: a NaN or infinity in a state or an output stops the work, named.

A diverged run can keep finite training losses while its parameters or validation loss are
NaN; these checks make that an error naming the step and what went non-finite, instead of a
report of NaN maps with exit code 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class NonFiniteError(FloatingPointError):
  """A state, a loss or an output holds NaN or infinite values."""


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def non_finite_leaves(tree: Any, limit: int = 5) -> list[str]:
  """The paths of (up to ``limit``) floating-point leaves of ``tree`` that hold a NaN or an
  infinity, each with how many of its values do; ``[]`` if all are finite."""
  if bool(_all_finite(tree)):
    return []
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree)):
    leaf = np.asarray(leaf)
    if not np.issubdtype(leaf.dtype, np.inexact):
      continue
    bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
    if bad:
      found.append(f'{jax.tree_util.keystr(path)} ({bad} of {leaf.size} values)')
      if len(found) == limit:
        found.append('...')
        break
  return found


def check_state(state: Any, what: str) -> None:
  """Raises :class:`NonFiniteError` if the parameters or batch statistics of ``state`` (a
  ``TrainState``) hold NaN or infinite values; ``what`` says which state (e.g. 'step 8')."""
  bad = non_finite_leaves({'params': state.params, 'batch_stats': state.batch_stats})
  if bad:
    raise NonFiniteError(f'non-finite parameters at {what}: {", ".join(bad)}')
