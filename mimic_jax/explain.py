r"""Explains new chest X-rays with a trained run: predictions and explanation overlays.

  python -m mimic_jax.explain --workdir=RUN IMAGE_OR_FOLDER_OR_GLOB... [--out=RUN/explain] \
      [--explainers=grad_cam,input_gradients,gradient_shap] [--checkpoint=latest|best|STEP] \
      [--target=CLASS] [--skip_invalid] [--save_maps] [--batch_size=8]

Reads the run's ``config.json`` (``--config.KEY=VALUE`` arguments override what they name, as
for ``main.py --mode=evaluate``) and its latest (or best) checkpoint that reads back, and
prepares each image as the dataset's images were (``data_builders.mimic_cxr_egd.images``: a
JPEG or DICOM as the builder reads it, stretched to the run's image size, normalised as in
training; other kinds converted to 8-bit grey, which the summary says). Images of JPEG, PNG or
DICOM files; a folder means the images in it, a pattern the files it matches.

Writes to ``--out`` (default ``RUN/explain/``), per image: ``<name>.json`` (the predicted class,
the class explained, the ensemble's and each sub-model's class probabilities, the checkpoint,
the conversions) and ``<name>_<explainer>.png`` with an ``.svg`` beside it (in the manner of
captum's ``visualize_image_attr_multiple``: the image at its original aspect ratio, the
ensemble's map and each sub-model's over it on one colour scale with a colour bar that states
the sign mode, the class and its probability in the title); with ``--save_maps`` also each
sub-model's raw map, ``<name>_<explainer>_member<k>.npy`` (float32, S x S, the model's grid);
and ``summary.json`` for all images, with the ones that could not be read. ``--target`` explains
a given class (name or index) instead of the predicted one; ``--skip_invalid`` explains the
readable images and lists the others instead of stopping. Batched and jit-compiled, on
whatever JAX runs on.
"""

from __future__ import annotations

import ast
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
import numpy as np

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


def prepare_images(
  paths: Sequence[pathlib.Path], size: int, input_channels: int, skip_invalid: bool = False
) -> tuple:
  """``(paths used, model inputs (N, S, S, C), grey uint8 images (N, S, S), original sizes
  (H, W), notes per image, problems)``; every unreadable or unusable image is named in one
  error, or, with ``skip_invalid``, left out and listed in ``problems``."""
  used, inputs, greys, sizes, notes, problems = [], [], [], [], [], []
  for path in paths:
    try:
      grey, original, note = images_lib.load_any(path, size)
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
    used.append(path)
    greys.append(grey)
    sizes.append(tuple(int(v) for v in original))
    notes.append(note)
  if problems and (not skip_invalid or not used):
    raise ExplainError(
      f'{len(problems)} image(s) cannot be used:\n'
      + '\n'.join(f'  - {p}' for p in problems)
      + ('' if skip_invalid else '\nPass --skip_invalid to explain the others.')
    )
  return used, np.stack(inputs), np.stack(greys), sizes, notes, problems


def _predict_and_explain(
  state: state_lib.TrainState,
  x: jax.Array,
  target: jax.Array,
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
  mean), the predicted class ``(B,)``, and each explainer's maps ``(M, B, S, S)`` for the class
  ``target`` (``(B,)``; -1: the predicted class)."""
  variables = base.eval_variables(state.params, state.batch_stats)
  logits = base.map_members(
    lambda v: state.apply_fn(v, x, train=False), variables, execution=execution
  )
  ensemble = base.ensemble_prediction(logits)
  predicted = jnp.argmax(ensemble, axis=-1)
  explained = jnp.where(target < 0, predicted, target)
  out = {
    'members': jax.nn.softmax(logits, -1),
    'ensemble': jax.nn.softmax(ensemble, -1),
    'predicted': predicted,
    'explained': explained,
  }
  for e in explainers:
    rng, sub = jax.random.split(rng)
    out[e] = maps_lib.member_maps(
      state,
      x,
      explained,
      sub,
      explainer=e,
      size=size,
      layer=layer,
      gradcam_target=gradcam_target,
      execution=execution,
    )
  return out


def parse_value(text: str) -> object:
  """A ``--config.KEY=VALUE`` value: a Python literal (number, bool, None, tuple, quoted
  string) or, failing that, the text itself; ``true``/``false`` as booleans."""
  lowered = text.strip().lower()
  if lowered in ('true', 'false'):
    return lowered == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def split_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
  """``argv`` without its ``--config.KEY=VALUE`` arguments, and those as ``{KEY: VALUE}``."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith('--config.') and '=' in arg:
      key, value = arg[len('--config.') :].split('=', 1)
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides


def class_index(target: str | None, names: Sequence[str]) -> int:
  """``--target``: a class name or index -> its index; -1 (the predicted class) for ``None``."""
  if target is None or target == '':
    return -1
  if target in names:
    return list(names).index(target)
  if target.isdigit() and int(target) < len(names):
    return int(target)
  raise ExplainError(f'--target={target!r}: use a class name of {list(names)} or its index')


def explain(
  workdir: str | os.PathLike,
  image_args: Sequence[str],
  out_dir: str | os.PathLike | None = None,
  explainers: Sequence[str] = tuple(report.EXPLAINERS),
  checkpoint: str | None = None,
  batch_size: int = 8,
  target: str | None = None,
  skip_invalid: bool = False,
  save_maps: bool = False,
  overrides: dict[str, str] | None = None,
) -> list[dict]:
  """Runs the command (see the module docstring); returns the per-image summaries.
  ``overrides``: ``{dotted key: value text}`` set on the run's config (as ``--config.KEY``)."""
  from mimic_jax.evaluation import figures  # matplotlib only when writing

  config = workdir_lib.stored_config(workdir)
  if config is None:
    raise ExplainError(f'{workdir}/config.json not found: --workdir must be a trained run')
  for key, text in (overrides or {}).items():
    config_check.set_value(config, key, parse_value(text))
  config_check.validate(config, 1)
  names = list(egd_format.CLASS_NAMES)
  wanted = class_index(target, names)
  size = pipeline.image_shape(config)[0]
  paths, inputs, greys, sizes, notes, problems = prepare_images(
    find_images(image_args), size, config.model.input_channels, skip_invalid
  )
  tuning = tuning_lib.resolve(config.xla)
  state, scored = checkpoints.load_checkpoint(
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
  stems = [
    p.stem if [q.stem for q in paths].count(p.stem) == 1 else f'{p.stem}_{k}'
    for k, p in enumerate(paths)
  ]
  summaries = []
  rng = jax.random.key(0)
  for start in range(0, len(paths), batch_size):
    chunk = inputs[start : start + batch_size]
    pad = batch_size - len(chunk)  # one compiled shape for every batch
    x = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
    rng, sub = jax.random.split(rng)
    classes = jnp.full((len(x),), wanted, jnp.int32)
    result = jax.device_get(fn(state, jnp.asarray(x), classes, sub))
    for i in range(len(chunk)):
      k = start + i
      predicted, explained = int(result['predicted'][i]), int(result['explained'][i])
      probability = float(result['ensemble'][i, explained])
      entry = {
        'image': str(paths[k]),
        'predicted': names[predicted],
        'explained_class': names[explained],
        'probabilities': dict(zip(names, map(float, result['ensemble'][i]))),
        'sub_model_probabilities': [
          dict(zip(names, map(float, p))) for p in result['members'][:, i]
        ],
        'checkpoint': scored,
        'gradcam_target': config.evaluation.gradcam_target,
        'original_size': list(sizes[k]),
        'conversions': notes[k],
        'overlays': {},
        'maps': {},
      }
      for e in explainers:
        member_maps = np.asarray(result[e][:, i], np.float32)  # (M, S, S)
        title = (
          f'{paths[k].name}: predicted {names[predicted]} '
          f'(p={float(result["ensemble"][i, predicted]):.2f}); explained: {names[explained]} '
          f'(p={probability:.2f}); step {scored["step"]} ({scored["select"]})'
        )
        member_titles = [
          f'sub-model {m + 1} (p={float(result["members"][m, i, explained]):.2f})'
          for m in range(len(member_maps))
        ]
        fig = figures.explanation_figure(
          greys[k], sizes[k], member_maps, title=title, explainer=e, member_titles=member_titles
        )
        png = out / f'{stems[k]}_{e}.png'
        figures.save_figure(fig, png)
        entry['overlays'][e] = png.name
        if save_maps:
          entry['maps'][e] = []
          for m, member_map in enumerate(member_maps):
            npy = out / f'{stems[k]}_{e}_member{m}.npy'
            np.save(npy, member_map)
            entry['maps'][e].append(npy.name)
      (out / f'{stems[k]}.json').write_text(json.dumps(entry, indent=1))
      summaries.append(entry)
    print(f'[explain] {min(start + batch_size, len(paths))}/{len(paths)} images', flush=True)
  (out / 'summary.json').write_text(
    json.dumps({'images': summaries, 'skipped': problems}, indent=1)
  )
  for problem in problems:
    print(f'skipped: {problem}', flush=True)
  return summaries


def _cli() -> None:
  workdir = flags.DEFINE_string('workdir', None, 'A trained run.', required=True)
  out = flags.DEFINE_string('out', None, 'Output folder (default: <workdir>/explain).')
  explainers = flags.DEFINE_list(
    'explainers', list(report.EXPLAINERS), f'Any of {", ".join(report.EXPLAINERS)}.'
  )
  checkpoint = flags.DEFINE_string(
    'checkpoint', None, "latest, best or a step (default: the run's config.select_checkpoint)."
  )
  target = flags.DEFINE_string(
    'target', None, 'Explain this class (name or index) instead of the predicted one.'
  )
  skip_invalid = flags.DEFINE_bool(
    'skip_invalid', False, 'Explain the readable images and list the others (else: stop).'
  )
  save_maps = flags.DEFINE_bool(
    'save_maps', False, "Also write each sub-model's raw map as <name>_<explainer>_member<k>.npy."
  )
  batch_size = flags.DEFINE_integer('batch_size', 8, 'Images per compiled batch.')

  def main(argv: Sequence[str]) -> None:
    if len(argv) < 2:
      raise app.UsageError('give one or more images, folders or glob patterns')
    unknown = [e for e in explainers.value if e not in report.EXPLAINERS]
    if unknown:
      choices = list(report.EXPLAINERS)
      raise app.UsageError(f'--explainers: unknown {unknown}; choose from {choices}')
    console.quiet_libraries()
    compilation_cache.enable()
    try:
      if checkpoint.value is not None and not checkpoints.valid_selection(checkpoint.value):
        raise ExplainError(f'--checkpoint={checkpoint.value!r}: use latest, best or a step')
      results = explain(
        workdir.value,
        argv[1:],
        out.value,
        explainers.value,
        checkpoint.value,
        batch_size.value,
        target.value,
        skip_invalid.value,
        save_maps.value,
        overrides,
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

  overrides: dict[str, str] = {}

  def parse(argv: list[str]) -> list[str]:
    rest, found = split_overrides(argv)
    overrides.update(found)
    return flags.FLAGS(rest)

  app.run(main, flags_parser=parse)


if __name__ == '__main__':
  _cli()
