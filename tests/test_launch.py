"""launch/tpu_vm.sh: the composed gcloud command sequence (dry run), the relaunch-after-
preemption loop against a scripted stand-in for gcloud, and shellcheck on every script."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'launch' / 'tpu_vm.sh'
V5E_16 = [
  '--name',
  'mimic-v5e',
  '--project',
  'my-proj',
  '--zone',
  'us-west4-a',
  '--accelerator',
  'v5litepod-16',
  '--bucket',
  'gs://my-bucket/mimic-jax/',
  '--run-name',
  'paper',
]


def _launch(args, cwd, env=None, check=True):
  proc = subprocess.run(
    ['bash', str(SCRIPT), *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    env={**os.environ, **(env or {})},
    check=False,
  )
  if check:
    assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc


def _commands(stdout: str) -> list[list[str]]:
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith('+ ')]


def _flag(cmd, name):
  values = [a.split('=', 1)[1] for a in cmd if a.startswith(f'--{name}=')]
  assert len(values) == 1, (name, cmd)
  return values[0]


def test_dry_run_of_a_spot_v5e_16_run_is_complete(tmp_path):
  out = _launch(
    [
      'all',
      '--dry-run',
      '--spot',
      '--local-data-dir',
      'data/tfds',
      *V5E_16,
      '--',
      '--config.num_epochs=30',
    ],
    cwd=tmp_path,
    env={'GCLOUD': 'gcloud'},
  ).stdout
  cmds = _commands(out)
  gcloud = [c for c in cmds if c[0] == 'gcloud']
  kinds = [' '.join(c[1:5]) if c[1] == 'compute' else ' '.join(c[1:3]) for c in gcloud]
  assert kinds == [
    'compute tpus tpu-vm create',
    'compute tpus tpu-vm scp',
    'compute tpus tpu-vm ssh',
    'storage rsync',
    'compute tpus tpu-vm describe',
    'compute tpus tpu-vm ssh',
    'compute tpus tpu-vm scp',
    'compute tpus tpu-vm ssh',
    'compute tpus tpu-vm scp',
    'compute tpus tpu-vm delete',
  ]
  create, upload, setup, rsync, _, train, _, evaluate, _, delete = gcloud
  assert create[5] == 'mimic-v5e' and '--spot' in create
  assert _flag(create, 'accelerator-type') == 'v5litepod-16'
  assert _flag(create, 'version') == 'v2-alpha-tpuv5-lite'
  for c in gcloud:
    if c[1] == 'compute':
      assert _flag(c, 'zone') == 'us-west4-a' and _flag(c, 'project') == 'my-proj'
  archive = [c for c in cmds if c[0] == 'git'][0]
  assert archive[-1] == 'HEAD' and upload[5] == archive[archive.index('-o') + 1]
  for c in (upload, setup, train, evaluate):
    assert '--worker=all' in c
  remote_setup = _flag(setup, 'command')
  assert 'uv venv --python 3.12' in remote_setup and "-e '.[tpu]'" in remote_setup
  assert rsync[3:] == [
    '--recursive',
    'data/tfds/mimic_cxr_egd',
    'gs://my-bucket/mimic-jax/tfds/mimic_cxr_egd',
  ]
  for c, mode in ((train, 'train'), (evaluate, 'evaluate')):
    remote = shlex.split(_flag(c, 'command').split(' 2>&1')[0])
    assert remote[:6] == [
      'cd',
      '~/mimic-jax',
      '&&',
      '.venv/bin/python',
      'main.py',
      '--config=configs/mimic.py',
    ]
    assert remote[6:] == [
      '--workdir=gs://my-bucket/mimic-jax/runs/paper',
      f'--mode={mode}',
      '--multiprocess=on',
      '--config.data.data_dir=gs://my-bucket/mimic-jax/tfds',
      '--config.num_epochs=30',
    ]
    assert 'exit ${PIPESTATUS[0]}' in _flag(c, 'command')
  assert delete[4:6] == ['delete', 'mimic-v5e'] and '--quiet' in delete
  assert not (tmp_path / 'logs').exists()  # a dry run runs nothing


def test_dry_run_with_a_queued_resource(tmp_path):
  cmds = _commands(
    _launch(['create', '--dry-run', '--queued', '--spot', *V5E_16], cwd=tmp_path).stdout
  )
  create, describe = cmds
  assert create[1:6] == ['compute', 'tpus', 'queued-resources', 'create', 'mimic-v5e-qr']
  assert _flag(create, 'node-id') == 'mimic-v5e' and '--spot' in create
  assert _flag(create, 'runtime-version') == 'v2-alpha-tpuv5-lite'
  assert describe[4] == 'describe' and _flag(describe, 'format') == 'value(state.state)'
  delete = _commands(_launch(['delete', '--dry-run', '--queued', *V5E_16], cwd=tmp_path).stdout)
  assert delete[0][1:6] == ['compute', 'tpus', 'queued-resources', 'delete', 'mimic-v5e-qr']


def test_missing_bucket_and_unknown_options_are_errors(tmp_path):
  proc = _launch(['train', '--dry-run'], cwd=tmp_path, check=False)
  assert proc.returncode == 2 and '--bucket gs://' in proc.stderr
  proc = _launch(
    ['train', '--dry-run', '--bucket', 'gs://b', '--zonee', 'x'], cwd=tmp_path, check=False
  )
  assert proc.returncode == 2 and 'unknown option --zonee' in proc.stderr


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Stand-in for gcloud: records each call; answers from the scripted queues in $FAKE_DIR.
echo "$*" >> "$FAKE_DIR/calls"
pop() { local first; first=$(head -n1 "$FAKE_DIR/$1"); sed -i 1d "$FAKE_DIR/$1"; echo "$first"; }
case "$*" in
  *"tpu-vm describe"*) pop states ;;
  *"tpu-vm ssh"*"--mode=train"*)
    read -r code log < <(pop trains)
    [[ -n "$log" ]] && echo "$log" > "$FAKE_DIR/remote.log"
    exit "$code" ;;
  *"tpu-vm scp"*"mimic-jax-*.log"*)
    dest=${*: -4:1}
    [[ -f "$FAKE_DIR/remote.log" ]] && mv "$FAKE_DIR/remote.log" "$dest/mimic-jax-w0.log"
    exit 0 ;;
esac
exit 0
"""


def _fake_gcloud(tmp_path, states, trains):
  fake = tmp_path / 'fake'
  fake.mkdir()
  (fake / 'gcloud').write_text(FAKE_GCLOUD)
  (fake / 'gcloud').chmod(0o755)
  (fake / 'states').write_text(''.join(s + '\n' for s in states))
  (fake / 'trains').write_text(''.join(t + '\n' for t in trains))
  return {'GCLOUD': str(fake / 'gcloud'), 'FAKE_DIR': str(fake), 'POLL_SECONDS': '0'}, fake


def _calls(fake):
  return [line for line in (fake / 'calls').read_text().splitlines()]


def _kinds(calls):
  out = []
  for c in calls:
    words = c.split()
    out.append(words[3] + ('-train' if '--mode=train' in c else ''))
  return out


def test_run_relaunches_after_preemption_until_complete(tmp_path):
  # 1st attempt: main.py exits 42 (SIGTERM), VM still READY -> relaunch on the same VM.
  # 2nd: gcloud reports 255 and the VM is PREEMPTED -> delete, create, set up, relaunch.
  # 3rd: completes.
  env, fake = _fake_gcloud(
    tmp_path, states=['READY', 'READY', 'PREEMPTED', 'PREEMPTED'], trains=['42', '255', '0']
  )
  proc = _launch(['run', *V5E_16], cwd=tmp_path, env=env)
  assert 'training of paper complete (relaunches: 2)' in proc.stdout
  kinds = _kinds(_calls(fake))
  assert kinds == [
    'describe',
    'ssh-train',
    'scp',  # attempt 1 (42: preempted)
    'describe',
    'ssh-train',
    'scp',  # attempt 2 (255 ...
    'describe',  # ... and the VM is gone)
    'describe',
    'delete',
    'create',
    'scp',
    'ssh',  # recreate + set up
    'ssh-train',
    'scp',
  ]  # attempt 3
  assert 'preempted (exit code 42): relaunch 1 of 20' in proc.stdout
  assert 'TPU mimic-v5e is PREEMPTED: recreating it' in proc.stdout


def test_run_recognises_preemption_from_the_log_line(tmp_path):
  env, fake = _fake_gcloud(
    tmp_path,
    states=['READY', 'READY'],
    trains=['1 SIGTERM: checkpoint at step 120 written; exiting with code 42.', '0'],
  )
  proc = _launch(['run', *V5E_16], cwd=tmp_path, env=env)
  assert 'relaunches: 1' in proc.stdout
  assert _kinds(_calls(fake)).count('ssh-train') == 2


def test_run_stops_on_a_failure_that_is_not_a_preemption(tmp_path):
  env, fake = _fake_gcloud(tmp_path, states=['READY', 'READY'], trains=['1 Traceback', '0'])
  proc = _launch(['run', *V5E_16], cwd=tmp_path, env=env, check=False)
  assert proc.returncode == 1
  assert 'not a preemption' in proc.stderr
  assert _kinds(_calls(fake)).count('ssh-train') == 1
  assert (tmp_path / 'logs' / 'paper' / 'mimic-jax-w0.log').read_text() == 'Traceback\n'


def test_scripts_pass_shellcheck():
  shellcheck = shutil.which('shellcheck') or str(pathlib.Path(sys.executable).parent / 'shellcheck')
  scripts = [
    SCRIPT,
    *sorted((ROOT / 'scripts').glob('*.sh')),
    ROOT / '.ci' / 'run',
    *sorted((ROOT / 'launch').glob('*.sh')),
    *sorted((ROOT / 'benchmarks').glob('*.sh')),
  ]
  proc = subprocess.run(
    [shellcheck, *map(str, dict.fromkeys(scripts))], capture_output=True, text=True, check=False
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
