"""Fault injection: what a careless or unlucky user does to a workdir, its checkpoints and its
inputs, and that nothing is lost and no wrong answer is given silently."""

import hashlib
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import test as test_config
from mimic_jax.training import checkpoints
from mimic_jax.training import loop
from mimic_jax.training import workdir as workdir_lib


def _config(tiny_dataset, variant='baseline', **overrides):
  c = test_config.get_config(variant)
  c.data.data_dir, c.data.manual_dir = tiny_dataset
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split('.')
    for p in path:
      node = node[p]
    node[leaf] = value
  return c


def _digest(folder: pathlib.Path) -> dict[str, str]:
  return {
    str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(folder.rglob('*'))
    if p.is_file()
  }


def _main(tiny_dataset, workdir, config, *overrides):
  """A main.py command line (``--config`` before its overrides, as absl wants)."""
  data_dir, manual_dir = tiny_dataset
  return [
    sys.executable,
    'main.py',
    f'--workdir={workdir}',
    f'--config={config}',
    f'--config.data.data_dir={data_dir}',
    f'--config.data.manual_dir={manual_dir}',
    *overrides,
  ]


def test_another_config_in_a_workdir_loses_nothing(tiny_dataset, tmp_path):
  """Rerunning into a workdir with another width: an error naming the key, the first run's
  checkpoints and files untouched; with --new_run they move aside, still intact."""
  work = tmp_path / 'run'
  loop.train_and_evaluate(_config(tiny_dataset), str(work), devices=jax.devices()[:1])
  before = _digest(work / 'checkpoints')
  assert before
  wider = _config(tiny_dataset, **{'model.width': 16})
  with pytest.raises(workdir_lib.WorkdirConflictError, match=r'config.model.width: 8 there, 16'):
    loop.train_and_evaluate(wider, str(work), devices=jax.devices()[:1])
  assert _digest(work / 'checkpoints') == before
  assert json.loads((work / 'config.json').read_text())['model']['width'] == 8
  out = subprocess.run(
    _main(tiny_dataset, work, 'configs/test.py:baseline', '--config.model.width=16'),
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 1 and 'config.model.width: 8 there, 16 now' in out.stderr
  assert 'Traceback' not in out.stderr
  assert _digest(work / 'checkpoints') == before
  # Settings that may change on resume are accepted and logged.
  longer = _config(tiny_dataset, num_train_steps=6)
  loop.train_and_evaluate(longer, str(work), devices=jax.devices()[:1])
  assert 'config.num_train_steps 4 -> 6' in (work / 'log.txt').read_text()
  # --new_run: the old run (its checkpoints, config and logs) moves aside.
  before = _digest(work / 'checkpoints')
  loop.train_and_evaluate(wider, str(work), devices=jax.devices()[:1], new_run=True)
  (previous,) = (work / 'previous_runs').iterdir()
  assert _digest(previous / 'checkpoints') == before
  assert json.loads((previous / 'config.json').read_text())['model']['width'] == 8
  assert json.loads((work / 'config.json').read_text())['model']['width'] == 16
  assert sorted(p.name for p in (work / 'checkpoints').iterdir()) == ['2', '4']


def test_checkpoints_without_a_config_are_not_taken_over(tiny_dataset, tmp_path):
  work = tmp_path / 'run'
  loop.train_and_evaluate(_config(tiny_dataset), str(work), devices=jax.devices()[:1])
  (work / 'config.json').unlink()
  with pytest.raises(workdir_lib.WorkdirConflictError, match='config.json is missing'):
    loop.train_and_evaluate(_config(tiny_dataset), str(work), devices=jax.devices()[:1])


def test_no_checkpoint_restores_is_one_clear_error(tiny_dataset, tmp_path):
  """Every checkpoint corrupt: training and evaluation stop with one message naming each step,
  its path and the cause; no 'resumed from step 0', no asyncio noise."""
  work = tmp_path / 'run'
  loop.train_and_evaluate(_config(tiny_dataset), str(work), devices=jax.devices()[:1])
  for f in (work / 'checkpoints').rglob('*'):
    if f.is_file() and f.parent.name == 'd':
      f.write_bytes(b'\0garbage' * 8)
  with pytest.raises(checkpoints.CheckpointRestoreError, match=r'step 4 \(.*/checkpoints/4\): '):
    checkpoints.load_state(_config(tiny_dataset), str(work), devices=jax.devices()[:1])
  out = subprocess.run(  # the run's own config.json
    [sys.executable, 'main.py', f'--workdir={work}', '--mode=evaluate'],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 1
  assert 'main.py: no checkpoint in' in out.stderr and 'can be restored' in out.stderr
  assert 'step 2 (' in out.stderr and 'step 4 (' in out.stderr
  assert 'Event loop is closed' not in out.stderr and 'Traceback' not in out.stderr


def _tensorboard_events(folder: pathlib.Path) -> list:
  """Every event of the event files in ``folder`` (TFRecord framing: length, CRC, data, CRC)."""
  from tensorboardX.proto import event_pb2

  events = []
  for path in sorted(folder.glob('events.out.tfevents.*')):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (length,) = struct.unpack('<Q', data[i : i + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[i + 12 : i + 12 + length])
      events.append(event)
      i += 12 + length + 4
  return events


def _shown_steps(events: list, tag: str) -> list[int]:
  """The steps TensorBoard shows for ``tag``: a session start at step s discards the earlier
  events of later steps (its purge of orphaned data)."""
  shown = []
  for e in events:
    if e.HasField('session_log') and e.session_log.status == e.session_log.START:
      shown = [s for s in shown if s <= e.step]
    for v in e.summary.value:
      if v.tag == tag:
        shown.append(e.step)
  return shown


@pytest.mark.parametrize('seed', [0, 1])
def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_dataset, tmp_path, seed):
  """SIGKILL at a random step, then the same command again: the parameters of an
  uninterrupted run, and every step once in metrics.jsonl and in what TensorBoard shows."""
  steps = 9
  kill_at = int(np.random.default_rng(seed).integers(2, steps - 1))
  work = tmp_path / 'run'
  cmd = _main(
    tiny_dataset,
    work,
    'configs/test.py:baseline',
    f'--config.num_train_steps={steps}',
    '--config.checkpoint_every_steps=3',
  )
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  log = work / 'log.txt'
  deadline = time.time() + 300
  while time.time() < deadline and not (log.exists() and f'step {kill_at}/' in log.read_text()):
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  rerun = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  rows = [json.loads(r) for r in (work / 'metrics.jsonl').read_text().splitlines()]
  train_steps = [r['step'] for r in rows if 'train/loss' in r]
  assert train_steps == list(range(1, steps + 1))
  val_steps = [r['step'] for r in rows if 'validation/accuracy' in r]
  assert val_steps == sorted(set(val_steps))
  shown = _shown_steps(_tensorboard_events(work / 'tensorboard'), 'train/loss')
  assert shown == list(range(1, steps + 1))
  config = _config(tiny_dataset, num_train_steps=steps, checkpoint_every_steps=3)
  resumed = checkpoints.load_state(config, str(work))
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_bad_inputs_fail_before_anything_is_written(tmp_path):
  """A data dir with no build and a manual_dir with no download: an error naming both, and
  neither the data dir nor the workdir is created."""
  out = subprocess.run(
    [
      sys.executable,
      'main.py',
      '--config=configs/mimic.py:baseline',
      f'--workdir={tmp_path}/work',
      f'--config.data.data_dir={tmp_path}/nonexistent/tfds',
      f'--config.data.manual_dir={tmp_path}/nonexistent/physionet',
      '--config.batch_size=8',
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 1
  assert 'holds no build of mimic_cxr_egd/224' in out.stderr
  assert 'has no egd-cxr/1.0.0/master_sheet.csv' in out.stderr
  assert not (tmp_path / 'nonexistent').exists() and not (tmp_path / 'work').exists()


def test_a_build_with_skipped_rows_is_used_through_the_config(tiny_dataset, tmp_path):
  """A truncated image fails the build; with config.data.skip_invalid_rows the run builds the
  rest (folder <config>_skip) and trains on it."""
  _, manual_dir = tiny_dataset
  manual = tmp_path / 'manual'
  shutil.copytree(manual_dir, manual)
  jpg = next((manual / 'mimic-cxr-jpg').rglob('*.jpg'))
  jpg.write_bytes(jpg.read_bytes()[:500])
  base = [
    sys.executable,
    'main.py',
    '--config=configs/test.py:baseline',
    f'--config.data.data_dir={tmp_path}/tfds',
    f'--config.data.manual_dir={manual}',
    '--config.num_train_steps=2',
  ]
  failed = subprocess.run([*base, f'--workdir={tmp_path}/a'], capture_output=True, text=True)
  assert failed.returncode != 0 and 'image unreadable' in failed.stderr
  assert jpg.stem in failed.stderr
  ok = subprocess.run(
    [*base, f'--workdir={tmp_path}/b', '--config.data.skip_invalid_rows=true'],
    capture_output=True,
    text=True,
  )
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert f'skipped_ids (1): {jpg.stem}' in ok.stdout
  assert (tmp_path / 'tfds' / 'mimic_cxr_egd' / '64_sigma75_skip').is_dir()
