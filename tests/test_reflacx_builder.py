"""The ``reflacx`` builder on a synthetic REFLACX tree: the tree's format and corner cases, the
built features against independent readings of the files, validation, and the reader ceiling's
calibration."""

import csv
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest
from scipy import stats
import tensorflow_datasets as tfds

from data_builders.reflacx import heatmap
from data_builders.reflacx import labels
from data_builders.reflacx import prepare
from data_builders.reflacx import reflacx_format as fmt
from data_builders.reflacx import reflacx_reader
from data_builders.synthetic_reflacx import generate

ROOT = pathlib.Path(__file__).resolve().parents[1]
TFDS = ROOT / '.venv-tfds' / 'bin' / 'tfds'
SIZE = 64
PHASES = (3, 2, 6)


def _write(tree):
  return generate.write_tree(
    tree, PHASES, seed=0, scale=0.36, raw_gaze=True, fixations_per_reading=30
  )


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """(manual_dir, plans, builder, {split: [examples]}) of a 11-image tree built at 64 px."""
  manual = tmp_path_factory.mktemp('reflacx_manual')
  plans = _write(manual)
  builder = prepare.build(
    manual, tmp_path_factory.mktemp('reflacx_tfds'), config='64', num_workers=0
  )
  examples = {
    s: [
      tfds.data_source('reflacx/64', split=s, data_dir=pathlib.Path(builder.data_dir).parents[2])[i]
      for i in range(builder.info.splits[s].num_examples)
    ]
    for s in builder.info.splits
  }
  return manual, plans, builder, examples


def _main_data(manual):
  return pathlib.Path(manual).joinpath(*generate.REFLACX_DIR, 'main_data')


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_the_tree_has_the_published_format_and_its_corner_cases(built):
  manual, plans, _, _ = built
  main = _main_data(manual)
  raw = (main / 'metadata_phase_1.csv').read_bytes()
  assert raw.count(b'\r\n') == raw.count(b'\n') == 1 + PHASES[0] * 5  # CRLF, header + rows
  ids = [r['id'] for r in _rows(main / 'metadata_phase_1.csv')]
  assert ids == sorted(ids) and all(i.startswith('P1') and len(i) == 11 for i in ids)
  assert {i[:4] for i in ids} == {'P102', 'P103', 'P104'}  # phase 1 trials start at 2
  phase3 = _rows(main / 'metadata_phase_3.csv')
  assert [r['image'] for r in phase3] == sorted(r['image'] for r in phase3)
  discarded = [
    r['id']
    for p in (1, 2)
    for r in _rows(main / f'metadata_phase_{p}.csv')
    if r['eye_tracking_data_discarded'] == 'True'
  ]
  assert discarded
  for rid in discarded:
    assert sorted(os.listdir(main / rid)) == [
      'anomaly_location_ellipses.csv',
      'chest_bounding_box.csv',
    ]
    assert os.listdir(main.parent / 'gaze_data' / rid) == []
  header_only = [
    d
    for d in os.listdir(main)
    if (main / d).is_dir()
    and len((main / d / 'anomaly_location_ellipses.csv').read_bytes().splitlines()) == 1
  ]
  assert header_only, 'a normal image has a header-only ellipse file'
  zoomed = off = 0
  for p in plans:
    for rid, gone in zip(p.reading_ids, p.discarded):
      if gone:
        continue
      fix = fmt.read_fixations(main / rid / 'fixations.csv')
      zoomed += int(np.sum(fix['xmax_shown_from_image'] - fix['xmin_shown_from_image'] < p.width))
      off += int(np.sum((fix['x_position'] < 0) | (fix['x_position'] >= p.width)))
      words = _rows(main / rid / 'timestamps_transcription.csv')
      text = (main / rid / 'transcription.txt').read_text()
      assert ' '.join(w['word'] for w in words) == text.replace('.', ' .').replace(',', ' ,')
      assert any(w['timestamp_start_word'] == w['timestamp_end_word'] for w in words)
      gaze = _rows(main.parent / 'gaze_data' / rid / 'gaze.csv')
      steps = np.diff([float(g['timestamp_sample']) for g in gaze])
      np.testing.assert_allclose(steps, 0.001, atol=1e-9)
      assert any(g['x_position'] == '' and g['pupil_area_normalized'] == '' for g in gaze)
  assert zoomed > 0 and off > 0


def test_splits_labels_and_groups_follow_the_metadata(built):
  manual, plans, builder, examples = built
  by_id = {p.dicom_id: p for p in plans}
  names = {'train': 'train', 'validate': 'validation', 'test': 'test'}
  seen = set()
  for split, exs in examples.items():
    for ex in exs:
      p = by_id[ex['dicom_id'].decode()]
      seen.add(p.dicom_id)
      assert split in ('other', names[p.split])
      assert list(ex['original_size']) == [p.height, p.width]
      assert [i.decode() for i in ex['readings']['id']] == sorted(p.reading_ids)
      # The image's class by the stated mapping, from the metadata read here with csv.
      rows = {
        r['id']: r
        for ph in (1, 2, 3)
        for r in _rows(_main_data(manual) / f'metadata_phase_{ph}.csv')
      }
      classes = []
      for rid in p.reading_ids:
        r = rows[rid]
        skip = set(fmt.METADATA_FIXED) | {'Other', 'Support devices', 'Quality issue'}
        positive = {k for k, v in r.items() if k not in skip and int(v) >= 3}
        chf = bool(positive & {'Enlarged cardiac silhouette', 'Pulmonary edema'})
        pneu = 'Consolidation' in positive
        classes.append(1 if chf and not pneu else 2 if pneu and not chf else 3 if positive else 0)
      counts = sorted(((classes.count(c), c) for c in set(classes)), reverse=True)
      expected = 3 if len(counts) > 1 and counts[0][0] == counts[1][0] else counts[0][1]
      assert ex['label'] == expected
      assert (split == 'other') == (expected == 3 or all(p.discarded))
  assert seen == set(by_id)
  meta = builder.info.metadata
  assert meta['discarded_readings'] == sum(sum(p.discarded) for p in plans)


def _official_map(fix, width, height):
  """The official formula (scipy's normal density per fixation on its shown rectangle,
  duration-weighted, normalised) at full size, then averaged over each grid cell's area."""
  total = np.zeros((height, width))
  rows, cols = np.mgrid[0:height, 0:width]
  for i in range(len(fix['x_position'])):
    x0, y0, x1, y1 = (
      int(round(fix[f'{a}_shown_from_image'][i])) for a in ('xmin', 'ymin', 'xmax', 'ymax')
    )
    inside = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    pdf = stats.norm.pdf(
      cols, fix['x_position'][i], fix['angular_resolution_x_pixels_per_degree'][i]
    )
    pdf = pdf * stats.norm.pdf(
      rows, fix['y_position'][i], fix['angular_resolution_y_pixels_per_degree'][i]
    )
    total += pdf * inside * (fix['timestamp_end_fixation'][i] - fix['timestamp_start_fixation'][i])
  total /= total.sum()

  def box(n):  # (SIZE, n): output cell j averages source pixels over [j n / S, (j + 1) n / S)
    edges = np.linspace(0, n, SIZE + 1)
    pixels = np.arange(n)
    lo, hi = np.maximum(edges[:-1, None], pixels), np.minimum(edges[1:, None], pixels + 1)
    return np.clip(hi - lo, 0, None) / (n / SIZE)

  small = box(height) @ total @ box(width).T
  return small / small.sum()


def test_a_hand_written_reading_of_two_fixations_one_zoomed_builds_to_the_official_map(
  built, tmp_path
):
  """Two fixations replace one reading's: A unzoomed at 1 degree = 60 px; B zoomed x2 on the
  right half (shown rect cut at column W/2, 30 px per degree). Built with the builder, against
  the official formula computed here at full size with scipy."""
  manual, plans, _, _ = built
  tree = tmp_path / 'manual'
  shutil.copytree(manual, tree)
  p = next(p for p in plans if p.phase == 3)
  w, h = p.width, p.height
  full = [0, 0, w, h]
  half = [w // 2, 0, w, h]
  rows = [
    [
      '1.000',
      '1.500',
      w // 4,
      h // 3,
      '1.000',
      60,
      60,
      '1.00000',
      '0.50000',
      *full,
      1000,
      0,
      2800,
      2160,
    ],
    [
      '2.000',
      '2.250',
      w // 2 + 10,
      h // 2,
      '1.000',
      30,
      30,
      '1.00000',
      '0.50000',
      *half,
      660,
      0,
      3180,
      2160,
    ],
  ]
  path = _main_data(tree) / p.reading_ids[0] / 'fixations.csv'
  with path.open('w', newline='\r\n') as f:
    csv.writer(f, lineterminator='\n').writerows([fmt.FIXATION_COLUMNS, *rows])
  builder = prepare.build(tree, tmp_path / 'tfds', config='64', num_workers=0)
  found = None
  for s in builder.info.splits:
    src = tfds.data_source('reflacx/64', split=s, data_dir=tmp_path / 'tfds')
    for i in range(len(src)):
      if src[i]['dicom_id'].decode() == p.dicom_id:
        found = src[i]
  assert found is not None
  expected = _official_map(fmt.read_fixations(path), w, h)
  np.testing.assert_allclose(found['readings']['gaze'][0], expected, rtol=2e-4, atol=1e-8)
  np.testing.assert_allclose(found['gaze'], expected, rtol=2e-4, atol=1e-8)
  # B's Gaussian is cut at the zoom's left edge: nothing of it left of column W/2 on the grid.
  only_a = _official_map({k: v[:1] for k, v in fmt.read_fixations(path).items()}, w, h)
  left = SIZE // 2 - 1
  np.testing.assert_allclose(
    expected[:, :left] / only_a[:, :left], expected[0, 0] / only_a[0, 0], rtol=1e-5
  )


def test_discarded_readings_and_off_image_fixations(built):
  manual, plans, builder, examples = built
  main = _main_data(manual)
  dropped = 0
  for p in plans:
    for rid, gone in zip(p.reading_ids, p.discarded):
      if gone:
        continue
      fix = fmt.read_fixations(main / rid / 'fixations.csv')
      # Independently: on the shown image, or > 50 screen px from the buttons and < 0.5 deg off.
      x, y = fix['x_position'], fix['y_position']
      on = (x >= fix['xmin_shown_from_image']) & (x <= fix['xmax_shown_from_image'])
      on &= (y >= fix['ymin_shown_from_image']) & (y <= fix['ymax_shown_from_image'])
      sx = (fix['xmax_in_screen_coordinates'] - fix['xmin_in_screen_coordinates']) / (
        fix['xmax_shown_from_image'] - fix['xmin_shown_from_image']
      )
      screen_x = fix['xmin_in_screen_coordinates'] + (x - fix['xmin_shown_from_image']) * sx
      screen_y = fix['ymin_in_screen_coordinates'] + (y - fix['ymin_shown_from_image']) * sx
      near_buttons = (screen_x < 650 + 50) & (screen_y > 933 - 50) & (screen_y < 1122 + 50)
      degrees = np.maximum(x - fix['xmax_shown_from_image'], fix['xmin_shown_from_image'] - x)
      degrees = np.maximum(degrees, 0) / fix['angular_resolution_x_pixels_per_degree']
      kept = on | (~near_buttons & (degrees < 0.5))
      np.testing.assert_array_equal(heatmap.kept_fixations(fix), kept)
      dropped += int((~kept).sum())
  assert dropped > 0
  assert builder.info.metadata['dropped_filtered_fixations'] == dropped
  every = sum(examples.values(), [])
  with_discarded = [ex for ex in every if np.any(ex['readings']['discarded'])]
  assert with_discarded
  for ex in with_discarded:
    gone = np.asarray(ex['readings']['discarded'])
    g = np.asarray(ex['readings']['gaze'])
    assert not g[gone].any() and not np.asarray(ex['readings']['fixation_map'])[gone].any()
    assert ex['num_gaze_readings'] == (~gone).sum()
    np.testing.assert_allclose(ex['gaze'], g[~gone].mean(axis=0), rtol=1e-5)
    assert np.asarray(ex['readings']['chest_box'])[gone].max() > 0  # the box is still there


def test_ellipses_and_certainties_against_the_csv(built):
  manual, plans, _, examples = built
  main = _main_data(manual)
  checked = 0
  for ex in sum(examples.values(), []):
    h, w = ex['original_size']
    for k, rid in enumerate(i.decode() for i in ex['readings']['id']):
      phase = int(ex['readings']['phase'][k])
      rows = _rows(main / rid / 'anomaly_location_ellipses.csv')
      for f, finding in enumerate(labels.FINDINGS):
        want = np.zeros((SIZE, SIZE), bool)
        columns = [c for c, t in labels.finding_names(phase).items() if t == finding]
        for r in rows:
          if int(r['certainty']) > 2 and any(r[c] == 'True' for c in columns):
            cx, cy = (
              (float(r['xmin']) + float(r['xmax'])) / 2,
              (float(r['ymin']) + float(r['ymax'])) / 2,
            )
            a, b = (
              (float(r['xmax']) - float(r['xmin'])) / 2,
              (float(r['ymax']) - float(r['ymin'])) / 2,
            )
            jj, ii = np.meshgrid(
              (np.arange(SIZE) + 0.5) * w / SIZE, (np.arange(SIZE) + 0.5) * h / SIZE
            )
            want |= ((jj - cx) / a) ** 2 + ((ii - cy) / b) ** 2 <= 1
        np.testing.assert_array_equal(ex['readings']['ellipses'][k][f], want)
        checked += int(want.any())
      box = _rows(main / rid / 'chest_bounding_box.csv')[0]
      np.testing.assert_allclose(
        ex['readings']['chest_box'][k],
        [
          float(box['xmin']) / w,
          float(box['ymin']) / h,
          float(box['xmax']) / w,
          float(box['ymax']) / h,
        ],
        rtol=1e-6,
      )
  assert checked > 0


def test_phase_1_labels_cross_to_the_phase_2_3_vocabulary_by_hand():
  values = {n: 0 for n in fmt.PHASE_1_LABELS}
  values.update({'Mass': 2, 'Nodule': 4, 'Pleural effusion': 3, 'Wide mediastinum': 1})
  values.update({'Other': 'Granuloma', 'Support devices': True, 'Quality issue': False})
  got = dict(zip(labels.FINDINGS, labels.certainties(values, 1)))
  assert got['Lung nodule or mass'] == 4 and got['Pleural abnormality'] == 3
  assert got['Abnormal mediastinal contour'] == 1
  assert got['Enlarged hilum'] == -1 and got['Hiatal hernia'] == -1  # not asked in phase 1
  assert labels.egd_class(labels.certainties(values, 1)) == labels.OTHER
  p1 = labels.phase_vector(values, 1, fmt.PHASE_1_LABELS)
  assert (
    p1[fmt.PHASE_1_LABELS.index('Other')] == 1
    and p1[fmt.PHASE_1_LABELS.index('Support devices')] == 1
  )
  assert (labels.phase_vector(values, 1, fmt.PHASE_2_3_LABELS) == -1).all()
  finding = lambda **c: np.asarray([c.get(n.replace(' ', '_'), 0) for n in labels.FINDINGS])
  assert labels.egd_class(finding(Pulmonary_edema=3)) == labels.CHF
  assert labels.egd_class(finding(Consolidation=5, Atelectasis=2)) == labels.PNEUMONIA
  assert labels.egd_class(finding(Consolidation=4, Pulmonary_edema=4)) == labels.OTHER
  assert labels.egd_class(finding(Atelectasis=2)) == labels.NORMAL
  assert labels.image_class([1, 1, 0, 2, 1]) == labels.CHF
  assert labels.image_class([1, 1, 2, 2, 0]) == labels.OTHER


def test_reading_needs_no_tensorflow(built):
  _, _, builder, examples = built
  data_dir = str(pathlib.Path(builder.data_dir).parents[2])
  code = textwrap.dedent(f"""
      import sys, tensorflow_datasets as tfds
      src = tfds.data_source('reflacx/64', split='train', data_dir={data_dir!r})
      ex = src[0]
      assert ex['image'].shape == ({SIZE}, {SIZE}, 1), ex['image'].shape
      assert 'tensorflow' not in sys.modules
      print(len(src))
      """)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert int(out.stdout.split()[-1]) == len(examples['train'])


@pytest.mark.parametrize('form', ['imports', 'folder'])
def test_tfds_build_command_line(built, tmp_path, form):
  manual = built[0]
  target = (
    ['reflacx', '--imports', 'data_builders.reflacx']
    if form == 'imports'
    else ['data_builders/reflacx']
  )
  tfds_cli = TFDS
  if not tfds_cli.exists():
    pytest.fail(f'{tfds_cli} is missing: run bash scripts/setup_tfds_cli_env.sh')
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_'))}
  out = subprocess.run(
    [
      str(tfds_cli),
      'build',
      *target,
      '--data_dir',
      str(tmp_path / 'tfds'),
      '--manual_dir',
      str(manual),
      '--config',
      '64',
      '--file_format',
      'array_record',
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
    timeout=900,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / 'tfds' / 'reflacx' / '64' / '1.0.0' / 'dataset_info.json').exists()


def test_bad_input_names_file_and_line_and_skipping_builds_the_rest(built, tmp_path):
  manual, plans, _, examples = built
  tree = tmp_path / 'manual'
  shutil.copytree(manual, tree)
  main = _main_data(tree)
  three = [p for p in plans if p.phase == 3]
  broken_fix = main / three[0].reading_ids[0] / 'fixations.csv'
  text = broken_fix.read_text().splitlines()
  text[2] = text[2].replace(text[2].split(',')[2], 'left', 1)
  broken_fix.write_text('\n'.join(text) + '\n')
  jpg = next(tree.rglob(f'{three[1].dicom_id}.jpg'))
  Image.new('L', (10, 12)).save(jpg)
  with pytest.raises(reflacx_reader.ReflacxValidationError) as e:
    prepare.build(tree, tmp_path / 'tfds', config='64', num_workers=0)
  message = str(e.value)
  assert f'{broken_fix}, line 3' in message and "'x_position'" in message
  assert f'{jpg}' in message and 'is 10 x 12 pixels' in message
  builder = prepare.build(
    tree, tmp_path / 'tfds', config='64', skip_invalid_rows=True, num_workers=0
  )
  assert sorted(builder.info.metadata['skipped_ids']) == sorted(
    [three[0].dicom_id, three[1].dicom_id]
  )
  total = sum(s.num_examples for s in builder.info.splits.values())
  assert total == sum(len(v) for v in examples.values()) - 2


def test_missing_download_names_the_file(tmp_path):
  with pytest.raises(
    FileNotFoundError, match='reflacx-xray-localization/1.0.0/main_data/metadata_phase_1.csv'
  ):
    reflacx_reader.read_tree(tmp_path)


def test_the_reader_ceiling_of_the_default_tree_lands_near_reflacx(tmp_path):
  """One reader against the mean of the other four, NCC (Pearson) of the 64 x 64 heatmaps,
  mean over the default tree's images every reader read: REFLACX 0.632 [0.606, 0.658]. The
  default tree's phases 1-2 are written alone (they do not depend on phase 3)."""
  default = generate.write_tree.__defaults__[0]
  full_plan = generate.plan_images(default, 0, 0.5, 5)
  plans = generate.write_tree(tmp_path, (default[0], default[1], 0), seed=0)
  assert [(p.dicom_id, p.reading_ids, p.discarded) for p in plans] == [
    (p.dicom_id, p.reading_ids, p.discarded) for p in full_plan if p.phase < 3
  ]
  main = _main_data(tmp_path)
  per_image = []
  for p in plans:
    if any(p.discarded):
      continue
    maps = np.stack(
      [
        heatmap.resized_heatmap(
          fmt.read_fixations(main / rid / 'fixations.csv'), p.width, p.height, 64
        )
        for rid in p.reading_ids
      ]
    )
    per_image.append(
      np.mean(
        [
          np.corrcoef(maps[r].ravel(), np.delete(maps, r, axis=0).mean(axis=0).ravel())[0, 1]
          for r in range(5)
        ]
      )
    )
  assert len(per_image) >= 20
  assert abs(np.mean(per_image) - 0.632) < 0.05, np.mean(per_image)
