"""Reading REFLACX's CSVs: CRLF files, header-only ellipse files, and errors that name the
file, line and column."""

import numpy as np
import pytest

from data_builders.reflacx import reflacx_format as fmt


def _write(path, header, rows):
  path.write_bytes(
    ('\r\n'.join([','.join(header), *[','.join(r) for r in rows]]) + '\r\n').encode()
  )
  return path


def test_crlf_fixations_with_an_empty_field(tmp_path):
  row = ['1.25', '1.5', '100', '-20', '', '110', '112', '1.0', '0.5']
  row += ['0', '0', '2000', '2500', '660', '0', '3180', '2160']
  got = fmt.read_fixations(_write(tmp_path / 'fixations.csv', fmt.FIXATION_COLUMNS, [row]))
  assert got['timestamp_end_fixation'].tolist() == [1.5]
  assert got['y_position'].tolist() == [-20.0]  # off the image, kept as written
  assert np.isnan(got['pupil_area_normalized'][0])


def test_header_only_ellipses_and_booleans(tmp_path):
  header = fmt.ELLIPSE_COORDINATES + fmt.phase_labels(2)
  empty = fmt.read_ellipses(_write(tmp_path / 'a.csv', header, []), 2)
  assert all(v.shape == (0,) for v in empty.values()) and set(empty) == set(header)
  labels = ['False'] * len(fmt.PHASE_2_3_LABELS)
  labels[fmt.PHASE_2_3_LABELS.index('Consolidation')] = 'True'
  one = fmt.read_ellipses(
    _write(tmp_path / 'b.csv', header, [['10', '20', '300', '400', '4', *labels]]), 2
  )
  assert one['Consolidation'].tolist() == [1.0] and one['Atelectasis'].tolist() == [0.0]
  assert one['certainty'].tolist() == [4.0]


def test_errors_name_the_file_line_and_column(tmp_path):
  bad = _write(
    tmp_path / 'c.csv', fmt.CHEST_BOX_COLUMNS, [['1', '2', '3', '4'], ['1', 'x', '3', '4']]
  )
  with pytest.raises(fmt.FormatError, match=r"c.csv, line 3, column 'ymin': 'x' is not a number"):
    fmt.read_csv(bad, fmt.CHEST_BOX_COLUMNS)
  short = _write(tmp_path / 'd.csv', fmt.CHEST_BOX_COLUMNS, [['1', '2', '3']])
  with pytest.raises(fmt.FormatError, match='d.csv, line 2: 3 fields, expected 4'):
    fmt.read_csv(short, fmt.CHEST_BOX_COLUMNS)
  header = _write(tmp_path / 'e.csv', ('xmin', 'ymin', 'xmax', 'height'), [])
  with pytest.raises(fmt.FormatError, match=r"missing \['ymax'\], unexpected \['height'\]"):
    fmt.read_csv(header, fmt.CHEST_BOX_COLUMNS)
  with pytest.raises(ValueError, match='phases 1, 2 and 3, not 4'):
    fmt.phase_labels(4)
  assert fmt.PHASE_1_LABELS == tuple(sorted(fmt.PHASE_1_LABELS))
  assert fmt.PHASE_2_3_LABELS == tuple(sorted(fmt.PHASE_2_3_LABELS))


def _metadata_row(rid, dicom, discarded='False', **labels):
  values = {
    n: ('False' if n in fmt.BOOLEAN_LABELS else '' if n == 'Other' else '0')
    for n in fmt.PHASE_2_3_LABELS
  }
  values.update(labels)
  image = f'physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000032/s50414267/{dicom}.dcm'
  return [rid, 'train', discarded, image, dicom, '10000032', '2544', '3056'] + [
    values[n] for n in fmt.PHASE_2_3_LABELS
  ]


def test_metadata_rows_and_readers_of_one_image(tmp_path):
  """Phase 2: two readings of image d1 (one discarded), one of d2; certainties are ints,
  support devices a bool, other text; the study id comes from the image path."""
  rows = [
    _metadata_row(
      'P201R000001', 'd1', Consolidation='4', **{'Support devices': 'True', 'Other': 'a|b'}
    ),
    _metadata_row('P201R000002', 'd1', 'True'),
    _metadata_row('P202R000003', 'd2', Atelectasis='2'),
  ]
  path = _write(tmp_path / 'metadata_phase_2.csv', fmt.METADATA_FIXED + fmt.PHASE_2_3_LABELS, rows)
  readings = fmt.read_metadata(path, 2)
  first = readings[0]
  assert first['study_id'] == 50414267 and first['subject_id'] == 10000032
  assert first['image_size_x'] == 2544 and first['labels']['Consolidation'] == 4
  assert first['labels']['Support devices'] is True and first['labels']['Other'] == 'a|b'
  assert readings[1]['eye_tracking_data_discarded'] is True
  groups = fmt.readings_by_image(readings)
  assert [r['id'] for r in groups['d1']] == ['P201R000001'] and list(groups) == ['d1', 'd2']
  bad = _write(
    tmp_path / 'm.csv',
    fmt.METADATA_FIXED + fmt.PHASE_2_3_LABELS,
    [_metadata_row('P2', 'd3', Atelectasis='7')],
  )
  with pytest.raises(
    fmt.FormatError, match=r"m.csv, line 2, column 'Atelectasis': certainty 7 not in 0-5"
  ):
    fmt.read_metadata(bad, 2)
  with pytest.raises(fmt.FormatError, match='header differs from REFLACX 1.0.0 phase 1'):
    fmt.read_metadata(path, 1)
