"""Loads MIMIC-CXR images (JPG or DICOM) and stretches them to S x S grey uint8."""

from __future__ import annotations

import io

from etils import epath
import numpy as np
from PIL import Image
import pydicom


def _resize(img: Image.Image, size: int) -> np.ndarray:
  # Stretch (no aspect keep), as the official experiments' Resize((224, 224)); PIL's
  # bilinear filter widens its support when shrinking, so this is anti-aliased.
  return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0), np.uint8)


def load_jpg(path: epath.Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Returns (uint8 ``(size, size)`` image, original ``(H, W)``) of an 8-bit grey JPEG.

  JPEG's DCT-domain downscaling (``draft``) decodes at the smallest power-of-two reduction
  that stays at least ``size`` pixels on each side: several times faster than a full decode
  of a 3000 x 2500 image.
  """
  with path.open('rb') as f:
    img = Image.open(io.BytesIO(f.read()))
  width, height = img.size
  img.draft('L', (size, size))
  img = img.convert('L')
  return _resize(img, size), (height, width)


def dicom_to_uint8(ds: pydicom.Dataset) -> np.ndarray:
  """Full-resolution uint8 ``(Rows, Columns)`` display image of a pydicom dataset.

  Applies the VOI LUT or window (Window Center/Width) when present, else min-max; inverts
  MONOCHROME1 so that bone is bright.
  """
  from pydicom.pixels import apply_voi_lut

  arr = ds.pixel_array.astype(np.float64)
  if 'VOILUTSequence' in ds or 'WindowCenter' in ds:
    arr = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
  lo, hi = arr.min(), arr.max()
  arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
  if getattr(ds, 'PhotometricInterpretation', 'MONOCHROME2') == 'MONOCHROME1':
    arr = 1.0 - arr
  return np.round(arr * 255.0).astype(np.uint8)


def load_dicom(path: epath.Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Returns (uint8 ``(size, size)`` image, original ``(H, W)``) of a MIMIC-CXR DICOM."""
  import pydicom

  with path.open('rb') as f:
    ds = pydicom.dcmread(f)
  full = dicom_to_uint8(ds)
  return _resize(Image.fromarray(full, mode='L'), size), full.shape


def load_image(path: epath.Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Dispatches on the suffix: ``.jpg`` (MIMIC-CXR-JPG) or ``.dcm`` (MIMIC-CXR)."""
  try:
    if path.suffix.lower() == '.dcm':
      return load_dicom(path, size)
    return load_jpg(path, size)
  except Exception as e:
    raise ValueError(f'cannot decode image {path}: {type(e).__name__}: {e}') from e


def load_any(path: epath.Path, size: int) -> tuple[np.ndarray, tuple[int, int], list[str]]:
  """``(uint8 (size, size) image, original (H, W), notes)`` of a user's image file, prepared as
  the dataset's images are: a MIMIC-CXR-JPG JPEG or a MIMIC-CXR DICOM exactly as the builder
  reads them; other kinds converted to 8-bit grey first, each conversion said in ``notes``.

  Raises ``ValueError`` naming the file for an unreadable image or a DICOM that is not a grey
  radiograph (a PhotometricInterpretation other than MONOCHROME1/2).
  """
  path = epath.Path(path)
  try:
    if path.suffix.lower() == '.dcm':
      import pydicom

      ds = pydicom.dcmread(io.BytesIO(path.read_bytes()))
      kind = getattr(ds, 'PhotometricInterpretation', 'MONOCHROME2')
      if kind not in ('MONOCHROME1', 'MONOCHROME2'):
        raise ValueError(f'a DICOM with PhotometricInterpretation {kind} is not a grey radiograph')
      full = dicom_to_uint8(ds)
      return _resize(Image.fromarray(full, mode='L'), size), full.shape, []
    img = Image.open(io.BytesIO(path.read_bytes()))
    width, height = img.size
    notes = []
    if img.format == 'JPEG' and img.mode == 'L':
      return (*load_jpg(path, size), notes)
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
      notes.append(f'{img.mode} image scaled to 8 bits by its minimum and maximum')
      arr = np.asarray(img, np.float64)
      lo, hi = arr.min(), arr.max()
      arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
      img = Image.fromarray(np.round(arr * 255).astype(np.uint8), mode='L')
    elif img.mode != 'L':
      notes.append(f'{img.mode} image converted to grey (ITU-R 601-2 luma)')
      img = img.convert('L')
    return _resize(img, size), (height, width), notes
  except Exception as e:
    raise ValueError(f'{path}: cannot use it as a chest X-ray: {type(e).__name__}: {e}') from None


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 ``(S, S)`` or ``(S, S, 1)`` image (TFDS stores them as is)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image).reshape(image.shape[:2]), mode='L').save(buf, format='PNG')
  return buf.getvalue()
