"""End to end through the command lines: main.py (train, evaluate), compare, the build CLI."""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import browser
import numpy as np
from PIL import Image
import pytest

from configs import mimic


def _run(args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope='module')
def evaluated_runs(tiny_dataset, tmp_path_factory):
  """Two runs of configs/test.py trained and evaluated through main.py."""
  data_dir, manual_dir = tiny_dataset
  root = tmp_path_factory.mktemp('runs')
  for variant in ('baseline', 'mimic'):
    out = _run(
      [
        'main.py',
        f'--config=configs/test.py:{variant}',
        f'--workdir={root}/{variant}',
        '--mode=train_and_evaluate',
        f'--config.data.data_dir={data_dir}',
        f'--config.data.manual_dir={manual_dir}',
      ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'Evaluation report: {root}/{variant}/eval/test/report.md' in out.stdout
    # Quiet by default: our progress lines, no library INFO lines (absl's I1204 ... form).
    assert 'step 4/4' in out.stdout and 'validation at step 4' in out.stdout
    assert not re.search(r'^I\d{4} ', out.stderr, re.M), out.stderr[:2000]
    assert 'Using custom data configuration' not in out.stderr
  return root


def test_evaluation_files_hold_the_computed_numbers(evaluated_runs):
  ev = evaluated_runs / 'mimic' / 'eval' / 'test'
  metrics = json.loads((ev / 'metrics.json').read_text())
  report = (ev / 'report.md').read_text()
  assert metrics['num_models'] == 3 and metrics['num_images'] == len(metrics['per_image']['label'])
  for explainer in ('grad_cam', 'input_gradients', 'gradient_shap'):
    entry = metrics['explanations'][explainer]
    kld = entry['ensemble']['kld']
    per_image = metrics['per_image'][explainer]['kld']
    assert kld['mean'] == pytest.approx(sum(per_image) / len(per_image), rel=1e-12)
    assert kld['ci95'][0] <= kld['mean'] <= kld['ci95'][1]
    assert f'{kld["mean"]:.4f} [{kld["ci95"][0]:.4f}, {kld["ci95"][1]:.4f}]' in report
    assert len(entry['members']) == 3 and 'consistency' in entry
    # The fresh probes: trained on the 32 training images' maps, tested on the test images'.
    probes = entry['distinguishability']
    assert probes['train_images'] == 32
    for name in ('discriminator', 'logistic'):
      p = probes[name]
      assert p['chance'] == pytest.approx(1 / 3) and p['n'] == metrics['num_images']
      named = p['mean'] * 3 * p['n']  # a share of the 3 x n test maps
      assert named == pytest.approx(round(named), abs=1e-9) and 0 <= p['mean'] <= 1
      assert f'{p["mean"]:.4f} [{p["ci95"][0]:.4f}, {p["ci95"][1]:.4f}]' in report
  acc = metrics['classification']['accuracy']
  assert f'accuracy {acc:.4f}' in report
  assert list(ev.glob('gallery_*.png'))
  # Every image by id, and what was evaluated.
  ids = metrics['per_image']['dicom_id']
  assert len(ids) == metrics['num_images'] == metrics['dataset']['num_examples']
  assert metrics['dataset']['split'] == 'test' and metrics['dataset']['version'] == '1.0.0'
  assert metrics['dataset']['ids_sha256'] == hashlib.sha256('\n'.join(ids).encode()).hexdigest()
  # The synthetic data's shortcut: the decoy split holds the same images, markers moved.
  sc = metrics['shortcut']
  assert sorted(sc['per_image']['dicom_id']) == sorted(ids)
  assert sc['accuracy'] == pytest.approx(np.mean(sc['per_image']['correct']), rel=1e-12)
  assert sc['shortcut_reliance'] == pytest.approx(acc - sc['accuracy'], rel=1e-12, abs=1e-12)
  masses = sc['per_image']['corner_mass']['grad_cam']['test']
  assert all(0.0 <= m <= 1.0 for m in masses)
  assert sc['corner_mass']['grad_cam']['corner_mass_test']['mean'] == pytest.approx(np.mean(masses))
  assert 'Shortcut reliance' in report and 'Images each mean is over' in report
  # Per image, what moving the marker did: flips and the paired drop in the true class.
  flips = sc['per_image']['flipped']
  assert len(flips) == len(ids) and set(flips) <= {0.0, 1.0}
  assert sc['flip_rate']['mean'] == pytest.approx(np.mean(flips), rel=1e-12)
  assert f'flips {sc["flip_rate"]["mean"]:.4f}' in report
  # Reference maps, scored by the same code: uniform, the prior and (configs/test.py: five
  # simulated readers read every image) the reader ceiling.
  refs = metrics['references']
  assert set(refs) == {'uniform', 'prior', 'reader'} and refs['reader']['trials'] == 5
  share = metrics['explanations']['grad_cam']['share_prior_to_reader']
  assert set(share) == {'nss', 'cc'}
  assert 'Share of the way from the prior to the reader ceiling' in report
  assert refs['prior']['scores']['information_gain']['mean'] == 0.0
  for name, ref in refs.items():
    kld = ref['scores']['kld']
    assert f'| reference: {name} | ' in report
    assert kld['mean'] == pytest.approx(np.mean(metrics['per_image']['references'][name]['kld']))
  grad_cam = metrics['explanations']['grad_cam']['ensemble']
  ig = metrics['per_image']['grad_cam']['information_gain']
  assert grad_cam['information_gain']['mean'] == pytest.approx(np.nanmean(ig), rel=1e-12)


def test_compare_writes_relative_changes(evaluated_runs, tmp_path):
  out = _run(
    [
      '-m',
      'mimic_jax.compare',
      f'--workdirs={evaluated_runs}/baseline,{evaluated_runs}/mimic',
      f'--out={tmp_path}',
    ]
  )
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / 'comparison.json').read_text())
  base = result['runs']['baseline']['kld']['mean']
  other = result['runs']['mimic']['kld']['mean']
  assert result['relative_change']['baseline']['mimic']['kld']['change'] == pytest.approx(
    other / base - 1, rel=1e-9
  )
  markdown = (tmp_path / 'comparison.md').read_text()
  assert f'{100 * (other / base - 1):+.1f}%' in markdown
  # The ensemble table: mimic's probes and agreement; the baseline (one model) has no row.
  probes = result['runs']['mimic']['probes']['logistic']
  assert (
    '| mimic | ' in markdown.split('Ensembles:')[1]
    and '| baseline |' not in (markdown.split('Ensembles:')[1].split('Change of the mean')[0])
  )
  assert f'{probes["mean"]:.3f} [{probes["ci95"][0]:.3f}, {probes["ci95"][1]:.3f}]' in markdown
  assert (tmp_path / 'comparison.png').stat().st_size > 1000
  # The reference rows, from the runs' own evaluations; IG compared as a difference.
  prior = json.loads((evaluated_runs / 'mimic' / 'eval' / 'test' / 'metrics.json').read_text())
  prior_kld = prior['references']['prior']['scores']['kld']['mean']
  assert result['reference_maps']['reference: prior']['kld']['mean'] == pytest.approx(prior_kld)
  assert '| reference: uniform | — | — |' in markdown and '| reference: prior |' in markdown
  ig = {n: result['runs'][n]['information_gain']['mean'] for n in ('baseline', 'mimic')}
  change = result['relative_change']['baseline']['mimic']['information_gain']['change']
  assert change == pytest.approx(ig['mimic'] - ig['baseline'], abs=1e-12)


def test_evaluate_overrides_without_config_and_the_checkpoint_scored(evaluated_runs, tmp_path):
  """``--config.select_checkpoint=2`` alone (no --config): the run's own config with that one
  value; metrics.json, the report and compare say which checkpoint was scored, and compare
  labels runs scored at different kinds of checkpoint."""
  run = tmp_path / 'baseline'
  shutil.copytree(evaluated_runs / 'baseline', run)
  out = _run(['main.py', f'--workdir={run}', '--mode=evaluate', '--config.select_checkpoint=2'])
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((run / 'eval' / 'test' / 'metrics.json').read_text())
  assert metrics['checkpoint'] == {
    'select': '2',
    'step': 2,
    'path': str(run / 'checkpoints' / '2'),
  }
  assert (
    f'Checkpoint: step 2, the given ({run}/checkpoints/2)'
    in (run / 'eval' / 'test' / 'report.md').read_text()
  )
  latest = json.loads((evaluated_runs / 'baseline' / 'eval' / 'test' / 'metrics.json').read_text())
  assert latest['checkpoint']['select'] == 'latest' and latest['checkpoint']['step'] == 4
  from mimic_jax import compare

  result = compare.compare([str(evaluated_runs / 'baseline'), str(run)], tmp_path / 'cmp')
  markdown = (tmp_path / 'cmp' / 'comparison.md').read_text()
  assert 'different kinds of checkpoint' in markdown and '(2 checkpoint)' in markdown
  assert set(result['runs']) == {f'{evaluated_runs.name}/baseline', f'{tmp_path.name}/baseline'}
  missing = _run(['main.py', f'--workdir={tmp_path}/nonexistent', '--mode=evaluate'])
  assert missing.returncode == 1 and 'no such workdir' in missing.stderr


def test_compare_names_runs_by_their_paths(evaluated_runs, tmp_path):
  """The main job's folders are all seed_0: two rows with each run's own numbers, named by the
  end of the path that tells them apart; the same run twice, or one name twice, is an error."""
  from mimic_jax import compare

  for variant in ('baseline', 'mimic'):
    shutil.copytree(evaluated_runs / variant / 'eval', tmp_path / variant / 'seed_0' / 'eval')
  dirs = [str(tmp_path / 'baseline' / 'seed_0'), str(tmp_path / 'mimic' / 'seed_0')]
  result = compare.compare(dirs, tmp_path / 'out')
  kld = {
    v: json.loads((evaluated_runs / v / 'eval' / 'test' / 'metrics.json').read_text())[
      'explanations'
    ]['grad_cam']['ensemble']['kld']['mean']
    for v in ('baseline', 'mimic')
  }
  assert result['runs']['baseline/seed_0']['kld']['mean'] == pytest.approx(kld['baseline'])
  assert result['runs']['mimic/seed_0']['kld']['mean'] == pytest.approx(kld['mimic'])
  assert 'mimic/seed_0' in result['relative_change']['baseline/seed_0']
  with pytest.raises(compare.ComparisonError, match='are the same run'):
    compare.compare([dirs[0], dirs[0] + '/'], tmp_path / 'twice')
  with pytest.raises(compare.ComparisonError, match="gives \\['x'\\] to more than one run"):
    compare.compare(dirs, tmp_path / 'names', names=['x', 'x'])


def test_compare_refuses_runs_on_different_images(evaluated_runs, tmp_path):
  """Runs evaluated on different test sets are not compared "paired over the same images":
  an error naming both, unless --unpaired, which says so in the report."""
  other = tmp_path / 'other'
  shutil.copytree(evaluated_runs / 'mimic' / 'eval', other / 'eval')
  path = other / 'eval' / 'test' / 'metrics.json'
  metrics = json.loads(path.read_text())
  metrics['per_image']['dicom_id'][0] = 'another-image'
  path.write_text(json.dumps(metrics))
  args = [
    '-m',
    'mimic_jax.compare',
    f'--workdirs={evaluated_runs}/baseline,{other}',
    f'--out={tmp_path}/out',
  ]
  refused = _run(args)
  assert refused.returncode != 0
  assert 'baseline and other were evaluated on different images' in refused.stderr
  unpaired = _run([*args, '--unpaired'])
  assert unpaired.returncode == 0, unpaired.stderr[-3000:]
  assert '**unpaired** bootstrap intervals' in (tmp_path / 'out' / 'comparison.md').read_text()
  path.write_text('{"truncated')
  broken = _run(args)
  assert broken.returncode != 0 and f'{path} is not valid JSON' in broken.stderr


def test_sweep_over_variants_and_seeds_then_resumes(tiny_dataset, tmp_path):
  """Two variants x two seeds, then the same command again (nothing to do); the comparison
  across seeds holds each variant's mean over its seeds and the paired differences."""
  data_dir, manual_dir = tiny_dataset
  args = [
    '-m',
    'mimic_jax.sweep',
    '--variants=baseline,ensemble',
    '--seeds=0-1',
    '--config=configs/test.py',
    f'--out={tmp_path}',
    '--',
    f'--config.data.data_dir={data_dir}',
    f'--config.data.manual_dir={manual_dir}',
  ]
  first = _run(args)
  assert first.returncode == 0, first.stderr[-3000:]
  assert first.stdout.count('done in') == 4
  again = _run(args)
  assert again.returncode == 0 and again.stdout.count('evaluated already') == 4
  result = json.loads((tmp_path / 'comparison' / 'comparison.json').read_text())
  acc = {
    (v, s): json.loads((tmp_path / v / f'seed_{s}' / 'eval' / 'test' / 'metrics.json').read_text())[
      'classification'
    ]['accuracy']
    for v in ('baseline', 'ensemble')
    for s in (0, 1)
  }
  for v in ('baseline', 'ensemble'):
    assert result['variants'][v]['seeds'] == [0, 1]
    assert result['variants'][v]['accuracy']['mean'] == pytest.approx(
      (acc[v, 0] + acc[v, 1]) / 2, rel=1e-12
    )
  diff = result['difference']['baseline']['ensemble']['accuracy']['mean']
  assert diff == pytest.approx(
    (acc['ensemble', 0] - acc['baseline', 0] + acc['ensemble', 1] - acc['baseline', 1]) / 2,
    abs=1e-12,
  )
  # The reference rows across the seeds: the same data, so the same prior in every seed.
  prior = result['reference_maps']['reference: prior']
  assert prior['information_gain']['mean'] == 0.0 and prior['kld']['lo'] == prior['kld']['hi']
  assert '| reference: prior |' in (tmp_path / 'comparison' / 'comparison.md').read_text()
  text = (tmp_path / 'comparison' / 'comparison.md').read_text()
  assert 'Difference to `baseline`, paired by seed' in text


def test_unknown_config_key_fails_before_any_work(tmp_path):
  out = _run(
    [
      'main.py',
      '--config=configs/test.py',
      f'--workdir={tmp_path}/w',
      '--config.mimic.num_models=1',
    ]
  )
  assert out.returncode != 0
  assert 'config.mimic.num_models does not exist' in out.stderr.splitlines()[-1]
  assert not (tmp_path / 'w').exists()
  bad = _run(
    [
      'main.py',
      '--config=configs/test.py',
      f'--workdir={tmp_path}/w',
      '--config.ensemble.num_models=1',
    ]
  )
  assert bad.returncode != 0 and 'config.ensemble.num_models=1 must be >= 2' in bad.stderr


def test_build_cli_and_unknown_config(tmp_path):
  from data_builders.synthetic_egd import generate

  generate.write_tree(tmp_path / 'm', 6, seed=2, scale=0.36, num_workers=0)
  ok = _run(
    [
      '-m',
      'data_builders.build',
      f'--manual_dir={tmp_path}/m',
      f'--data_dir={tmp_path}/d',
      '--config=64',
      '--num_workers=0',
    ]
  )
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert 'mimic_cxr_egd/64/1.0.0' in ok.stdout and 'skipped_ids (0): none' in ok.stdout
  bad = _run(
    [
      '-m',
      'data_builders.build',
      f'--manual_dir={tmp_path}/m',
      f'--data_dir={tmp_path}/d',
      '--config=100',
    ]
  )
  assert bad.returncode != 0 and "unknown config '100'" in bad.stderr


def test_unknown_variant_names_the_choices():
  with pytest.raises(ValueError, match="unknown config variant 'nope'"):
    mimic.get_config('nope')
  out = _run(['main.py', '--config=configs/mimic.py:foo', '--workdir=unused'])
  assert out.returncode == 1 and 'Traceback' not in out.stderr
  (line,) = out.stderr.strip().splitlines()
  assert "unknown config variant 'foo'; use one of ['baseline', 'ensemble'" in line


def test_list_prints_the_variants_and_every_key_with_its_default():
  out = _run(['main.py', '--list'])
  assert out.returncode == 0, out.stderr[-2000:]
  assert all(v in out.stdout.splitlines()[0] for v in mimic.VARIANTS)
  assert '  learning_rate = 0.0001' in out.stdout and '  gaze.weight = 1.0' in out.stdout
  assert "  data.synthetic.reader = 'realistic'" in out.stdout
  assert 'python main.py --list    # the config variants' in _run(['main.py', '--help']).stdout


def test_compare_runs_without_the_training_stack():
  out = _run(
    [
      '-c',
      'import sys, mimic_jax.compare; print(sorted(m for m in sys.modules if '
      'm.split(".")[0] in ("flax", "orbax", "tensorflow_datasets", "optax")))',
    ]
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == '[]'


def test_a_second_identical_run_compiles_nothing_new(tiny_dataset, tmp_path):
  """The persistent compilation cache: a second run of the same command in a fresh workdir
  finds every program the first one compiled and writes no entry; no write fails."""
  data_dir, manual_dir = tiny_dataset
  cache = tmp_path / 'cache'
  env = dict(
    os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0'
  )
  listings = []
  for run in ('first', 'second'):
    out = subprocess.run(
      [
        sys.executable,
        'main.py',
        '--config=configs/test.py:baseline',
        f'--workdir={tmp_path / run}',
        '--mode=train_and_evaluate',
        f'--config.data.data_dir={data_dir}',
        f'--config.data.manual_dir={manual_dir}',
      ],
      capture_output=True,
      text=True,
      env=env,
      check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'Error writing persistent compilation cache' not in out.stderr
    listings.append(sorted(p.name for p in cache.iterdir()))
  assert len(listings[0]) >= 4  # init, the step, validation, evaluation's programs
  assert listings[1] == listings[0]


def test_explain_new_images(evaluated_runs, tiny_dataset, tmp_path):
  """``python -m mimic_jax.explain``: a JPEG exactly as the dataset holds it, a 16-bit PNG, an
  RGB PNG and a MONOCHROME1 DICOM; probabilities, per sub-model too; overlays; conversions
  said; an unusable image (another DICOM kind, a broken file) named in one error."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  from data_builders.mimic_cxr_egd import images  # noqa: PLC0415
  from tests.test_dicom import write_dicom  # noqa: PLC0415

  data_dir, manual_dir = tiny_dataset
  run = evaluated_runs / 'mimic'
  source = tfds.data_source('mimic_cxr_egd/64_sigma75', split='test', data_dir=data_dir)
  example = source[0]
  jpg = next(pathlib.Path(manual_dir).rglob(f'{example["dicom_id"].decode()}.jpg'))
  # The same preprocessing as the dataset's: the builder's pixels exactly.
  np.testing.assert_array_equal(images.load_any(jpg, 64)[0], example['image'][..., 0])
  rng = np.random.default_rng(0)
  Image.fromarray((rng.random((90, 80)) * 60000).astype(np.uint16)).save(tmp_path / 'deep.png')
  Image.fromarray((rng.random((70, 70, 3)) * 255).astype(np.uint8)).save(tmp_path / 'rgb.png')
  write_dicom(tmp_path / 'dicoms' / 'inverted.dcm', rng.integers(0, 4000, (60, 50)), 'MONOCHROME1')
  out = _run(
    [
      '-m',
      'mimic_jax.explain',
      f'--workdir={run}',
      f'--out={tmp_path}/out',
      str(jpg),
      str(tmp_path / '*.png'),
      str(tmp_path / 'dicoms'),
    ]
  )
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert summary['skipped'] == []
  summary = summary['images']
  assert [pathlib.Path(s['image']).name for s in summary] == [
    jpg.name,
    'deep.png',
    'rgb.png',
    'inverted.dcm',
  ]
  for s in summary:
    probs = np.array(list(s['probabilities'].values()))
    members = np.array([list(p.values()) for p in s['sub_model_probabilities']])
    assert members.shape == (3, 3) and np.allclose(members.sum(1), 1)
    geometric = np.exp(np.log(members).mean(0))
    np.testing.assert_allclose(probs, geometric / geometric.sum(), rtol=1e-5)
    assert s['predicted'] == max(s['probabilities'], key=s['probabilities'].get)
    assert s['explained_class'] == s['predicted'] and s['checkpoint']['step'] == 4
    for name in s['overlays'].values():
      # Five panels side by side (the image, the ensemble, three sub-models) at 150 dpi.
      width, height = Image.open(tmp_path / 'out' / name).size
      assert width > 2.5 * height and height >= 400
      assert (tmp_path / 'out' / name).with_suffix('.svg').stat().st_size > 10_000
    assert f'{s["predicted"]} ({s["probabilities"][s["predicted"]]:.3f})' in out.stdout
  assert summary[0]['conversions'] == [] and summary[3]['conversions'] == []
  assert 'scaled to 8 bits' in summary[1]['conversions'][0]
  assert 'converted to grey' in summary[2]['conversions'][0]

  write_dicom(tmp_path / 'bad' / 'colour.dcm', rng.integers(0, 4000, (20, 20)), 'PALETTE COLOR')
  (tmp_path / 'bad' / 'broken.jpg').write_bytes(b'\xff\xd8 not really')
  bad = _run(['-m', 'mimic_jax.explain', f'--workdir={run}', str(tmp_path / 'bad')])
  assert bad.returncode == 1
  assert '2 image(s) cannot be used' in bad.stderr
  assert 'PhotometricInterpretation PALETTE COLOR is not a grey radiograph' in bad.stderr
  assert 'broken.jpg' in bad.stderr and 'Traceback' not in bad.stderr
  empty = _run(['-m', 'mimic_jax.explain', f'--workdir={tmp_path}', str(jpg)])
  assert empty.returncode == 1 and 'config.json not found' in empty.stderr
  # Another class, the raw maps, and the good images of a batch with bad ones.
  other = _run(
    [
      '-m',
      'mimic_jax.explain',
      f'--workdir={run}',
      f'--out={tmp_path}/other',
      '--target=CHF',
      '--config.evaluation.gradcam_target=ensemble_log_softmax',
      '--save_maps',
      '--skip_invalid',
      '--explainers=grad_cam',
      str(jpg),
      str(tmp_path / 'bad'),
    ]
  )
  assert other.returncode == 0, other.stderr[-3000:]
  result = json.loads((tmp_path / 'other' / 'summary.json').read_text())
  assert len(result['skipped']) == 2 and 'broken.jpg' in other.stdout
  (entry,) = result['images']
  assert entry['explained_class'] == 'CHF' and len(entry['maps']['grad_cam']) == 3
  assert entry['gradcam_target'] == 'ensemble_log_softmax'  # the --config override took
  for m, name in enumerate(entry['maps']['grad_cam']):
    assert name == f'{jpg.stem}_grad_cam_member{m}.npy'
    raw = np.load(tmp_path / 'other' / name)
    assert raw.dtype == np.float32 and raw.shape == (64, 64) and raw.min() >= 0


def test_report_html_renders_in_a_headless_browser(evaluated_runs, tmp_path):
  """The evaluation's report.html, copied alone (no PNGs beside it), opened in Chromium: the
  report's sections and tables, the training curves and every gallery image decode."""
  ev = evaluated_runs / 'mimic' / 'eval' / 'test'
  markdown = (ev / 'report.md').read_text()
  linked = [line[line.index('(') + 1 : -1] for line in markdown.splitlines() if line[:2] == '![']
  assert linked[0] == 'training_curves.png' and all((ev / name).exists() for name in linked)
  assert sorted(linked[1:]) == sorted(p.name for p in ev.glob('gallery_*.png'))
  page = tmp_path / 'report.html'
  shutil.copy(ev / 'report.html', page)
  found, console = browser.render(page)
  assert console == []
  assert found['title'].startswith('Evaluation of')
  assert {'Classification', 'Explanations against radiologist gaze', 'Figures'} <= set(
    found['headings']
  )
  assert found['tables'] == markdown.count('\n|---|')
  assert [i['alt'] for i in found['images']] == linked
  for image, name in zip(found['images'], linked):
    with Image.open(ev / name) as png:
      assert image['data'] and image['complete'] and (image['width'], image['height']) == png.size


def test_evaluate_reflacx_scores_an_egd_run_beside_the_prior_and_the_ceiling(
  evaluated_runs, tiny_reflacx
):
  """The documented command on a run trained on (synthetic) EGD: every REFLACX split, the
  model's rows beside uniform, prior and the reader ceiling, in the printout and the files."""
  root = evaluated_runs
  data_dir, manual_dir = tiny_reflacx
  out = _run(
    [
      '-m',
      'mimic_jax.evaluate_reflacx',
      f'--workdir={root}/baseline',
      f'--data_dir={data_dir}',
      f'--manual_dir={manual_dir}',
    ]
  )
  assert out.returncode == 0, out.stderr[-3000:]
  for row in ('| grad_cam |', '| uniform |', '| prior |', '| reader |'):
    assert row in out.stdout
  results = json.loads((root / 'baseline' / 'eval_reflacx' / 'metrics.json').read_text())
  assert results['splits'] == ['train', 'validation', 'test']
  assert results['left_out_trained_images'] == 0 and results['training_images_known']
  assert results['images_every_reader_read'] >= 3
  ceiling = results['tables']['ceiling']['reader']['cc']
  assert ceiling['n'] == results['images_every_reader_read'] and 0 < ceiling['mean'] < 1
  assert (root / 'baseline' / 'eval_reflacx' / 'report.md').exists()
