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
