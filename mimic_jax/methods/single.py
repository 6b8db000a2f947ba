"""``single``: one model trained on the cross-entropy (the baseline)."""

from __future__ import annotations

from mimic_jax.methods import base


class Single(base.Method):
  """``CE`` of one model."""

  @property
  def num_members(self) -> int:
    return 1
