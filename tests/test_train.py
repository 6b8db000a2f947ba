"""Training end to end: every method, 1 vs 8 devices, resume, non-finite loss, config checks."""

import io
import json
import struct

import jax
import numpy as np
from PIL import Image
import pytest
from tensorboardX.proto import event_pb2

from configs import mimic as mimic_config
from configs import test as test_config
from mimic_jax import config_check
from mimic_jax.training import loop


def _config(tiny_dataset, variant='mimic', **overrides):
  c = test_config.get_config(variant)
  c.data.data_dir, c.data.manual_dir = tiny_dataset
  for k, v in overrides.items():
    node = c
    *path, leaf = k.split('.')
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


def _leaves(state):
  return [
    np.asarray(x)
    for x in jax.tree.leaves(
      (state.params, state.batch_stats, state.method_state.params if state.method_state else None)
    )
  ]


@pytest.mark.parametrize('variant', ['baseline', 'ensemble', 'gaze'])
def test_each_method_trains_and_writes_logs(tiny_dataset, tmp_path, variant):
  config = _config(tiny_dataset, variant)
  state = loop.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  assert int(state.step) == 4
  assert (tmp_path / 'checkpoints' / '4').exists()
  log = (tmp_path / 'log.txt').read_text()
  assert 'step 4/4' in log and 'ex/s' in log and 'ETA' in log and 'validation at step 4' in log
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  # 4 train steps, 1 validation and, for a method with weighted loss terms, their gradients.
  assert len(lines) == (6 if variant == 'gaze' else 5)
  if variant == 'gaze':
    assert '"train/penalty": 0.0' not in lines[0]
    terms = json.loads(lines[-1])
    assert terms['step'] == 4 and terms['gradients/weight_over_ce'] > 0
    assert terms['gradients/grad_cam_weight_over_ce'] >= 0  # Grad-CAM can be all 0 this early


def test_one_and_eight_devices_give_the_same_parameters(tiny_dataset, tmp_path):
  """``mimic`` alternating by step (discriminator, adversarial, discriminator, adversarial):
  both phases, the double-backprop step included."""
  assert jax.device_count() == 8
  config = _config(tiny_dataset, 'mimic', **{'mimic.alternation': 'step'})
  one = loop.train_and_evaluate(config, str(tmp_path / 'one'), devices=jax.devices()[:1])
  eight = loop.train_and_evaluate(config, str(tmp_path / 'eight'), devices=jax.devices())
  # The 8-device step sums its gradient in another order; Adam divides by sqrt(v), so on a
  # parameter whose gradient is near zero that float32 rounding moves an update by up to a
  # step's size (lr). 1e-5 is 0.3% of one step at the test config's learning rate, 3e-3.
  for a, b in zip(_leaves(one), _leaves(eight)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)


def test_one_program_per_sub_model_trains_like_one_program(tiny_dataset, tmp_path):
  """``ensemble_execution='per_member'`` on the 8-device mesh, both ``mimic`` phases, against
  the one-program step on one device (the tolerance of the test above)."""
  config = _config(tiny_dataset, 'mimic', **{'mimic.alternation': 'step'})
  one = loop.train_and_evaluate(config, str(tmp_path / 'one'), devices=jax.devices()[:1])
  config.xla.ensemble_execution = 'per_member'
  per = loop.train_and_evaluate(config, str(tmp_path / 'per'), devices=jax.devices())
  assert 'ensemble_execution=per_member' in (tmp_path / 'per' / 'log.txt').read_text()
  for a, b in zip(_leaves(one), _leaves(per)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)


def test_resumed_run_equals_uninterrupted_run(tiny_dataset, tmp_path):
  config = _config(
    tiny_dataset,
    'mimic',
    num_train_steps=6,
    checkpoint_every_steps=2,
    **{'mimic.alternation': 'step'},
  )
  full = loop.train_and_evaluate(config, str(tmp_path / 'full'), devices=jax.devices()[:1])
  loop.train_and_evaluate(config, str(tmp_path / 'cut'), devices=jax.devices()[:1], stop_after=3)
  resumed = loop.train_and_evaluate(config, str(tmp_path / 'cut'), devices=jax.devices()[:1])
  assert 'Resumed from checkpoint step 3' in (tmp_path / 'cut' / 'log.txt').read_text()
  for a, b in zip(_leaves(full), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(full.rng, resumed.rng)


def test_non_finite_loss_stops_before_checkpointing(tiny_dataset, tmp_path):
  config = _config(tiny_dataset, 'baseline', learning_rate=1e38, checkpoint_every_steps=1)
  with pytest.raises(loop.NonFiniteLossError, match='non-finite training metrics at step') as e:
    loop.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  bad_step = int(str(e.value).split('at step ')[1].split(':')[0])
  saved = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved and max(saved) == bad_step - 1


@pytest.mark.parametrize(
  'key,value,message',
  [
    ('ensemble.num_models', 1, r'config.ensemble.num_models=1 must be >= 2'),
    ('batch_size', 12, r'config.batch_size=12 must be a positive multiple of the device count 8'),
    ('mimic.explainer', 'lime', r"config.mimic.explainer='lime' is invalid"),
    ('method', 'gan', r"config.method='gan' is invalid"),
    ('model.arch', 'vgg', r"config.model.arch='vgg' is invalid"),
  ],
)
def test_invalid_values_name_the_key(key, value, message):
  c = mimic_config.get_config('synthetic')
  node = c
  *path, leaf = key.split('.')
  for p in path:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    config_check.validate(c, num_devices=8)


def test_config_variants():
  assert mimic_config.get_config().method == 'mimic'
  assert mimic_config.get_config().model.arch == 'densenet121'
  assert mimic_config.get_config('baseline').method == 'single'
  assert mimic_config.get_config('gaze,synthetic').method == 'gaze'
  assert mimic_config.get_config('synthetic').model.arch == 'tiny_resnet'
  for v in ('mimic', 'baseline', 'ensemble', 'gaze', 'synthetic'):
    config_check.validate(mimic_config.get_config(v), num_devices=1)
  with pytest.raises(ValueError, match='unknown config variant'):
    mimic_config.get_config('baseline,gaze')


def _events(workdir):
  """``(tag, step, kind, value)`` of every summary in a run's TensorBoard event files, read as
  TFRecords (length, CRC, Event proto, CRC) without TensorBoard."""
  found = []
  for path in sorted((workdir / 'tensorboard').glob('events.out.tfevents.*')):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        kind = v.WhichOneof('value')
        found.append((v.tag, event.step, kind, v.simple_value if kind == 'simple_value' else v))
  return found


def test_tensorboard_shows_validation_gaze_metrics_and_explanations(tiny_dataset, tmp_path):
  config = _config(tiny_dataset, 'mimic')
  loop.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  events = _events(tmp_path)
  logged = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  validation = [r for r in logged if 'validation/kld' in r]
  assert [r['step'] for r in validation] == [4]
  for key in ('validation/accuracy', 'validation/ce', 'validation/kld', 'validation/nss'):
    scalars = [v for tag, step, kind, v in events if tag == key and kind == 'simple_value']
    assert scalars == [pytest.approx(validation[0][key], rel=1e-6)], key
  # KLD of a map against a distribution is >= 0; NSS of a map is a z-score mean.
  assert validation[0]['validation/kld'] > 0 and np.isfinite(validation[0]['validation/nss'])
  images = [v for tag, step, kind, v in events if tag == 'validation/explanations']
  assert len(images) == 1 and images[0].image.height > 100
  picture = np.asarray(Image.open(io.BytesIO(images[0].image.encoded_image_string)))
  # One row per shown example: the panels are not blank.
  assert picture.shape[:2] == (images[0].image.height, images[0].image.width)
  assert picture.std() > 10
  # The game's monitor after step 4 (the phases alternate by step: an adversarial step): in
  # metrics.jsonl, TensorBoard and log.txt, the accuracy a share of the 3 x 4 validation maps.
  game = [r for r in logged if 'game/disc_accuracy' in r]
  assert [r['step'] for r in game] == [4] and game[0]['game/after_discriminator_phase'] == 0.0
  assert game[0]['game/disc_accuracy'] * 12 == pytest.approx(
    round(game[0]['game/disc_accuracy'] * 12)
  )
  terms = [r for r in logged if 'gradients/beta_over_ce' in r]
  assert [r['step'] for r in terms] == [4] and terms[0]['gradients/beta_over_ce'] > 0
  assert -1 <= terms[0]['gradients/beta_cosine'] <= 1
  game[0].update(terms[0])
  for key in (
    'game/disc_accuracy',
    'game/disc_ce',
    'game/map_correlation',
    'gradients/beta_over_ce',
  ):
    scalars = [v for tag, step, kind, v in events if tag == key and kind == 'simple_value']
    assert scalars == [pytest.approx(game[0][key], rel=1e-6)], key
  assert (
    'game at step 4 (after an adversarial step): disc_accuracy'
    in (tmp_path / 'log.txt').read_text()
  )
  # The run's settings are in the hyperparameters tab.
  assert any(tag == '_hparams_/experiment' for tag, *_ in events)
  # The best checkpoint by validation accuracy is kept beside the latest ones.
  assert (tmp_path / 'checkpoints_best' / '4').exists()
