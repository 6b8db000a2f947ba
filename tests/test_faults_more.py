"""Fault injection, round two: a moved run's best checkpoint, two runs in one workdir, NaN
weights, a mismatched evaluation config, a bad weights file, a torn metrics.jsonl and an image
whose size disagrees with MIMIC-CXR's metadata. Each case: nothing lost, nothing silent."""

import csv
import gzip
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from PIL import Image
import pytest
from test_faults import _config
from test_faults import _digest

from data_builders.mimic_cxr_egd import egd_format
from data_builders.mimic_cxr_egd import egd_reader
from mimic_jax.evaluation import evaluate
from mimic_jax.models import pretrained
from mimic_jax.training import checkpoints
from mimic_jax.training import finite
from mimic_jax.training import loop
from mimic_jax.training import metric_writer
from mimic_jax.training import workdir as workdir_lib
from mimic_jax.training import workdir_lock

ONE_DEVICE = jax.devices()[:1]


def _steps(folder: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.fixture(scope='module')
def trained_run(tiny_dataset, tmp_path_factory):
  """A 4-step baseline run (checkpoints at 2 and 4, best at 4), trained once; copy it."""
  work = tmp_path_factory.mktemp('trained') / 'run'
  loop.train_and_evaluate(_config(tiny_dataset), str(work), devices=ONE_DEVICE)
  return work


def _copy(run: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  work = tmp_path / 'run'
  shutil.copytree(run, work)
  return work


# --- --new_run moves every file of the old run, its best checkpoint too -----------------------


def test_new_run_moves_the_best_checkpoint_and_never_deletes_it(
  tiny_dataset, trained_run, tmp_path
):
  """Train (best 4), then --new_run with another learning rate for 2 steps: the old best moves
  aside with everything else, the new run's best is its own, and a longer new run later
  leaves the old best untouched."""
  work = _copy(trained_run, tmp_path)
  (work / 'explain').mkdir()  # what other tools wrote from the old run's model moves too
  (work / 'explain' / 'x.json').write_text('{}')
  old_best = _digest(work / 'checkpoints_best')
  assert _steps(work / 'checkpoints_best') == [4]
  other = _config(tiny_dataset, learning_rate=3e-2, num_train_steps=2)
  loop.train_and_evaluate(other, str(work), devices=ONE_DEVICE, new_run=True)
  (previous,) = (work / 'previous_runs').iterdir()
  moved = {'checkpoints', 'checkpoints_best', 'config.json', 'explain', 'log.txt'}
  moved |= {'metrics.jsonl', 'tensorboard'}
  assert {p.name for p in previous.iterdir()} == moved
  assert _digest(previous / 'checkpoints_best') == old_best
  assert _steps(work / 'checkpoints_best') == [2]  # the new run's own best, at its step 2
  assert not (work / 'explain').exists() and not (work / workdir_lock.LOCK_NAME).exists()
  # The best checkpoint now is the new run's model, not the old one's.
  new_best = checkpoints.load_state(other, str(work), devices=ONE_DEVICE, select='best')
  old = checkpoints.load_state(_config(tiny_dataset), str(previous), devices=ONE_DEVICE)
  assert not np.allclose(jax.tree.leaves(new_best.params)[0], jax.tree.leaves(old.params)[0])
  longer = _config(tiny_dataset, learning_rate=3e-2, num_train_steps=8)
  loop.train_and_evaluate(longer, str(work), devices=ONE_DEVICE)
  assert _digest(previous / 'checkpoints_best') == old_best
  assert _steps(work / 'checkpoints_best') and min(_steps(work / 'checkpoints_best')) > 2


def test_a_best_checkpoint_without_its_config_is_not_taken_over(
  tiny_dataset, trained_run, tmp_path
):
  work = _copy(trained_run, tmp_path)
  shutil.rmtree(work / 'checkpoints')
  (work / 'config.json').unlink()
  with pytest.raises(workdir_lib.WorkdirConflictError, match='checkpoints_best holds checkpoints'):
    loop.train_and_evaluate(_config(tiny_dataset), str(work), devices=ONE_DEVICE)


# --- a workdir lock -----------------------------------------------------------------------------


def _lock_of(process: subprocess.Popen, host: str | None = None) -> str:
  return json.dumps(
    {
      'host': host or socket.gethostname(),
      'pid': process.pid,
      'pid_start_ticks': workdir_lock._start_ticks(process.pid),
      'started': '2026-12-04 01:00:00 UTC',
      'processes': 1,
    }
  )


def test_a_live_run_holds_its_workdir(tiny_dataset, trained_run, tmp_path):
  """Another process holds the workdir: training stops at once naming the workdir, the host
  and pid; nothing in the workdir changes, and the lock stays the holder's."""
  work = _copy(trained_run, tmp_path)
  before = _digest(work)
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  try:
    (work / 'run.lock').write_text(_lock_of(holder))
    with pytest.raises(workdir_lock.WorkdirLockedError) as e:
      loop.train_and_evaluate(_config(tiny_dataset, num_train_steps=6), str(work))
    assert f'{work} is in use by another run' in str(e.value)
    assert f'host {socket.gethostname()}, pid {holder.pid}' in str(e.value)
    assert 'started 2026-12-04 01:00:00 UTC' in str(e.value)
    assert json.loads((work / 'run.lock').read_text())['pid'] == holder.pid
    (work / 'run.lock').unlink()
    assert _digest(work) == before
  finally:
    holder.kill()
    holder.wait()


def test_the_same_command_twice_stops_the_second_at_once(tiny_dataset, tmp_path):
  """main.py while a run holds the workdir (taken here as a training run takes it): exit 1
  with one line naming the holder, before any data is prepared; the workdir untouched."""
  work = tmp_path / 'run'
  data_dir, manual_dir = tiny_dataset
  holding = (
    'import sys, time\n'
    'from mimic_jax.training import workdir_lock\n'
    f'with workdir_lock.hold({str(work)!r}):\n'
    '  print("held", flush=True)\n'
    '  time.sleep(120)\n'
  )
  holder = subprocess.Popen([sys.executable, '-c', holding], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    t0 = time.time()
    second = subprocess.run(
      [
        sys.executable,
        'main.py',
        f'--workdir={work}',
        '--config=configs/test.py:baseline',
        f'--config.data.data_dir={data_dir}',
        f'--config.data.manual_dir={manual_dir}',
      ],
      capture_output=True,
      text=True,
      check=False,
    )
    assert second.returncode == 1, second.stderr[-2000:]
    assert f'main.py: {work} is in use by another run' in second.stderr
    assert f'pid {holder.pid}' in second.stderr and 'Traceback' not in second.stderr
    assert 'mimic_cxr_egd' not in second.stdout  # stopped before the dataset's summary
    assert sorted(p.name for p in work.iterdir()) == ['run.lock']
    assert time.time() - t0 < 60
  finally:
    holder.kill()
    holder.wait()


def test_a_dead_runs_lock_is_taken_over_with_a_warning(tiny_dataset, trained_run, tmp_path):
  work = _copy(trained_run, tmp_path)
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (work / 'run.lock').write_text(_lock_of(dead))
  loop.train_and_evaluate(_config(tiny_dataset, num_train_steps=6), str(work), devices=ONE_DEVICE)
  log = (work / 'log.txt').read_text()
  assert f'pid {dead.pid}' in log and 'no longer alive' in log and 'taking the workdir over' in log
  assert not (work / 'run.lock').exists()  # released at the end
  assert _steps(work / 'checkpoints')[-1] == 6


def test_a_lock_from_another_host_is_refused_with_the_file_to_delete(tmp_path):
  holder = subprocess.Popen([sys.executable, '-c', 'pass'])
  holder.wait()
  tmp_path.joinpath('run.lock').write_text(_lock_of(holder, host='tpu-vm-7'))
  with pytest.raises(workdir_lock.WorkdirLockedError) as e:
    with workdir_lock.hold(tmp_path):
      pass
  assert 'host tpu-vm-7' in str(e.value) and f'delete {tmp_path}/run.lock' in str(e.value)


def test_the_lock_is_reentrant_and_a_failed_command_leaves_no_workdir(tmp_path, monkeypatch):
  """main.py takes the lock with the workdir as given (relative), the loop again with its
  absolute path: one lock, held until the outer block ends."""
  monkeypatch.chdir(tmp_path)
  work = tmp_path / 'new'
  with workdir_lock.hold('new'):
    with workdir_lock.hold(work):
      assert (work / 'run.lock').exists()
    assert (work / 'run.lock').exists()  # still held by the outer block
  assert not work.exists()  # created for the lock, nothing written: removed again


# --- NaN weights ---------------------------------------------------------------------------------


def test_nan_weights_stop_the_run_naming_the_step(tiny_dataset, tmp_path):
  """learning_rate 1e9: the training losses stay finite while the parameters do not; the run
  stops at the first checked step, and no checkpoint holds non-finite parameters."""
  config = _config(tiny_dataset, learning_rate=1e9, checkpoint_every_steps=1)
  with pytest.raises(
    finite.NonFiniteError, match=r'non-finite (parameters|validation loss) at step'
  ):
    loop.train_and_evaluate(config, str(tmp_path), devices=ONE_DEVICE)
  for kind in ('latest', 'best'):
    folder = tmp_path / ('checkpoints' if kind == 'latest' else 'checkpoints_best')
    for step in _steps(folder) if folder.exists() else []:
      state = checkpoints.Checkpoints(tmp_path, kind=kind).manager.restore(step)
      assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state['params']))


def test_a_checkpoint_with_nan_parameters_is_refused(tiny_dataset, trained_run, tmp_path):
  """A checkpoint whose parameters hold a NaN (written by another tool): evaluation and
  explain refuse it, naming the step and the parameter."""
  work = _copy(trained_run, tmp_path)
  config = _config(tiny_dataset)
  state = checkpoints.load_state(config, str(work), devices=ONE_DEVICE)
  params = jax.tree.map(np.asarray, state.params)
  head = params['head']['kernel'].copy()
  head[0, 0, 0] = np.nan
  params['head']['kernel'] = head
  manager = checkpoints.Checkpoints(work, keep=5)
  manager.save(6, state.replace(params=params))
  manager.wait()
  manager.close()
  with pytest.raises(finite.NonFiniteError, match=r"checkpoint step 6 .*\['head'\]\['kernel'\]"):
    checkpoints.load_state(config, str(work), devices=ONE_DEVICE)
  image = next(pathlib.Path(tiny_dataset[1]).rglob('*.jpg'))
  out = subprocess.run(
    [sys.executable, '-m', 'mimic_jax.explain', f'--workdir={work}', str(image)],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 1 and 'explain: non-finite parameters at checkpoint step 6' in out.stderr
  assert 'Traceback' not in out.stderr and not (work / 'explain').exists()


def test_non_finite_evaluation_outputs_are_an_error():
  scores = np.full((3, 3), 1 / 3)
  maps = {'grad_cam': np.ones((2, 3, 4, 4)), 'input_gradients': np.ones((2, 3, 4, 4))}
  evaluate._check_finite(scores, maps, 'test')  # all finite: no error
  maps['input_gradients'][1, 2, 0, 0] = np.inf
  scores[0, 1] = np.nan
  with pytest.raises(finite.NonFiniteError) as e:
    evaluate._check_finite(scores, maps, 'test')
  assert 'class scores of 1 image(s); input_gradients maps of 1 image(s) (of 3)' in str(e.value)


# --- a config that does not fit the checkpoint -------------------------------------------------


@pytest.mark.parametrize(
  'override,key',
  [
    ({'model.width': 16}, 'config.model.width: 8 in config.json, 16 given'),
    ({'method': 'mimic'}, "config.method: 'single' in config.json, 'mimic' given"),
  ],
)
def test_evaluating_with_another_model_names_the_keys(tiny_dataset, trained_run, override, key):
  config = _config(tiny_dataset, **override)
  with pytest.raises(workdir_lib.EvaluationConfigError, match='trained with other settings') as e:
    checkpoints.load_state(config, str(trained_run), devices=ONE_DEVICE)
  assert key in str(e.value)
  # What may change for evaluation: the data and batch size, evaluation settings.
  fine = _config(
    tiny_dataset, batch_size=4, **{'evaluation.gradcam_target': 'ensemble_log_softmax'}
  )
  workdir_lib.check_evaluation(trained_run, fine)


def test_main_evaluate_with_another_width_is_one_line(trained_run):
  out = subprocess.run(
    [
      sys.executable,
      'main.py',
      f'--workdir={trained_run}',
      '--mode=evaluate',
      '--config=configs/test.py:baseline',
      '--config.model.width=16',
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 1
  assert 'config.model.width: 8 in config.json, 16 given' in out.stderr
  assert 'Traceback' not in out.stderr and 'orbax' not in out.stderr
  assert not (trained_run / 'eval').exists()


def test_main_evaluate_names_a_missing_workdir(tmp_path):
  out = subprocess.run(
    [sys.executable, 'main.py', f'--workdir={tmp_path}/nonexistent', '--mode=evaluate'],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 1 and f'no such workdir: {tmp_path}/nonexistent' in out.stderr


# --- files that name themselves ----------------------------------------------------------------


def test_pretrained_weights_that_are_not_safetensors_name_the_file(tmp_path):
  path = tmp_path / 'weights.safetensors'
  path.write_text('these are not weights\n')
  with pytest.raises(pretrained.ConversionError, match=f'{path} is not a readable safetensors'):
    pretrained.load(path, 'resnet18')
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/none.safetensors do not exist'):
    pretrained.load(tmp_path / 'none.safetensors', 'resnet18')


def test_a_torn_last_line_of_metrics_jsonl_is_dropped_on_resume(
  tiny_dataset, trained_run, tmp_path
):
  """A run killed while writing a row: the next run resumes, says it dropped the line, and
  metrics.jsonl holds every step once; a bad line elsewhere is an error naming it."""
  work = _copy(trained_run, tmp_path)
  metrics = work / 'metrics.jsonl'
  with metrics.open('a') as f:
    f.write('{"step": 5, "time": 17')
  loop.train_and_evaluate(_config(tiny_dataset, num_train_steps=6), str(work), devices=ONE_DEVICE)
  log = (work / 'log.txt').read_text()
  assert f'dropped the torn last line 6 of {metrics}' in log
  rows = [json.loads(r) for r in metrics.read_text().splitlines()]
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2, 3, 4, 5, 6]
  lines = metrics.read_text().splitlines()
  lines[2] = lines[2][:-5]
  metrics.write_text('\n'.join(lines) + '\n')
  with pytest.raises(metric_writer.MetricsFileError, match=f'{metrics} line 3 is not JSON'):
    loop.train_and_evaluate(_config(tiny_dataset, num_train_steps=6), str(work))


# --- an image whose size disagrees with the metadata -------------------------------------------


def test_an_image_of_the_wrong_size_is_named_with_both_sizes(synthetic_tree, tmp_path):
  """One JPG shrunk to a quarter: the validation pass names the file and both sizes; with
  skip_invalid_rows the image is left out and listed."""
  source, specs = synthetic_tree
  manual = tmp_path / 'manual'
  shutil.copytree(source, manual)
  spec = specs[5]
  (jpg,) = (manual / egd_format.JPG_DIR).rglob(f'{spec.dicom_id}.jpg')
  with Image.open(jpg) as img:
    width, height = img.size
    img.resize((width // 4, height // 4)).save(jpg)
  assert (width, height) == (spec.width, spec.height)
  with pytest.raises(egd_reader.EgdValidationError) as e:
    egd_reader.read_tree(manual)
  (problem,) = e.value.problems
  assert problem.dicom_id == spec.dicom_id and jpg.name in problem.message
  assert f'is {width // 4} x {height // 4} pixels (width x height)' in problem.message
  assert f'Columns x Rows {width} x {height}' in problem.message
  metadata = manual / egd_format.JPG_DIR / egd_format.METADATA_FILE
  with metadata.open() as f:
    line = next(i for i, row in enumerate(csv.reader(f), start=1) if row[0] == spec.dicom_id)
  assert f'{egd_format.METADATA_FILE} line {line} gives' in problem.message
  tree = egd_reader.read_tree(manual, skip_invalid_rows=True)
  assert tree.skipped_ids == [spec.dicom_id]
  # PhysioNet serves the metadata gzipped: read the same way.
  metadata.with_suffix('.csv.gz').write_bytes(gzip.compress(metadata.read_bytes()))
  metadata.unlink()
  with pytest.raises(egd_reader.EgdValidationError, match=f'{jpg.name} is {width // 4} x'):
    egd_reader.read_tree(manual)


def test_a_config_json_from_before_new_keys_is_evaluated_with_their_defaults(tmp_path):
  """A run written before ``mimic.disc_steps`` and ``evaluation`` existed: evaluation fills
  them with today's defaults, says so, and compares only the keys config.json records; a
  recorded key that differs is still refused."""
  from configs import mimic as mimic_config

  defaults = mimic_config.get_config()
  old = json.loads(defaults.to_json_best_effort())
  del old['mimic']['disc_steps'], old['evaluation']
  old['data']['synthetic'] = {'num_images': 600, 'decoy': True}  # a group where defaults hold None
  (tmp_path / 'config.json').write_text(json.dumps(old))
  stored = workdir_lib.stored_config(tmp_path)
  added = workdir_lib.fill_missing(stored, defaults)
  assert added['mimic.disc_steps'] == 5 and added['evaluation.probe_steps'] == 400
  assert 'learning_rate' not in added and stored.mimic.disc_steps == 5
  assert stored.evaluation.gradcam_target == 'logit'
  assert 'data.synthetic' not in added and stored.data.synthetic.decoy is True
  workdir_lib.check_evaluation(tmp_path, stored)  # nothing recorded differs
  stored.mimic.beta = 2.0
  with pytest.raises(workdir_lib.EvaluationConfigError, match=r'config.mimic.beta: 1.0 in'):
    workdir_lib.check_evaluation(tmp_path, stored)
