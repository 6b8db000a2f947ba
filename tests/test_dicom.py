"""DICOM input (MIMIC-CXR 2.0.0): VOI windowing and MONOCHROME1 inversion, and a DICOM tree."""

import csv

from conftest import FIXTURE_SIGMA
import numpy as np
from PIL import Image
import pydicom
from pydicom.dataset import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.uid import generate_uid
import pytest
import tensorflow_datasets as tfds

from data_builders.mimic_cxr_egd import EgdConfig
from data_builders.mimic_cxr_egd import MimicCxrEgd
from data_builders.mimic_cxr_egd import images


def write_dicom(path, pixels, photometric='MONOCHROME2', window=None):
  meta = FileMetaDataset()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.1.1'
  meta.MediaStorageSOPInstanceUID = generate_uid()
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
  if window:
    ds.WindowCenter, ds.WindowWidth = window
  ds.PixelData = pixels.astype('<u2').tobytes()
  path.parent.mkdir(parents=True, exist_ok=True)
  ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize('photometric', ['MONOCHROME2', 'MONOCHROME1'])
def test_window_and_photometric_interpretation(tmp_path, photometric):
  pixels = np.array([[0, 1000, 1536], [2048, 2560, 4095]], np.uint16)
  write_dicom(tmp_path / 'a.dcm', pixels, photometric, window=(2048, 1025))
  out = images.dicom_to_uint8(pydicom.dcmread(tmp_path / 'a.dcm'))
  # DICOM PS3.3 C.11.2.1.2 linear window: c=2048, w=1025 -> [c - .5 - (w-1)/2, c - .5 + (w-1)/2]
  lo, hi = 2048 - 0.5 - 512, 2048 - 0.5 + 512
  expected = np.clip((pixels - lo) / (hi - lo), 0, 1)
  if photometric == 'MONOCHROME1':
    expected = 1 - expected
  np.testing.assert_allclose(out, np.round(expected * 255), atol=1)


def test_dicom_tree_builds_like_the_jpg_tree(synthetic_tree, tmp_path):
  manual, specs = synthetic_tree
  root = tmp_path / 'manual'
  root.mkdir()
  (root / 'egd-cxr').symlink_to(manual / 'egd-cxr', target_is_directory=True)
  with open(manual / 'egd-cxr/1.0.0/master_sheet.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  for i, r in enumerate(rows):
    grey = np.asarray(
      Image.open(manual / 'mimic-cxr-jpg/2.0.0' / r['path'].replace('.dcm', '.jpg'))
    )
    pixels = grey.astype(np.uint16) * 16  # 12-bit
    if i % 2:  # half of them stored inverted
      write_dicom(root / 'mimic-cxr/2.0.0' / r['path'], 4095 - pixels, 'MONOCHROME1')
    else:
      write_dicom(root / 'mimic-cxr/2.0.0' / r['path'], pixels)
  cfg = EgdConfig(name='d32', image_size=32, gaze_sigma=FIXTURE_SIGMA)
  dicom = MimicCxrEgd(
    config=cfg, data_dir=tmp_path / 'd', file_format='array_record', num_workers=0
  )
  dicom.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  jpg = MimicCxrEgd(config=cfg, data_dir=tmp_path / 'j', file_format='array_record', num_workers=0)
  jpg.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert dicom.info.metadata['image_format'] == 'dicom'
  a = list(dicom.as_data_source(split='test'))
  b = list(jpg.as_data_source(split='test'))
  assert [x['dicom_id'] for x in a] == [x['dicom_id'] for x in b]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['original_size'], y['original_size'])
    np.testing.assert_allclose(x['gaze'], y['gaze'], atol=1e-7)
    # Same pixels up to the min-max stretch of the DICOM path and JPEG draft decoding.
    assert np.corrcoef(x['image'].ravel(), y['image'].ravel())[0, 1] > 0.98


def test_user_images_are_prepared_as_the_dataset_images(tmp_path):
  """``load_any`` (``python -m mimic_jax.explain``): a grey JPEG and a DICOM exactly as the
  builder reads them; a 16-bit PNG min-max scaled and an RGB PNG turned to ITU-R 601-2 luma,
  each checked by hand and said in the notes; unusable files named in the error."""
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (48, 40), dtype=np.uint8)
  Image.fromarray(grey).save(tmp_path / 'grey.jpg', quality=95)
  jpg, shape, notes = images.load_any(tmp_path / 'grey.jpg', 32)
  np.testing.assert_array_equal(jpg, images.load_jpg(tmp_path / 'grey.jpg', 32)[0])
  assert shape == (48, 40) and notes == []

  pixels = rng.integers(100, 4000, (30, 30)).astype(np.uint16)
  write_dicom(tmp_path / 'x.dcm', pixels)
  dcm, shape, notes = images.load_any(tmp_path / 'x.dcm', 16)
  np.testing.assert_array_equal(dcm, images.load_dicom(tmp_path / 'x.dcm', 16)[0])
  assert shape == (30, 30) and notes == []

  deep = rng.integers(1000, 60000, (24, 24)).astype(np.uint16)
  Image.fromarray(deep).save(tmp_path / 'deep.png')
  png, shape, notes = images.load_any(tmp_path / 'deep.png', 24)  # same size: no resampling
  lo, hi = float(deep.min()), float(deep.max())
  np.testing.assert_array_equal(png, np.round((deep - lo) / (hi - lo) * 255).astype(np.uint8))
  assert 'scaled to 8 bits' in notes[0]

  rgb = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'colour.png')
  luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  got, _, notes = images.load_any(tmp_path / 'colour.png', 20)
  assert np.abs(got.astype(np.float64) - luma).max() <= 0.51 and 'converted to grey' in notes[0]

  write_dicom(tmp_path / 'rgb.dcm', pixels, photometric='PALETTE COLOR')
  with pytest.raises(ValueError, match=r'rgb\.dcm.*not a grey radiograph'):
    images.load_any(tmp_path / 'rgb.dcm', 16)
  (tmp_path / 'notes.txt').write_text('not an image')
  with pytest.raises(ValueError, match=r'notes\.txt: cannot use it as a chest X-ray'):
    images.load_any(tmp_path / 'notes.txt', 16)
