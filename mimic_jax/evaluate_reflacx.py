r"""Scores a trained run's explanations on REFLACX, beside the uniform map, the prior and the
human ceiling (``mimic_jax/evaluation/reflacx_eval.py`` says how).

  python -m mimic_jax.evaluate_reflacx --workdir=RUN[,RUN...] [--splits=train,validation,test] \
      [--data_dir=DIR --manual_dir=DIR] [--out=RUN/eval_reflacx] [--summary=FILE] \
      [--config.KEY=VALUE ...]

Without ``--data_dir``/``--manual_dir``: the run's own REFLACX data if it trained on REFLACX,
else the embedded synthetic REFLACX tree (written and built on first use, at the run's image
size). Default splits: ``test`` for a run trained on REFLACX, else every split (images the run
trained on are left out either way). Prints the tables and writes ``metrics.json`` and
``report.md``. With several runs (e.g. the seeds of a sweep, ``OUT/gaze/seed_0,...``) each is
evaluated into its own folder, and a table across them (runs pooled by their parent folder's
name, the variant) is printed and written to ``--summary``.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import pathlib

from absl import app
from absl import flags

from mimic_jax import config_check
from mimic_jax.runtime import compilation_cache
from mimic_jax.runtime import console
from mimic_jax.training import checkpoints
from mimic_jax.training import workdir as workdir_lib


def run(
  workdir: str,
  splits: Sequence[str] | None = None,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  out: str | None = None,
  overrides: dict[str, str] | None = None,
) -> dict:
  """Loads the run's config (filling keys it predates), evaluates, returns the results."""
  from configs import mimic as mimic_config
  from mimic_jax import explain
  from mimic_jax.evaluation import reflacx_eval

  config = workdir_lib.stored_config(workdir)
  if config is None:
    raise FileNotFoundError(f'{workdir}/config.json not found: --workdir must be a trained run')
  workdir_lib.fill_missing(config, mimic_config.get_config())
  for key, text in (overrides or {}).items():
    config_check.set_value(config, key, explain.parse_value(text))
  config_check.validate(config, 1)
  data = reflacx_eval.reflacx_data(config, data_dir, manual_dir)
  if not splits:
    splits = ('test',) if config.data.dataset == 'reflacx' else ('train', 'validation', 'test')
  return reflacx_eval.evaluate_on_reflacx(config, workdir, data, tuple(splits), out)


def _cli() -> None:
  from mimic_jax import explain

  workdirs = flags.DEFINE_list('workdir', None, 'Trained run(s), comma-separated.', required=True)
  splits = flags.DEFINE_list('splits', None, 'REFLACX splits (train, validation, test, other).')
  data_dir = flags.DEFINE_string('data_dir', None, 'TFDS data dir of a REFLACX build.')
  manual_dir = flags.DEFINE_string('manual_dir', None, 'The PhysioNet download (docs/reflacx.md).')
  out = flags.DEFINE_string('out', None, 'Output folder (default: <workdir>/eval_reflacx).')
  summary = flags.DEFINE_string('summary', None, 'With several runs: write the table here.')
  overrides: dict[str, str] = {}

  def main(argv: Sequence[str]) -> None:
    from mimic_jax.evaluation import reflacx_eval

    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments {argv[1:]}')
    console.quiet_libraries()
    compilation_cache.enable()
    if out.value and len(workdirs.value) > 1:
      raise app.UsageError('--out is for one run; each of several runs writes its own folder')
    every = []
    for k, workdir in enumerate(workdirs.value, start=1):
      print(f'[reflacx] run {k}/{len(workdirs.value)}: {workdir}', flush=True)
      try:
        every.append(
          run(workdir, splits.value, data_dir.value, manual_dir.value, out.value, overrides)
        )
      except (checkpoints.CheckpointRestoreError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f'evaluate_reflacx: {workdir}: {e}') from None
    if len(every) == 1:
      print(reflacx_eval.markdown_report(every[0]), end='')
      return
    names = [os.path.basename(os.path.dirname(os.path.normpath(w))) for w in workdirs.value]
    table = reflacx_eval.across_runs(every, names)
    print(table, end='')
    if summary.value:
      pathlib.Path(summary.value).parent.mkdir(parents=True, exist_ok=True)
      pathlib.Path(summary.value).write_text(table)

  def parse(argv: list[str]) -> list[str]:
    rest, found = explain.split_overrides(argv)
    overrides.update(found)
    return flags.FLAGS(rest)

  app.run(main, flags_parser=parse)


if __name__ == '__main__':
  _cli()
