"""``ensemble``: M sub-models trained on the sum of their cross-entropies (the control of the
explanation ensemble: the same sub-models and prediction, no discriminator)."""

from __future__ import annotations

from mimic_jax.methods import base


class Ensemble(base.Method):
  """``sum_m CE_m``; prediction: the mean of the sub-models' log-softmax."""

  @property
  def num_members(self) -> int:
    return self.config.ensemble.num_models
