"""TFDS builder ``reflacx``: MIMIC-CXR images with the REFLACX readings of five radiologists.

Reads the PhysioNet download (``MANUAL_DOWNLOAD_INSTRUCTIONS``) and writes ArrayRecord files
readable with ``tfds.data_source('reflacx/<config>', data_dir=...)``; neither building nor
reading needs TensorFlow. One example per image, with all its readings (phases 1-2: five).

Features (a public contract; S is the config's ``image_size``, F = 14 findings of
``labels.FINDINGS``, R the image's readings):

=====================  ======================  ==============================================
key                    dtype, shape            meaning
=====================  ======================  ==============================================
``dicom_id``           Text                    MIMIC-CXR DICOM id
``study_id``           int64 scalar            MIMIC study id (from the image path)
``patient_id``         int64 scalar            MIMIC subject id (the split is by patient)
``original_size``      int32 ``[2]``           ``[H, W]`` of the original image, pixels
``image``              uint8 ``[S, S, 1]``     grey image stretched to S x S
``label``              ClassLabel              EGD class by ``labels.py``'s stated mapping:
                                               ``Normal``/``CHF``/``pneumonia``/``other``
``gaze``               float32 ``[S, S]``      mean of the readings' heatmaps, summing to 1
                                               (uniform when no reading has eye tracking)
``fixation_map``       uint8 ``[S, S]``        1 where any reading's kept fixation lies
``num_gaze_readings``  int32 scalar            readings with eye tracking
``readings``           Sequence (R)            per reading, in metadata order:
  ``id``               Text                    REFLACX reading id (``P102R009922``)
  ``phase``            int32                   1, 2 or 3
  ``discarded``        bool                    eye tracking discarded (maps all zero)
  ``gaze``             float32 ``[S, S]``      official heatmap (1-degree Gaussians on the
                                               shown rectangle, duration-weighted),
                                               area-resized, summing to 1
  ``fixation_map``     uint8 ``[S, S]``        1 at each fixation kept by the official filter
  ``certainty``        int8 ``[F]``            0-5 per finding, crosswalked from phase 1;
                                               -1: not asked in that phase
  ``labels_phase_1``   int8 ``[18]``           phase 1 columns as written (Booleans and
                                               ``Other`` as 0/1); -1 in phases 2-3
  ``labels_phase_2_3`` int8 ``[16]``           the same for phases 2-3; -1 in phase 1
  ``other``            Text                    the ``Other`` text (items joined by ``|``)
  ``class``            int32                   the reading's EGD class (``labels.py``)
  ``ellipses``         uint8 ``[F, S, S]``     per finding, the union of its ellipses of
                                               certainty > 2 (pixel centres inside)
  ``chest_box``        float32 ``[4]``         ``xmin, ymin, xmax, ymax``, image fractions
=====================  ======================  ==============================================

Splits ``train`` / ``validation`` / ``test`` are MIMIC-CXR's (patient-disjoint) and hold the
images of the classes Normal, CHF and pneumonia with eye tracking; ``other`` holds the rest
(any MIMIC-CXR split). The dataset metadata counts discarded readings, fixations the official
filter drops, the images read by every reader, and any image skipped with
``skip_invalid_rows``.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import functools
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data_builders import threads
from data_builders.mimic_cxr_egd import images
from data_builders.reflacx import heatmap as heatmap_lib
from data_builders.reflacx import labels as labels_lib
from data_builders.reflacx import reflacx_format as fmt
from data_builders.reflacx import reflacx_reader

_DESCRIPTION = __doc__
_CITATION = (pathlib.Path(__file__).parent / 'CITATIONS.bib').read_text()
SPLITS = ('train', 'validation', 'test', 'other')


@dataclasses.dataclass
class ReflacxConfig(tfds.core.BuilderConfig):
  """Builder config.

  Attributes:
    image_size: S, the side of the image and every map, pixels.
    skip_invalid_rows: drop images with bad input (listed in the metadata) instead of failing.
  """

  image_size: int = 224
  skip_invalid_rows: bool = False


def ellipse_grid_masks(
  ellipses: dict, phase: int, width: int, height: int, size: int
) -> np.ndarray:
  """uint8 ``(F, size, size)``: per finding, the union of the reading's ellipses of certainty
  > 2 that mark it (phase 1 labels through the crosswalk), at the pixel centres of the grid."""
  out = np.zeros((len(labels_lib.FINDINGS), size, size), np.uint8)
  centres = (np.arange(size) + 0.5) / size
  cols, rows = centres[None, :] * width, centres[:, None] * height
  names = labels_lib.finding_names(phase)
  for i in np.flatnonzero(np.asarray(ellipses['certainty']) > 2):
    xmin, ymin, xmax, ymax = (float(ellipses[k][i]) for k in fmt.CHEST_BOX_COLUMNS)
    a, b = (xmax - xmin) / 2, (ymax - ymin) / 2
    if a <= 0 or b <= 0:
      continue
    inside = ((cols - (xmin + xmax) / 2) / a) ** 2 + ((rows - (ymin + ymax) / 2) / b) ** 2 <= 1
    for column, finding in names.items():
      if ellipses[column][i]:
        out[labels_lib.FINDINGS.index(finding)] |= inside
  return out


def _reading_features(reading: reflacx_reader.Reading, width: int, height: int, size: int):
  """``(features, fixations dropped by the official filter)`` of one reading."""
  certainty = labels_lib.certainties(reading.labels, reading.phase)
  zeros = np.zeros((size, size), np.float32)
  gaze, fixation_map, dropped = zeros, zeros.astype(np.uint8), 0
  if reading.fixations is not None:
    gaze = heatmap_lib.resized_heatmap(reading.fixations, width, height, size).astype(np.float32)
    fixation_map = heatmap_lib.resized_fixation_map(reading.fixations, width, height, size)
    dropped = int((~heatmap_lib.kept_fixations(reading.fixations)).sum())
  box = np.asarray(reading.chest_box, np.float32) / np.asarray([width, height] * 2, np.float32)
  return {
    'id': reading.id,
    'phase': np.int32(reading.phase),
    'discarded': bool(reading.discarded),
    'gaze': gaze,
    'fixation_map': fixation_map,
    'certainty': certainty,
    'labels_phase_1': labels_lib.phase_vector(reading.labels, reading.phase, fmt.PHASE_1_LABELS),
    'labels_phase_2_3': labels_lib.phase_vector(
      reading.labels, reading.phase, fmt.PHASE_2_3_LABELS
    ),
    'other': str(reading.labels.get('Other', '')),
    'class': np.int32(labels_lib.egd_class(certainty)),
    'ellipses': ellipse_grid_masks(reading.ellipses, reading.phase, width, height, size),
    'chest_box': box,
  }, dropped


def image_split(rec: reflacx_reader.ImageRecord) -> tuple[str, int]:
  """``(TFDS split, EGD class)`` of an image: its MIMIC-CXR split when its class is one of
  EGD's three and a reading has eye tracking, else ``other``."""
  classes = [labels_lib.egd_class(labels_lib.certainties(r.labels, r.phase)) for r in rec.readings]
  label = labels_lib.image_class(classes)
  gazed = any(not r.discarded for r in rec.readings)
  return (rec.split if label != labels_lib.OTHER and gazed else 'other'), label


def _process(rec: reflacx_reader.ImageRecord, size: int) -> tuple[dict, int]:
  """Returns (TFDS example, fixations dropped by the official filter) for one image."""
  image, (height, width) = images.load_image(rec.image_path, size)
  readings, dropped = [], 0
  for r in rec.readings:
    features, n = _reading_features(r, width, height, size)
    readings.append(features)
    dropped += n
  gazed = [f for f, r in zip(readings, rec.readings) if not r.discarded]
  gaze = (
    np.mean([f['gaze'] for f in gazed], axis=0)
    if gazed
    else np.full((size, size), 1.0 / size**2, np.float32)
  )
  fixation_map = np.zeros((size, size), np.uint8)
  for f in gazed:
    fixation_map |= f['fixation_map']
  example = {
    'dicom_id': rec.dicom_id,
    'study_id': rec.study_id,
    'patient_id': rec.patient_id,
    'original_size': np.asarray([height, width], np.int32),
    'image': images.encode_png(image),
    'label': image_split(rec)[1],
    'gaze': (gaze / gaze.sum()).astype(np.float32),
    'fixation_map': fixation_map,
    'num_gaze_readings': np.int32(len(gazed)),
    'readings': {k: [f[k] for f in readings] for k in readings[0]},
  }
  return example, dropped


class Reflacx(tfds.core.GeneratorBasedBuilder):
  """MIMIC-CXR-JPG (or DICOM) images with the REFLACX readings: gaze, labels, ellipses."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
    ReflacxConfig(name='224', description='224 x 224.', image_size=224),
    ReflacxConfig(name='128', description='128 x 128 for CPU work.', image_size=128),
    ReflacxConfig(name='64', description='64 x 64 for tests.', image_size=64),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = '224'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Credentialed PhysioNet access is required; nothing is downloaded by this builder.
  Put into the manual_dir (default <data_dir>/downloads/manual/):
    reflacx-xray-localization/1.0.0/  from https://physionet.org/content/reflacx-xray-localization/
                                      (main_data/ is read; gaze_data/ is not needed)
    mimic-cxr-jpg/2.0.0/              from https://physionet.org/content/mimic-cxr-jpg/2.0.0/
                                      (the files/pXX/.../<dicom_id>.jpg the metadata names:
                                      2,616 images)
  or, instead of the JPGs,
    mimic-cxr/2.0.0/                  from https://physionet.org/content/mimic-cxr/2.0.0/ (DICOM).
  e.g. wget -r -N -c -np --user USER --ask-password \\
         https://physionet.org/files/reflacx-xray-localization/1.0.0/main_data/
  then move physionet.org/files/reflacx-xray-localization into the manual_dir.
  """

  def __init__(self, *, num_workers: int | None = None, **kwargs):
    """``num_workers``: threads decoding images and making maps (default: all cores); 0: none."""
    super().__init__(**kwargs)
    self._num_workers = os.cpu_count() if num_workers is None else num_workers

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    zlib = tfds.features.Encoding.ZLIB
    findings = len(labels_lib.FINDINGS)

    def tensor(shape: tuple[int, ...], dtype: type) -> tfds.features.Tensor:
      return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=zlib)

    return self.dataset_info_from_configs(
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          'dicom_id': tfds.features.Text(),
          'study_id': np.int64,
          'patient_id': np.int64,
          'original_size': tfds.features.Tensor(shape=(2,), dtype=np.int32),
          'image': tfds.features.Image(
            shape=(size, size, 1), dtype=np.uint8, encoding_format='png'
          ),
          'label': tfds.features.ClassLabel(names=list(labels_lib.CLASS_NAMES)),
          'gaze': tensor((size, size), np.float32),
          'fixation_map': tensor((size, size), np.uint8),
          'num_gaze_readings': np.int32,
          'readings': tfds.features.Sequence(
            {
              'id': tfds.features.Text(),
              'phase': np.int32,
              'discarded': np.bool_,
              'gaze': tensor((size, size), np.float32),
              'fixation_map': tensor((size, size), np.uint8),
              'certainty': tfds.features.Tensor(shape=(findings,), dtype=np.int8),
              'labels_phase_1': tfds.features.Tensor(
                shape=(len(fmt.PHASE_1_LABELS),), dtype=np.int8
              ),
              'labels_phase_2_3': tfds.features.Tensor(
                shape=(len(fmt.PHASE_2_3_LABELS),), dtype=np.int8
              ),
              'other': tfds.features.Text(),
              'class': np.int32,
              'ellipses': tensor((findings, size, size), np.uint8),
              'chest_box': tfds.features.Tensor(shape=(4,), dtype=np.float32),
            }
          ),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='https://physionet.org/content/reflacx-xray-localization/1.0.0/',
      citation=_CITATION,
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    tree = reflacx_reader.read_tree(dl_manager.manual_dir, skip_invalid_rows=cfg.skip_invalid_rows)
    by_split = {s: [] for s in SPLITS}
    for rec in tree.images:
      by_split[image_split(rec)[0]].append(rec)
    meta = self.info.metadata
    meta['image_format'] = tree.image_format
    meta['skipped_ids'] = tree.skipped_ids
    meta['skipped_problems'] = [str(p) for p in tree.problems]
    meta['discarded_readings'] = tree.discarded_readings
    meta['dropped_filtered_fixations'] = 0
    meta['readings_per_split'] = {s: sum(len(r.readings) for r in v) for s, v in by_split.items()}
    meta['patients_per_split'] = {s: len({r.patient_id for r in v}) for s, v in by_split.items()}
    most = max((len(r.readings) for r in tree.images), default=0)
    meta['readers_per_multi_read_image'] = most
    meta['images_with_every_reader_gazing'] = {
      s: sum(sum(not x.discarded for x in r.readings) == most > 1 for r in v)
      for s, v in by_split.items()
    }
    return {s: self._generate_examples(v) for s, v in by_split.items() if v}

  def _generate_examples(self, records: list[reflacx_reader.ImageRecord]):
    meta = self.info.metadata
    for rec, (example, dropped) in zip(records, self._decoded(records)):
      meta['dropped_filtered_fixations'] += dropped
      yield rec.dicom_id, example

  def _decoded(self, records: list[reflacx_reader.ImageRecord]) -> Iterator[tuple[dict, int]]:
    """``_process`` of each record, in order, in threads (``data_builders.threads``)."""
    process = functools.partial(_process, size=self.builder_config.image_size)
    return threads.ordered_map(process, records, self._num_workers)
