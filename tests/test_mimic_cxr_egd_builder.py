"""Builds the TFDS dataset from a synthetic PhysioNet tree and checks it against the files."""

import csv
import io
import shutil
import subprocess
import sys
import textwrap

from conftest import FIXTURE_SIGMA
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data_builders.mimic_cxr_egd import EgdConfig
from data_builders.mimic_cxr_egd import MimicCxrEgd
from data_builders.mimic_cxr_egd import egd_reader
from data_builders.mimic_cxr_egd import gaze_maps

SIZE = 32


def _build(manual_dir, data_dir, name='t32', skip=False):
  cfg = EgdConfig(name=name, image_size=SIZE, gaze_sigma=FIXTURE_SIGMA, skip_invalid_rows=skip)
  builder = MimicCxrEgd(config=cfg, data_dir=data_dir, file_format='array_record', num_workers=0)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def _read_fixations(manual_dir):
  with open(manual_dir / 'egd-cxr/1.0.0/fixations.csv', newline='') as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def built(synthetic_tree, tmp_path_factory):
  manual, specs = synthetic_tree
  builder = _build(manual, tmp_path_factory.mktemp('tfds'))
  examples = {s: list(builder.as_data_source(split=s)) for s in ('train', 'validation', 'test')}
  return manual, specs, builder, examples


def test_splits_follow_the_official_patient_rule(built):
  _, specs, _, examples = built
  expected = {s.dicom_id: s.split for s in specs}
  for split, exs in examples.items():
    for ex in exs:
      assert expected[ex['dicom_id'].decode()] == split
  patients = {s: {ex['patient_id'] for ex in exs} for s, exs in examples.items()}
  assert not patients['train'] & patients['test'] and not patients['train'] & patients['validation']
  assert sum(map(len, examples.values())) == len(specs)
  assert all(len(exs) > 0 for exs in examples.values())


def test_labels_sizes_and_features(built):
  manual, specs, _, examples = built
  by_id = {s.dicom_id: s for s in specs}
  for ex in sum(examples.values(), []):
    spec = by_id[ex['dicom_id'].decode()]
    assert ex['label'] == spec.label
    assert ex['image'].shape == (SIZE, SIZE, 1) and ex['image'].dtype == np.uint8
    np.testing.assert_array_equal(ex['original_size'], [spec.height, spec.width])
    assert ex['gaze'].shape == (SIZE, SIZE) and ex['gaze'].dtype == np.float32
    assert ex['gaze'].sum() == pytest.approx(1.0, abs=1e-4)
    assert ex['fixation_map'].dtype == np.uint8 and set(np.unique(ex['fixation_map'])) <= {0, 1}
    jpg = Image.open(next(manual.glob(f'mimic-cxr-jpg/2.0.0/files/*/*/*/{spec.dicom_id}.jpg')))
    assert jpg.size == (spec.width, spec.height)


def test_gaze_fixations_and_maps_match_an_independent_reading_of_the_csv(built):
  manual, specs, _, examples = built
  rows = _read_fixations(manual)
  size_of = {s.dicom_id: (s.height, s.width) for s in specs}
  for ex in sum(examples.values(), []):
    dicom_id = ex['dicom_id'].decode()
    h, w = size_of[dicom_id]
    mine = [
      (int(r['X_ORIGINAL']), int(r['Y_ORIGINAL']), float(r['FPOGS']), float(r['FPOGD']))
      for r in rows
      if r['DICOM_ID'] == dicom_id
    ]
    mine = [m for m in mine if 0 <= m[0] < w and 0 <= m[1] < h]
    x = np.array([m[0] for m in mine])
    y = np.array([m[1] for m in mine])
    ref = gaze_maps.reference_static_heatmap(x, y, (h, w), SIZE, sigma=FIXTURE_SIGMA)
    assert np.corrcoef(ex['gaze'].ravel(), ref.ravel())[0, 1] >= 0.999
    fx = ex['fixations']
    np.testing.assert_allclose(fx['x'], x / w, rtol=1e-6)
    np.testing.assert_allclose(fx['y'], y / h, rtol=1e-6)
    np.testing.assert_allclose(fx['start_s'], [m[2] for m in mine], rtol=1e-6)
    np.testing.assert_allclose(fx['duration_s'], [m[3] for m in mine], rtol=1e-6)
    cells = {
      (min(int(yy * SIZE / h), SIZE - 1), min(int(xx * SIZE / w), SIZE - 1)) for xx, yy in zip(x, y)
    }
    assert ex['fixation_map'].sum() == len(cells)
    for r, c in cells:
      assert ex['fixation_map'][r, c] == 1


def test_calibration_and_off_image_fixations_are_dropped_and_counted(built):
  manual, specs, builder, examples = built
  rows = _read_fixations(manual)
  size_of = {s.dicom_id: (s.height, s.width) for s in specs}
  calibration = [r for r in rows if len(r['DICOM_ID']) == 39]
  off = [
    r
    for r in rows
    if r['DICOM_ID'] in size_of
    and not (
      0 <= int(r['X_ORIGINAL']) < size_of[r['DICOM_ID']][1]
      and 0 <= int(r['Y_ORIGINAL']) < size_of[r['DICOM_ID']][0]
    )
  ]
  assert calibration and off  # the fixture exercises both
  meta = builder.info.metadata
  assert meta['dropped_calibration_fixations'] == len(calibration)
  assert meta['dropped_off_image_fixations'] == len(off)
  kept = sum(len(ex['fixations']['x']) for ex in sum(examples.values(), []))
  assert kept == len(rows) - len(calibration) - len(off)
  one = [ex for ex in sum(examples.values(), []) if len(ex['fixations']['x']) == 1]
  assert one, 'the fixture has an image with a single fixation'


def test_reading_needs_no_tensorflow(built):
  _, _, builder, examples = built
  data_dir = str(builder.data_dir).rsplit('/mimic_cxr_egd', 1)[0]
  code = textwrap.dedent(f"""
      import sys, tensorflow_datasets as tfds
      src = tfds.data_source('mimic_cxr_egd/t32', split='train', data_dir={data_dir!r})
      ex = src[0]
      assert ex['image'].shape == ({SIZE}, {SIZE}, 1), ex['image'].shape
      assert 'tensorflow' not in sys.modules
      print(len(src))
      """)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert int(out.stdout.split()[-1]) == len(examples['train'])


def _corrupt_copy(src, dst):
  shutil.copytree(src, dst)
  egd = dst / 'egd-cxr/1.0.0'
  with open(egd / 'master_sheet.csv', newline='') as f:
    rows = list(csv.reader(f))
  header, body = rows[0], rows[1:]
  col = {c: i for i, c in enumerate(header)}
  jpg = lambda r: dst / 'mimic-cxr-jpg/2.0.0' / r[col['path']].replace('.dcm', '.jpg')
  missing, unreadable, two_labels, duplicated = body[4], body[5], body[6], body[7]
  truncated = body[8]
  jpg(missing).unlink()
  jpg(unreadable).write_bytes(b'not a jpeg')
  whole = jpg(truncated).read_bytes()
  jpg(truncated).write_bytes(whole[: len(whole) // 2])  # the header reads; the image does not
  two_labels[col['Normal']] = two_labels[col['CHF']] = '1'
  two_labels[col['pneumonia']] = '0'
  body.append(list(duplicated))
  with open(egd / 'master_sheet.csv', 'w', newline='') as f:
    csv.writer(f, lineterminator='\n').writerows([header] + body)
  with open(egd / 'fixations.csv', newline='') as f:
    fix = list(csv.reader(f))
  stray = list(fix[1])
  stray[2] = 'deadbeef-00000000-00000000-00000000-00000000'
  bad_ids = {r[0] for r in (missing, unreadable, two_labels, duplicated, truncated)}
  twice = next(i for i, r in enumerate(fix) if i and r[2] in {b[0] for b in body} - bad_ids)
  with open(egd / 'fixations.csv', 'a', newline='') as f:
    csv.writer(f, lineterminator='\n').writerows([stray, stray, fix[twice]])
  ids = [r[0] for r in (missing, unreadable, two_labels, duplicated, truncated)]
  # Line where each record starts (quoted fields hold newlines), counted on the written text.
  starts, line = [], 2
  for row in body:
    starts.append(line)
    buf = io.StringIO()
    csv.writer(buf, lineterminator='\n').writerow(row)
    line += buf.getvalue().count('\n')
  return ids, starts, len(fix) + 1, twice + 1


def test_bad_input_reports_every_problem_with_file_and_line(synthetic_tree, tmp_path):
  manual, _ = synthetic_tree
  ids, starts, stray_line, twice_line = _corrupt_copy(manual, tmp_path / 'bad')
  with pytest.raises(egd_reader.EgdValidationError) as err:
    _build(tmp_path / 'bad', tmp_path / 'tfds')
  msg = str(err.value)
  sheet = 'egd-cxr/1.0.0/master_sheet.csv'
  assert '7 problem(s)' in msg
  assert f'{sheet} line {starts[8]} (record 9): image unreadable' in msg and 'truncated' in msg
  assert f'fixations.csv line {stray_line + 2}: duplicate of line {twice_line}' in msg
  assert str(tmp_path) not in msg  # image paths relative to the manual_dir
  assert f'{sheet} line {starts[4]} (record 5): image file not found' in msg and ids[0] in msg
  assert f'{sheet} line {starts[5]} (record 6): image unreadable' in msg
  assert f'{sheet} line {starts[6]} (record 7): dicom_id {ids[2]} needs exactly one label' in msg
  n = len(starts)
  assert (
    f'{sheet} line {starts[-1]} (record {n}): duplicate dicom_id {ids[3]} (first at line '
    f'{starts[7]}, record 8)'
  ) in msg
  assert (
    f'fixations.csv line(s) {stray_line}, {stray_line + 1}: 2 fixation(s) for DICOM_ID '
    "'deadbeef-00000000-00000000-00000000-00000000'"
  ) in msg
  assert 'skip_invalid_rows' in msg


def test_skip_invalid_rows_builds_the_rest_and_lists_skipped_ids(synthetic_tree, tmp_path):
  manual, specs = synthetic_tree
  ids, _, _, _ = _corrupt_copy(manual, tmp_path / 'bad')
  builder = _build(tmp_path / 'bad', tmp_path / 'tfds', name='t32_skip', skip=True)
  meta = builder.info.metadata
  assert meta['skipped_ids'] == sorted(ids)
  total = sum(s.num_examples for s in builder.info.splits.values())
  assert total == len(specs) - len(ids)
  assert len(meta['skipped_problems']) == 6  # the duplicate fixation is dropped, not a problem
  assert meta['dropped_duplicate_fixations'] == 1
  assert not any(str(tmp_path) in p for p in meta['skipped_problems'])


def test_a_csv_that_is_not_utf8_names_the_file_and_line(synthetic_tree, tmp_path):
  manual, _ = synthetic_tree
  shutil.copytree(manual, tmp_path / 'bad')
  path = tmp_path / 'bad/egd-cxr/1.0.0/fixations.csv'
  lines = path.read_bytes().split(b'\n')
  lines[4] = lines[4].replace(b',', b',\xe9', 1)  # a Latin-1 byte
  path.write_bytes(b'\n'.join(lines))
  with pytest.raises(egd_reader.EgdValidationError, match=r'fixations.csv line 5: not UTF-8'):
    egd_reader.read_tree(tmp_path / 'bad')


def test_missing_required_header_column_is_fatal_even_when_skipping(synthetic_tree, tmp_path):
  manual, _ = synthetic_tree
  shutil.copytree(manual, tmp_path / 'bad')
  sheet = tmp_path / 'bad/egd-cxr/1.0.0/master_sheet.csv'
  text = sheet.read_text()
  sheet.write_text(text.replace(',CHF,', ',chf,', 1))
  with pytest.raises(
    egd_reader.EgdValidationError,
    match=r'master_sheet.csv line 1: header '
    r"lacks required column\(s\) \['CHF'\]",
  ):
    egd_reader.read_tree(tmp_path / 'bad', skip_invalid_rows=True)


def test_missing_egd_folder_names_the_file(tmp_path):
  (tmp_path / 'mimic-cxr-jpg/2.0.0').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='master_sheet.csv not found'):
    egd_reader.read_tree(tmp_path)


def test_citation_names_every_source(tmp_path):
  """EGD, MIMIC-CXR, MIMIC-CXR-JPG (papers and PhysioNet records) and PhysioNet itself."""
  citation = MimicCxrEgd(data_dir=str(tmp_path)).info.citation
  entries = [e.split(',')[0] for e in citation.split('@')[1:]]
  assert len(entries) == 7 and len(set(entries)) == 7
  for doi in (
    '10.1038/s41597-021-00863-5',  # EGD paper
    '10.13026/qfdz-zr67',  # EGD on PhysioNet
    '10.1038/s41597-019-0322-0',  # MIMIC-CXR paper
    '10.13026/C2JT1Q',  # MIMIC-CXR on PhysioNet
    '10.13026/8360-t248',  # MIMIC-CXR-JPG on PhysioNet
    '10.1161/01.CIR.101.23.e215',  # PhysioNet
  ):
    assert f'doi={{{doi}}}' in citation
