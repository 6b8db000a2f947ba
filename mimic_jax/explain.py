r"""Explains new chest X-rays with a trained run: predictions and explanation overlays.

  python -m mimic_jax.explain --workdir=RUN IMAGE_OR_FOLDER_OR_GLOB... [--out=RUN/explain] \
      [--explainers=grad_cam,input_gradients,gradient_shap] [--checkpoint=latest|best] \
      [--batch_size=8]

Reads the run's ``config.json`` and its latest (or best) checkpoint that reads back, and
prepares each image as the dataset's images were (``data_builders.mimic_cxr_egd.images``: a
JPEG or DICOM as the builder reads it, stretched to the run's image size, normalised as in
training; other kinds converted to 8-bit grey, which the summary says). Images of JPEG, PNG or
DICOM files; a folder means the images in it, a pattern the files it matches.

Writes to ``--out`` (default ``RUN/explain/``), per image: ``<name>.json`` (the predicted class,
the ensemble's and each sub-model's class probabilities, the conversions) and
``<name>_<explainer>.png`` (the image and the explainer's map for the predicted class, the
sub-models' mean, overlaid); and ``summary.json`` for all images. Batched and jit-compiled, on
whatever JAX runs on.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import glob
import json
import os
import pathlib

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from matplotlib import colormaps
import numpy as np
from PIL import Image

from data_builders.mimic_cxr_egd import egd_format
from data_builders.mimic_cxr_egd import images as images_lib
from mimic_jax import config_check
from mimic_jax import models
from mimic_jax import tuning as tuning_lib
from mimic_jax.data import pipeline
from mimic_jax.evaluation import maps as maps_lib
from mimic_jax.evaluation import report
from mimic_jax.methods import base
from mimic_jax.runtime import compilation_cache
from mimic_jax.runtime import console
from mimic_jax.training import checkpoints
from mimic_jax.training import finite
from mimic_jax.training import state as state_lib
from mimic_jax.training import workdir as workdir_lib

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.dcm')


class ExplainError(ValueError):
  """The command cannot run as asked (no run, no checkpoint, unusable images)."""


def find_images(arguments: Sequence[str]) -> list[pathlib.Path]:
  """The image files that ``arguments`` (files, folders, glob patterns) name, in order."""
  found = []
  for arg in arguments:
    path = pathlib.Path(arg)
    if path.is_dir():
      found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.exists():
      found.append(path)
    else:
      matches = sorted(glob.glob(arg))
      if not matches:
        raise ExplainError(f'{arg}: no such file, folder or matching files')
      found += [pathlib.Path(m) for m in matches]
  if not found:
    raise ExplainError(f'no images (files ending in {", ".join(IMAGE_SUFFIXES)}) in {arguments}')
  return list(dict.fromkeys(found))


def prepare_images(paths: Sequence[pathlib.Path], size: int, input_channels: int) -> tuple:
  """``(model inputs (N, S, S, C), grey uint8 images (N, S, S), notes per image)``; every
  unreadable or unusable image is named in one error."""
  inputs, greys, notes, problems = [], [], [], []
  for path in paths:
    try:
      grey, _, note = images_lib.load_any(path, size)
    except ValueError as e:
      problems.append(str(e))
      continue
    example = {
      'image': grey[..., None],
      'label': 0,
      'gaze': np.zeros((size, size)),
      'fixation_map': np.zeros((size, size), np.uint8),
    }
    inputs.append(pipeline.preprocess(example, input_channels)['image'])
    greys.append(grey)
    notes.append(note)
  if problems:
    raise ExplainError(
      f'{len(problems)} image(s) cannot be used:\n' + '\n'.join(f'  - {p}' for p in problems)
    )
  return np.stack(inputs), np.stack(greys), notes


def _predict_and_explain(
  state: state_lib.TrainState,
  x: jax.Array,
  rng: jax.Array,
  *,
  explainers: Sequence[str],
  size: int,
  layer: str,
  gradcam_target: str,
  execution: str,
) -> dict:
  """Per image: each sub-model's class probabilities ``(M, B, K)``, the ensemble's ``(B, K)``
  (the prediction, the mean of the sub-models' log-probabilities, normalised: their geometric
    mean), the predicted class ``(B,)``, and each explainer's mean map for it ``(B, S, S)``."""
  variables = base.eval_variables(state.params, state.batch_stats)
  logits = base.map_members(
    lambda v: state.apply_fn(v, x, train=False), variables, execution=execution
  )
  ensemble = base.ensemble_prediction(logits)
  predicted = jnp.argmax(ensemble, axis=-1)
  out = {
    'members': jax.nn.softmax(logits, -1),
    'ensemble': jax.nn.softmax(ensemble, -1),
    'predicted': predicted,
  }
  for e in explainers:
    rng, sub = jax.random.split(rng)
    out[e] = maps_lib.member_maps(
      state,
      x,
      predicted,
      sub,
      explainer=e,
      size=size,
      layer=layer,
      gradcam_target=gradcam_target,
      execution=execution,
    ).mean(axis=0)
  return out


def overlay(grey: np.ndarray, heat: np.ndarray, min_side: int = 256) -> np.ndarray:
  """An RGB uint8 picture at least ``min_side`` pixels high: the grey image with the map
  (min-max scaled, 'jet') over it."""
  side = max(grey.shape[0], min_side)
  grey = np.asarray(Image.fromarray(grey).resize((side, side), Image.Resampling.BILINEAR))
  heat = np.asarray(
    Image.fromarray(np.asarray(heat, np.float32)).resize((side, side), Image.Resampling.BILINEAR)
  )
  span = float(heat.max() - heat.min())
  scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
  colour = colormaps['jet'](scaled)[..., :3]
  base_rgb = np.repeat(grey[..., None] / 255.0, 3, axis=-1)
  return np.round(255 * (0.55 * base_rgb + 0.45 * colour)).astype(np.uint8)


def explain(
  workdir: str | os.PathLike,
  image_args: Sequence[str],
  out_dir: str | os.PathLike | None = None,
  explainers: Sequence[str] = report.EXPLAINERS,
  checkpoint: str | None = None,
  batch_size: int = 8,
) -> list[dict]:
  """Runs the command (see the module docstring); returns the per-image summaries."""
  config = workdir_lib.stored_config(workdir)
  if config is None:
    raise ExplainError(f'{workdir}/config.json not found: --workdir must be a trained run')
  config_check.validate(config, 1)
  paths = find_images(image_args)
  size = pipeline.image_shape(config)[0]
  inputs, greys, notes = prepare_images(paths, size, config.model.input_channels)
  tuning = tuning_lib.resolve(config.xla)
  state = checkpoints.load_state(
    config, workdir, tuning=tuning, devices=jax.local_devices()[:1], select=checkpoint
  )
  fn = tuning.jit(
    functools.partial(
      _predict_and_explain,
      explainers=tuple(explainers),
      size=size,
      layer=models.gradcam_layer(config.model.arch),
      gradcam_target=config.evaluation.gradcam_target,
      execution=tuning.ensemble_execution,
    )
  )
  out = pathlib.Path(out_dir or pathlib.Path(workdir) / 'explain')
  out.mkdir(parents=True, exist_ok=True)
  names = list(egd_format.CLASS_NAMES)
  summaries = []
  rng = jax.random.key(0)
  for start in range(0, len(paths), batch_size):
    chunk = inputs[start : start + batch_size]
    pad = batch_size - len(chunk)  # one compiled shape for every batch
    x = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
    rng, sub = jax.random.split(rng)
    result = jax.device_get(fn(state, jnp.asarray(x), sub))
    for i in range(len(chunk)):
      k = start + i
      stem = (
        paths[k].stem
        if [p.stem for p in paths].count(paths[k].stem) == 1
        else (f'{paths[k].stem}_{k}')
      )
      entry = {
        'image': str(paths[k]),
        'predicted': names[int(result['predicted'][i])],
        'probabilities': dict(zip(names, map(float, result['ensemble'][i]))),
        'sub_model_probabilities': [
          dict(zip(names, map(float, p))) for p in result['members'][:, i]
        ],
        'conversions': notes[k],
        'overlays': {},
      }
      for e in explainers:
        png = out / f'{stem}_{e}.png'
        Image.fromarray(overlay(greys[k], np.asarray(result[e][i]))).save(png)
        entry['overlays'][e] = png.name
      (out / f'{stem}.json').write_text(json.dumps(entry, indent=1))
      summaries.append(entry)
    print(f'[explain] {min(start + batch_size, len(paths))}/{len(paths)} images', flush=True)
  (out / 'summary.json').write_text(json.dumps(summaries, indent=1))
  return summaries


def _cli() -> None:
  workdir = flags.DEFINE_string('workdir', None, 'A trained run.', required=True)
  out = flags.DEFINE_string('out', None, 'Output folder (default: <workdir>/explain).')
  explainers = flags.DEFINE_list(
    'explainers', list(report.EXPLAINERS), f'Any of {", ".join(report.EXPLAINERS)}.'
  )
  checkpoint = flags.DEFINE_enum(
    'checkpoint',
    None,
    list(checkpoints.SELECTIONS),
    "latest or best (default: the run's config.select_checkpoint).",
  )
  batch_size = flags.DEFINE_integer('batch_size', 8, 'Images per compiled batch.')

  def main(argv: Sequence[str]) -> None:
    if len(argv) < 2:
      raise app.UsageError('give one or more images, folders or glob patterns')
    unknown = [e for e in explainers.value if e not in report.EXPLAINERS]
    if unknown:
      raise app.UsageError(f'--explainers: unknown {unknown}; choose from {report.EXPLAINERS}')
    console.quiet_libraries()
    compilation_cache.enable()
    try:
      results = explain(
        workdir.value, argv[1:], out.value, explainers.value, checkpoint.value, batch_size.value
      )
    except (
      ExplainError,
      checkpoints.CheckpointRestoreError,
      finite.NonFiniteError,
      FileNotFoundError,
      ValueError,
    ) as e:
      raise SystemExit(f'explain: {e}') from None
    for r in results:
      probability = r['probabilities'][r['predicted']]
      print(f'{r["image"]}: {r["predicted"]} ({probability:.3f})')

  app.run(main)


if __name__ == '__main__':
  _cli()
