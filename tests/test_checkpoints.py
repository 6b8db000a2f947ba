"""Which checkpoints a run keeps: the newest ones to resume from, and the best one by a
validation metric in the direction that metric improves."""

import sys

import jax.numpy as jnp
import pytest

from mimic_jax.training import checkpoints


@pytest.mark.parametrize(
  'metric,values,kept',
  [
    ('accuracy', [0.6, 0.8, 0.7], 2),  # higher is better
    ('nss', [1.0, 0.5, 1.5], 3),
    ('kld', [3.0, 1.0, 2.0], 2),  # lower is better
    ('ce', [0.4, 0.5, 0.6], 1),
  ],
)
def test_the_best_checkpoint_is_kept_by_its_metric(tmp_path, metric, values, kept):
  best = checkpoints.Checkpoints(tmp_path, keep=1, kind='best', best_metric=metric)
  for step, value in enumerate(values, start=1):
    others = {'accuracy': 0.5, 'ce': 1.0, 'kld': 2.0, 'nss': 1.0}
    best.save(step, {'w': jnp.full((2,), float(step))}, metrics={**others, metric: value})
  best.wait()
  assert best.manager.all_steps() == [kept]
  assert (tmp_path / 'checkpoints_best' / str(kept)).exists()
  assert not (tmp_path / 'checkpoints').exists()  # the latest checkpoints live apart
  best.close()


def test_only_the_closed_event_loop_noise_of_failed_reads_is_dropped(monkeypatch):
  """The unraisable-exception filter drops asyncio's 'Event loop is closed' (late reads of a
  failed restore) and passes everything else, once installed however often it is asked."""
  import types

  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(u.exc_value))
  checkpoints._drop_late_callbacks_of_failed_reads()
  checkpoints._drop_late_callbacks_of_failed_reads()
  for error in (RuntimeError('Event loop is closed'), RuntimeError('other'), ValueError('x')):
    sys.unraisablehook(types.SimpleNamespace(exc_value=error))
  assert [str(e) for e in seen] == ['other', 'x']
