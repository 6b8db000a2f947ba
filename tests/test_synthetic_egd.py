"""The synthetic tree is in the real PhysioNet formats (checked against the spec, not the code)."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from data_builders.mimic_cxr_egd import egd_format as fmt
from data_builders.synthetic_egd import anatomy
from data_builders.synthetic_egd import generate

MASTER_HEADER = (
  'dicom_id,path,study_id,patient_id,stay_id,gender,anchor_age,image_top_pad,image_bottom_pad,'
  'image_left_pad,image_right_pad,dx1,dx1_icd,dx2,dx2_icd,dx3,dx3_icd,dx4,dx4_icd,dx5,dx5_icd,'
  'dx6,dx6_icd,dx7,dx7_icd,dx8,dx8_icd,dx9,dx9_icd,normal_reports,Normal,CHF,pneumonia,'
  'consolidation,enlarged_cardiac_silhouette,linear__patchy_atelectasis,'
  'lobar__segmental_collapse,not_otherwise_specified_opacity___pleural__parenchymal_opacity__,'
  'pleural_effusion_or_thickening,pulmonary_edema__hazy_opacity,normal_anatomically,'
  'elevated_hemidiaphragm,hyperaeration,vascular_redistribution,atelectasis__chx,'
  'cardiomegaly__chx,consolidation__chx,edema__chx,enlarged_cardiomediastinum__chx,'
  'fracture__chx,lung_lesion__chx,lung_opacity__chx,no_finding__chx,pleural_effusion__chx,'
  'pleural_other__chx,pneumonia__chx,pneumothorax__chx,support_devices__chx,'
  'cxr_exam_indication'
)
GAZE_HEADER = (
  'SESSION_ID,MEDIA_ID,DICOM_ID,CNT,Time (in secs),TIMETICK(f=10000000),FPOGX,FPOGY,FPOGS,'
  'FPOGD,FPOGID,FPOGV,BPOGX,BPOGY,BPOGV,LPCX,LPCY,LPD,LPS,LPV,RPCX,RPCY,RPD,RPS,RPV,BKID,BKDUR,'
  'BKPMIN,LPMM,LPMMV,RPMM,RPMMV,SACCADE_MAG,SACCADE_DIR,VID_FRAME,X_ORIGINAL,Y_ORIGINAL'
)


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_headers_are_verbatim(synthetic_tree):
  manual, _ = synthetic_tree
  egd = manual / 'egd-cxr/1.0.0'
  assert (egd / 'master_sheet.csv').read_text().split('\n', 1)[0] == MASTER_HEADER
  assert (egd / 'fixations.csv').read_text().split('\n', 1)[0] == GAZE_HEADER
  assert (egd / 'eye_gaze.csv').read_text().split('\n', 1)[0] == GAZE_HEADER
  assert len(MASTER_HEADER.split(',')) == 59 and len(GAZE_HEADER.split(',')) == 37


def test_master_sheet_rows(synthetic_tree):
  manual, specs = synthetic_tree
  rows = _rows(manual / 'egd-cxr/1.0.0/master_sheet.csv')
  assert len(rows) == len(specs)
  assert any(
    '\n' in r['cxr_exam_indication']
    and ',' in r['cxr_exam_indication']
    and '"' in r['cxr_exam_indication']
    for r in rows
  )
  orientations = set()
  for r in rows:
    assert re.fullmatch(r'([0-9a-f]{8}-){4}[0-9a-f]{8}', r['dicom_id'])
    pid, sid = r['patient_id'], r['study_id']
    assert re.fullmatch(r'1\d{7}', pid) and re.fullmatch(r'5\d{7}', sid)
    assert r['path'] == f'files/p{pid[:2]}/p{pid}/s{sid}/{r["dicom_id"]}.dcm'
    assert sum(int(r[c]) for c in ('Normal', 'CHF', 'pneumonia')) == 1
    jpg = manual / 'mimic-cxr-jpg/2.0.0' / r['path'].replace('.dcm', '.jpg')
    w, h = Image.open(jpg).size
    assert h % 2 == 0 and w % 2 == 0
    orientations.add(h > w)
    # Official letter-box rule (egd-format.md A.4), computed here by hand.
    ratio = 1024 / max(h, w)
    nh, nw = int(h * ratio), int(w * ratio)
    pads = (
      (1024 - nh) // 2,
      1024 - nh - (1024 - nh) // 2,
      (1920 - nw) // 2,
      1920 - nw - (1920 - nw) // 2,
    )
    assert tuple(int(r[f'image_{s}_pad']) for s in ('top', 'bottom', 'left', 'right')) == pads
  assert orientations == {True, False}  # portrait and landscape
  pids = [r['patient_id'] for r in rows]
  assert len(set(pids)) < len(pids)  # a patient with two images


def test_fixations_follow_the_official_mapping(synthetic_tree):
  manual, _ = synthetic_tree
  master = {r['dicom_id']: r for r in _rows(manual / 'egd-cxr/1.0.0/master_sheet.csv')}
  fix = _rows(manual / 'egd-cxr/1.0.0/fixations.csv')
  sizes = {}
  calibration, off_image, sessions = 0, 0, set()
  for r in fix:
    sessions.add(r['SESSION_ID'])
    assert float(r['Time (in secs)']) == round(float(r['FPOGS']) + float(r['FPOGD']), 5)
    if r['DICOM_ID'] not in master:
      assert len(r['DICOM_ID']) == 39
      assert any(d.startswith(r['DICOM_ID']) for d in master)
      calibration += 1
      continue
    m = master[r['DICOM_ID']]
    if r['DICOM_ID'] not in sizes:
      jpg = manual / 'mimic-cxr-jpg/2.0.0' / m['path'].replace('.dcm', '.jpg')
      sizes[r['DICOM_ID']] = Image.open(jpg).size
    w, h = sizes[r['DICOM_ID']]
    top, bottom, left, right = (
      int(m[f'image_{s}_pad']) for s in ('top', 'bottom', 'left', 'right')
    )
    ex, ey = float(r['FPOGX']) * 1920, float(r['FPOGY']) * 1080
    inside = left < ex < 1920 - right and top < ey < 1080 - bottom
    xr, yr = (ex - left, ey - top) if inside else (-1, -1)
    assert int(r['X_ORIGINAL']) == int(w / (1920 - left - right) * xr)
    assert int(r['Y_ORIGINAL']) == int(h / (1080 - top - bottom) * yr)
    off_image += not inside
  assert calibration > 0 and off_image > 0 and len(sessions) >= 2
  # Rows of one image are contiguous and FPOGID increases within a session.
  seen, prev = set(), None
  for r in fix:
    if r['DICOM_ID'] != prev:
      assert (r['SESSION_ID'], r['DICOM_ID']) not in seen
      seen.add((r['SESSION_ID'], r['DICOM_ID']))
      prev = r['DICOM_ID']


def test_eye_gaze_is_60hz_and_ends_each_fixation_on_its_fixation_row(synthetic_tree):
  manual, _ = synthetic_tree
  raw = _rows(manual / 'egd-cxr/1.0.0/eye_gaze.csv')
  fix = _rows(manual / 'egd-cxr/1.0.0/fixations.csv')
  last = {}
  for r in raw:
    last[(r['SESSION_ID'], r['FPOGID'])] = r
  for r in fix:
    g = last[(r['SESSION_ID'], r['FPOGID'])]
    for c in ('DICOM_ID', 'FPOGX', 'FPOGY', 'FPOGS', 'FPOGD', 'X_ORIGINAL', 'Y_ORIGINAL'):
      assert g[c] == r[c], c
  steps = np.diff(
    [float(r['Time (in secs)']) for r in raw[:200] if r['FPOGID'] == raw[0]['FPOGID']]
  )
  assert steps.size > 2 and np.allclose(steps, 1 / 60, atol=0.02)


def test_side_files_and_cli(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'data_builders.synthetic_egd',
      '--output_dir',
      str(tmp_path),
      '--num_images',
      '6',
      '--seed',
      '1',
      '--scale',
      '0.1',
      '--noraw_gaze',
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'wrote 6 images' in out.stdout
  egd = tmp_path / 'egd-cxr/1.0.0'
  assert not (egd / 'eye_gaze.csv').exists()
  boxes = _rows(egd / 'bounding_boxes.csv')
  assert {b['bbox_name'] for b in boxes} >= {'left lung', 'right lung', 'cardiac silhouette'}
  ids = [r['dicom_id'] for r in _rows(egd / 'master_sheet.csv')]
  t = json.loads((egd / 'audio_segmentation_transcripts' / ids[0] / 'transcript.json').read_text())
  assert set(t) == {'full_text', 'time_stamped_text'}
  assert len(list((tmp_path / 'mimic-cxr-jpg/2.0.0/files').glob('p*/p*/s*/*.jpg'))) == 6
  bad = subprocess.run(
    [
      sys.executable,
      '-m',
      'data_builders.synthetic_egd',
      '--output_dir',
      str(tmp_path / 'x'),
      '--shortcut',
      'train=2',
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert bad.returncode != 0 and 'probability must be in [0, 1]' in bad.stderr


def test_shortcut_marker_follows_the_class_in_train_only(synthetic_tree):
  _, specs = synthetic_tree
  train = [s for s in specs if s.split == 'train']
  assert all(s.marker_corner == s.label for s in train)  # fixture: train=1.0
  assert all(s.marker_corner is None for s in specs if s.split == 'validation')
  assert fmt.CLASS_NAMES == ('Normal', 'CHF', 'pneumonia')


def test_decoy_twin_moves_only_the_markers(tmp_path):
  """The decoy tree: the same rows, fixations and pixels as the tree written with the same
  arguments, except that every marker sits in a wrong class's corner (and the pixels around
  the two markers differ)."""
  kwargs = dict(
    num_images=9,
    seed=4,
    scale=0.2,
    shortcut={'train': 1.0, 'validation': 0.5, 'test': 0.0},
    raw_gaze=False,
    num_workers=0,
  )
  specs = generate.write_tree(tmp_path / 'plain', **kwargs)
  decoy = generate.write_tree(tmp_path / 'decoy', decoy=True, **kwargs)
  assert [s.dicom_id for s in specs] == [s.dicom_id for s in decoy]
  assert all(d.marker_corner != d.label and d.marker_corner in (0, 1, 2) for d in decoy)
  for name in ('master_sheet.csv', 'fixations.csv'):
    assert (tmp_path / 'plain' / fmt.EGD_DIR / name).read_bytes() == (
      tmp_path / 'decoy' / fmt.EGD_DIR / name
    ).read_bytes()
  for s, d in zip(specs, decoy):
    rel = (
      f'{fmt.JPG_DIR}/files/p{str(s.patient_id)[:2]}/p{s.patient_id}/s{s.study_id}/{s.dicom_id}.jpg'
    )
    a = np.asarray(Image.open(tmp_path / 'plain' / rel), np.float64)
    b = np.asarray(Image.open(tmp_path / 'decoy' / rel), np.float64)
    corners = {s.marker_corner, d.marker_corner}
    outside = np.ones(a.shape, bool)
    for c in corners:
      u, v = anatomy.CORNERS[c]
      rows = np.abs((np.arange(a.shape[0]) + 0.5) / a.shape[0] - v) < 0.12
      cols = np.abs((np.arange(a.shape[1]) + 0.5) / a.shape[1] - u) < 0.14
      outside &= ~(rows[:, None] & cols[None, :])
    # JPEG blocks spread a change by a few pixels; away from both markers nothing moved.
    assert np.max(np.abs(a - b)[outside]) <= 2, s.dicom_id
    if s.marker_corner != d.marker_corner:
      assert np.max(np.abs(a - b)) > 100
