"""TFDS builder ``mimic_cxr_egd``: MIMIC-CXR images with the EGD radiologist eye-gaze.

Reads the PhysioNet download (``MANUAL_DOWNLOAD_INSTRUCTIONS``) and writes ArrayRecord files
readable with ``tfds.data_source('mimic_cxr_egd/<config>', data_dir=...)``; neither building
nor reading needs TensorFlow.

Features (a public contract; S is the config's ``image_size``):

=================  ==========================  =============================================
key                dtype, shape                meaning
=================  ==========================  =============================================
``dicom_id``       Text                        MIMIC-CXR DICOM id (44 characters)
``study_id``       int64 scalar                MIMIC study id
``patient_id``     int64 scalar                MIMIC subject id (the split is by patient)
``original_size``  int32 ``[2]``               ``[H, W]`` of the original image, pixels
``image``          uint8 ``[S, S, 1]``         grey image stretched to S x S (no aspect keep)
``label``          ClassLabel                  ``Normal`` / ``CHF`` / ``pneumonia``
``gaze``           float32 ``[S, S]``          official static heatmap (+1 per in-image
                                               fixation, Gaussian sigma ``gaze_sigma``
                                               original pixels, reflect borders), area-resized,
                                               summing to 1
``fixation_map``   uint8 ``[S, S]``            1 at the pixel of each in-image fixation
``fixations``      Sequence of dict            in temporal order: ``x``, ``y`` (float32,
                                               fractions of the original width and height),
                                               ``start_s``, ``duration_s`` (float32, seconds)
=================  ==========================  =============================================

Splits ``train`` / ``validation`` / ``test`` follow the official patient rule
(:func:`egd_reader.official_split`, seed 42). Fixations on calibration screens and off the
image are dropped and counted in the dataset metadata (``metadata.json``), along with any
images skipped with ``skip_invalid_rows``.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import functools
import logging
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data_builders import threads
from data_builders.mimic_cxr_egd import egd_format as fmt
from data_builders.mimic_cxr_egd import egd_reader
from data_builders.mimic_cxr_egd import gaze_maps
from data_builders.mimic_cxr_egd import images

_DESCRIPTION = __doc__

# EGD, MIMIC-CXR, MIMIC-CXR-JPG (papers and PhysioNet records) and PhysioNet itself.
_CITATION = (pathlib.Path(__file__).parent / 'CITATIONS.bib').read_text()


@dataclasses.dataclass
class EgdConfig(tfds.core.BuilderConfig):
  """Builder config.

  Attributes:
    image_size: S, the side of ``image``, ``gaze`` and ``fixation_map``, pixels.
    gaze_sigma: Gaussian sigma of the static heatmap in original-image pixels (official 150).
    skip_invalid_rows: drop images with bad input (listed in the metadata) instead of failing.
    split_seed: seed of the official patient split (42 in the official experiments).
  """

  image_size: int = 224
  gaze_sigma: float = 150.0
  skip_invalid_rows: bool = False
  split_seed: int = 42


def _process(rec: egd_reader.EgdRecord, size: int, sigma: float) -> tuple[dict, int]:
  """Returns (TFDS example, number of off-image fixations dropped) for one record."""
  image, (height, width) = images.load_image(rec.image_path, size)
  fx = rec.fixations
  x, y = np.asarray(fx.x, np.int64), np.asarray(fx.y, np.int64)
  keep = gaze_maps.in_image_mask(x, y, height, width)
  x, y = x[keep], y[keep]
  example = {
    'dicom_id': rec.dicom_id,
    'study_id': rec.study_id,
    'patient_id': rec.patient_id,
    'original_size': np.asarray([height, width], np.int32),
    'image': images.encode_png(image),
    'label': rec.label,
    'gaze': gaze_maps.static_heatmap(x, y, (height, width), size, sigma),
    'fixation_map': gaze_maps.fixation_map(x, y, (height, width), size),
    'fixations': {
      'x': (x / width).astype(np.float32),
      'y': (y / height).astype(np.float32),
      'start_s': np.asarray(fx.start_s, np.float32)[keep],
      'duration_s': np.asarray(fx.duration_s, np.float32)[keep],
    },
  }
  return example, int((~keep).sum())


class MimicCxrEgd(tfds.core.GeneratorBasedBuilder):
  """MIMIC-CXR-JPG (or DICOM) images with EGD eye-gaze heatmaps, fixation maps and scanpaths."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
    EgdConfig(name='224', description="224 x 224, the paper's size.", image_size=224),
    EgdConfig(name='128', description='128 x 128 for CPU work.', image_size=128),
    EgdConfig(name='64', description='64 x 64 for tests.', image_size=64),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = '224'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Credentialed PhysioNet access is required; nothing is downloaded by this builder.
  Put into the manual_dir (default <data_dir>/downloads/manual/):
    egd-cxr/1.0.0/            from https://physionet.org/content/egd-cxr/1.0.0/
                              (master_sheet.csv and fixations.csv are read)
    mimic-cxr-jpg/2.0.0/      from https://physionet.org/content/mimic-cxr-jpg/2.0.0/
                              (only the files/pXX/.../<dicom_id>.jpg named by master_sheet.csv
                              are needed: 1,083 images)
  or, instead of the JPGs,
    mimic-cxr/2.0.0/          from https://physionet.org/content/mimic-cxr/2.0.0/ (DICOM).
  e.g. wget -r -N -c -np --user USER --ask-password https://physionet.org/files/egd-cxr/1.0.0/
  then move physionet.org/files/egd-cxr into the manual_dir.
  """

  def __init__(self, *, num_workers: int | None = None, **kwargs):
    """``num_workers``: threads decoding images (default: all cores); 0: none."""
    super().__init__(**kwargs)
    self._num_workers = os.cpu_count() if num_workers is None else num_workers

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    zlib = tfds.features.Encoding.ZLIB
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
          'label': tfds.features.ClassLabel(names=list(fmt.CLASS_NAMES)),
          'gaze': tfds.features.Tensor(shape=(size, size), dtype=np.float32, encoding=zlib),
          'fixation_map': tfds.features.Tensor(shape=(size, size), dtype=np.uint8, encoding=zlib),
          'fixations': tfds.features.Sequence(
            {'x': np.float32, 'y': np.float32, 'start_s': np.float32, 'duration_s': np.float32}
          ),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='https://physionet.org/content/egd-cxr/1.0.0/',
      citation=_CITATION,
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    tree = egd_reader.read_tree(
      dl_manager.manual_dir, skip_invalid_rows=cfg.skip_invalid_rows, split_seed=cfg.split_seed
    )
    meta = self.info.metadata
    meta['image_format'] = tree.image_format
    meta['skipped_ids'] = tree.skipped_ids
    meta['skipped_problems'] = [str(p) for p in tree.problems]
    meta['dropped_calibration_fixations'] = tree.calibration_rows
    meta['dropped_duplicate_fixations'] = tree.duplicate_fixations
    meta['dropped_off_image_fixations'] = 0
    meta['patients_per_split'] = {
      s: len({r.patient_id for r in recs}) for s, recs in tree.splits.items()
    }
    empty = [s for s, recs in tree.splits.items() if not recs]
    if empty:  # only tiny trees: TFDS cannot write a split without examples
      logging.warning('No patients fall in split(s) %s; they are not written.', empty)
    return {split: self._generate_examples(recs) for split, recs in tree.splits.items() if recs}

  def _generate_examples(self, records: list[egd_reader.EgdRecord]):
    meta = self.info.metadata
    for rec, (example, off_image) in zip(records, self._decoded(records)):
      meta['dropped_off_image_fixations'] += off_image
      yield rec.dicom_id, example

  def _decoded(self, records: list[egd_reader.EgdRecord]) -> Iterator[tuple[dict, int]]:
    """``_process`` of each record, in order, in threads (``data_builders.threads``)."""
    cfg = self.builder_config
    process = functools.partial(_process, size=cfg.image_size, sigma=cfg.gaze_sigma)
    return threads.ordered_map(process, records, self._num_workers)
