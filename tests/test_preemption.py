"""Preemption: SIGTERM mid-run checkpoints and exits 42, a rerun resumes to the same result;
a corrupted or half-written latest checkpoint falls back to the previous good one."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from configs import test as test_config
from mimic_jax.runtime import preemption
from mimic_jax.training import checkpoints
from mimic_jax.training import loop


def _config(tiny_dataset, steps):
  c = test_config.get_config('mimic')
  c.data.data_dir, c.data.manual_dir = tiny_dataset
  c.num_train_steps = steps
  c.checkpoint_every_steps = 4
  c.mimic.alternation = 'step'
  return c


def _leaves(state):
  return [
    np.asarray(x) for x in jax.tree.leaves((state.params, state.method_state.params, state.rng))
  ]


def _main_cmd(tiny_dataset, workdir, steps):
  data_dir, manual_dir = tiny_dataset
  return [
    sys.executable,
    'main.py',
    '--config=configs/test.py:mimic',
    f'--workdir={workdir}',
    f'--config.data.data_dir={data_dir}',
    f'--config.data.manual_dir={manual_dir}',
    f'--config.num_train_steps={steps}',
    '--config.checkpoint_every_steps=4',
    '--config.mimic.alternation=step',
  ]


def test_sigterm_checkpoints_exits_42_and_the_rerun_matches(tiny_dataset, tmp_path):
  steps = 20
  work = tmp_path / 'spot'
  proc = subprocess.Popen(
    _main_cmd(tiny_dataset, work, steps), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  deadline = time.time() + 240
  log = work / 'log.txt'
  while time.time() < deadline:
    if log.exists() and 'step 6/' in log.read_text():
      break
    time.sleep(0.2)
  os.kill(proc.pid, signal.SIGTERM)
  _, err = proc.communicate(timeout=240)
  assert proc.returncode == preemption.EXIT_CODE, err[-3000:]
  text = log.read_text()
  assert 'SIGTERM: checkpoint at step' in text
  stopped = int(text.split('SIGTERM: checkpoint at step ')[1].split()[0])
  assert 6 <= stopped < steps
  rerun = subprocess.run(
    _main_cmd(tiny_dataset, work, steps), capture_output=True, text=True, check=False
  )
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'Resumed from checkpoint step {stopped}' in log.read_text()
  config = _config(tiny_dataset, steps)
  # main.py ran on all (8 fake) devices; so does the uninterrupted reference.
  resumed = checkpoints.load_state(config, str(work))
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_corrupted_latest_checkpoint_falls_back(tiny_dataset, tmp_path):
  config = _config(tiny_dataset, 8)
  work = tmp_path / 'run'
  loop.train_and_evaluate(config, str(work), devices=jax.devices()[:1])  # saves 4 and 8
  for f in (work / 'checkpoints' / '8').rglob('*'):
    if f.is_file() and f.parent.name == 'd':
      f.write_bytes(b'\0garbage' * 8)
  # A run killed while writing leaves only a temporary folder, which must be ignored.
  (work / 'checkpoints' / '12.orbax-checkpoint-tmp').mkdir()
  config.num_train_steps = 12
  resumed = loop.train_and_evaluate(config, str(work), devices=jax.devices()[:1])
  text = (work / 'log.txt').read_text()
  assert f'Checkpoint step 8 ({work}/checkpoints/8) cannot be restored: ' in text
  assert 'Resumed from checkpoint step 4' in text
  # The corrupt step was moved aside, so the rerun's save of step 8 was written, not skipped.
  assert [p.name.split('-')[0] for p in (work / 'quarantine').iterdir()] == ['8']
  assert {'4', '8', '12'} <= {p.name for p in (work / 'checkpoints').iterdir()}
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'), devices=jax.devices()[:1])
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  eight = checkpoints.load_state(config, str(work), devices=jax.devices()[:1])
  assert int(eight.step) == 12
