"""PyTorch checkpoints into the Flax models: equal outputs to torchvision/timm themselves,
the converter command and its errors, and fine-tuning from converted weights in every method.

The reference models run in .venv-torch (``scripts/setup_torch_env.sh``, which the test
command runs), through ``tests/torch_reference.py``: random weights and BatchNorm statistics,
eval mode, 2 random 64 x 64 RGB inputs."""

import importlib.util
import os
import pathlib
import subprocess
import sys

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from configs import test as test_config
from mimic_jax import convert_weights
from mimic_jax import methods
from mimic_jax import models
from mimic_jax.models import pretrained
from mimic_jax.runtime import mesh as mesh_lib
from mimic_jax.training import checkpoints
from mimic_jax.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCH_PYTHON = os.environ.get('MIMIC_TORCH_PYTHON', str(ROOT / '.venv-torch' / 'bin' / 'python'))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """``reference(arch)`` -> folder with torch_reference.py's outputs for ``arch``."""
  if not os.path.exists(TORCH_PYTHON):
    pytest.fail(
      f'{TORCH_PYTHON} is missing: run bash scripts/setup_torch_env.sh (the test '
      'command scripts/run_tests.sh does)'
    )
  made = {}

  def get(arch):
    if arch not in made:
      out = tmp_path_factory.mktemp(arch)
      proc = subprocess.run(
        [TORCH_PYTHON, str(ROOT / 'tests' / 'torch_reference.py'), arch, str(out)],
        capture_output=True,
        text=True,
        check=False,
      )
      assert proc.returncode == 0, proc.stderr[-3000:]
      made[arch] = out
    return made[arch]

  return get


def _flax_outputs(variables, arch, x_nchw):
  model = models.ARCHITECTURES[arch](num_classes=1000)
  x = jnp.asarray(x_nchw.transpose(0, 2, 3, 1))
  logits, inter = model.apply(variables, x, train=False, mutable=['intermediates'])
  return np.asarray(logits), np.asarray(inter['intermediates']['features'][0]).transpose(0, 3, 1, 2)


def _assert_rel_close(ours, ref):
  scale = np.max(np.abs(ref))
  assert scale > 0.1  # a real signal, not all zeros
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50', 'densenet121', 'efficientnet_b0'])
def test_converted_model_equals_pytorch(reference, arch):
  ref = reference(arch)
  variables = pretrained.convert(pretrained.read_state_dict(ref / 'weights.safetensors'), arch)
  pretrained.check_against_model(variables, arch)
  assert convert_weights.guess_arch(pretrained.read_state_dict(ref / 'weights.safetensors')) == arch
  logits, fmap = _flax_outputs(variables, arch, np.load(ref / 'input.npy'))
  _assert_rel_close(logits, np.load(ref / 'logits.npy'))
  _assert_rel_close(fmap, np.load(ref / 'features.npy'))


def test_pth_needs_pytorch_or_reads_like_safetensors(reference):
  ref = reference('resnet18')
  if importlib.util.find_spec('torch') is None:
    with pytest.raises(ImportError, match='needs PyTorch, which is not installed'):
      pretrained.read_state_dict(ref / 'weights.pth')
  else:
    a = pretrained.read_state_dict(ref / 'weights.pth')
    b = pretrained.read_state_dict(ref / 'weights.safetensors')
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def _convert_cli(src, dst, *flags):
  return subprocess.run(
    [sys.executable, '-m', 'mimic_jax.convert_weights', str(src), str(dst), *flags],
    capture_output=True,
    text=True,
    cwd=ROOT,
    check=False,
  )


def test_converter_command_writes_what_training_loads(reference, tmp_path):
  ref = reference('densenet121')
  out = tmp_path / 'densenet121.safetensors'
  proc = _convert_cli(ref / 'weights.safetensors', out)
  assert proc.returncode == 0, proc.stderr
  # 120 convolutions, 121 BatchNorms (scale, bias, mean, var), the classifier (2).
  assert proc.stdout.startswith('densenet121: 606 tensors')
  loaded = pretrained.load(out, 'densenet121')
  direct = pretrained.convert(
    pretrained.read_state_dict(ref / 'weights.safetensors'), 'densenet121'
  )
  flat_a, flat_b = (traverse_util.flatten_dict(t) for t in (loaded, direct))
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k])
  with pytest.raises(pretrained.ConversionError, match='holds densenet121 weights'):
    pretrained.load(out, 'resnet18')


def test_converter_names_the_tensor_that_does_not_fit(reference, tmp_path):
  sd = load_file(reference('resnet18') / 'weights.safetensors')
  renamed = dict(sd)
  renamed['layer2.0.conv1.weight_v2'] = renamed.pop('layer2.0.conv1.weight')
  save_file(renamed, str(tmp_path / 'renamed.safetensors'))
  proc = _convert_cli(tmp_path / 'renamed.safetensors', tmp_path / 'o.safetensors')
  assert proc.returncode == 1
  assert "no tensor 'layer2.0.conv1.weight'" in proc.stderr

  reshaped = dict(sd)
  reshaped['layer3.1.bn2.running_var'] = np.ones(7, np.float32)
  save_file(reshaped, str(tmp_path / 'reshaped.safetensors'))
  proc = _convert_cli(tmp_path / 'reshaped.safetensors', tmp_path / 'o.safetensors')
  assert proc.returncode == 1
  assert "'layer3.1.bn2.running_var' has shape (7,), expected (256,)" in proc.stderr

  extra = dict(sd, **{'aux.weight': np.zeros(3, np.float32)})
  save_file(extra, str(tmp_path / 'extra.safetensors'))
  proc = _convert_cli(tmp_path / 'extra.safetensors', tmp_path / 'o.safetensors')
  assert proc.returncode == 1 and "has tensors resnet18 does not, e.g. 'aux.weight'" in proc.stderr

  # A ResNet-34 (3, 4, 6, 3 blocks) is not a ResNet-18 (2, 2, 2, 2): its extra blocks prove it.
  deeper = dict(sd)
  for stage, blocks in ((1, 3), (2, 4), (3, 6), (4, 3)):
    for b in range(2, blocks):
      for k, v in sd.items():
        if k.startswith(f'layer{stage}.1.'):
          deeper[k.replace(f'layer{stage}.1.', f'layer{stage}.{b}.')] = v
  save_file(deeper, str(tmp_path / 'resnet34.safetensors'))
  proc = _convert_cli(tmp_path / 'resnet34.safetensors', tmp_path / 'o.safetensors')
  assert proc.returncode == 1
  assert "resnet18: the checkpoint has tensors resnet18 does not, e.g. 'layer1.2.bn1.bias'" in (
    proc.stderr
  )
  assert not (tmp_path / 'o.safetensors').exists()

  (tmp_path / 'text.safetensors').write_text('not a tensor file\n')
  proc = _convert_cli(tmp_path / 'text.safetensors', tmp_path / 'o.safetensors')
  assert proc.returncode == 1 and 'is not a readable safetensors file' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1

  proc = _convert_cli(
    tmp_path / 'renamed.safetensors', tmp_path / 'o.safetensors', '--arch=efficientnet_b0'
  )
  assert proc.returncode == 1 and "no tensor 'conv_stem.weight'" in proc.stderr


def _pretrained_config(tiny_dataset, weights, method, **overrides):
  c = test_config.get_config(method)
  c.data.data_dir, c.data.manual_dir = tiny_dataset
  c.model.arch = 'resnet18'
  c.model.norm = 'batch'
  c.model.width = 64
  c.model.downsample = 'stride'  # torchvision's ResNet-18
  c.model.pretrained = str(weights)
  c.num_train_steps = 2
  c.checkpoint_every_steps = 2
  c.mimic.alternation = 'step'  # step 0: discriminator, step 1: the sub-models
  c.ensemble.num_models = 2
  for k, v in overrides.items():
    c.model[k] = v
  return c


@pytest.mark.parametrize('member_init', ['same', 'perturb'])
def test_ensemble_starts_from_the_weights(reference, tiny_dataset, member_init):
  weights = reference('resnet18') / 'weights.safetensors'
  config = _pretrained_config(tiny_dataset, weights, 'ensemble', member_init=member_init)
  assert config.model.input_channels == 1  # the synthetic configs' grey input
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  state = checkpoints.initial_state(methods.build(config), mesh, (64, 64, 1))
  torch_sd = pretrained.read_state_dict(weights)
  p = jax.device_get(state.params)
  stem = p['stem']['kernel']  # (M, 7, 7, 1, 64): the RGB filters summed, per sub-model
  expected_stem = torch_sd['conv1.weight'].transpose(2, 3, 1, 0).sum(axis=2, keepdims=True)
  w = p['BasicBlock_5']['Conv_1']['kernel']
  expected_w = torch_sd['layer3.1.conv2.weight'].transpose(2, 3, 1, 0)
  mean = jax.device_get(state.batch_stats)['BasicBlock_2']['proj_norm']['mean']
  for m in range(2):
    if member_init == 'same':
      np.testing.assert_array_equal(stem[m], expected_stem)
      np.testing.assert_array_equal(w[m], expected_w)
    else:
      noise = w[m] - expected_w
      assert 0.005 < np.std(noise) / np.std(expected_w) < 0.02
    np.testing.assert_array_equal(mean[m], torch_sd['layer2.0.downsample.1.running_mean'])
  assert p['head']['kernel'].shape == (2, 512, 3)  # a new 3-class head per sub-model
  assert not np.allclose(p['head']['kernel'][0], p['head']['kernel'][1])
  if member_init == 'perturb':
    assert not np.allclose(w[0], w[1])


@pytest.mark.parametrize('method', ['baseline', 'ensemble', 'mimic', 'gaze'])
def test_fine_tuning_from_converted_weights(reference, tiny_dataset, tmp_path, method):
  ref = reference('resnet18')
  converted = tmp_path / 'resnet18.safetensors'
  assert _convert_cli(ref / 'weights.safetensors', converted).returncode == 0
  config = _pretrained_config(tiny_dataset, converted, method)
  config.model.input_channels = 3
  state = loop.train_and_evaluate(config, str(tmp_path / 'run'), devices=jax.devices()[:1])
  sd = pretrained.read_state_dict(ref / 'weights.safetensors')
  start = sd['layer4.1.conv2.weight'].transpose(2, 3, 1, 0)
  end = np.asarray(state.params['BasicBlock_7']['Conv_1']['kernel'])
  change = np.abs(end - start).max(axis=tuple(range(1, end.ndim)))
  # Fine-tuned: moved by the optimiser (Adam steps of ~lr) but still the pretrained weights.
  assert np.all(change > 1e-4) and np.all(change < 10 * config.learning_rate * 2)
  log = (tmp_path / 'run' / 'log.txt').read_text()
  assert 'step 2/2' in log and 'nan' not in log.lower()
