"""What a command prints: our own progress lines and warnings, library INFO only on request.

A 6-step training run used to print about 330 lines, three quarters of them INFO lines of
orbax, TFDS and JAX. By default the commands show warnings and their own progress lines (step,
loss, ETA; evaluation progress; TFDS's progress bars); absl's ``--verbosity=0`` (INFO) or
``--verbosity=1`` (DEBUG) brings the libraries' lines back. A run's ``log.txt`` holds every
progress line either way.
"""

from __future__ import annotations

import logging as std_logging

from absl import flags
from absl import logging

# Library warnings that ask nothing of the user (our builder's configs are custom by design;
# OpenCV is an optional speed-up of TFDS's image encoding).
_UNACTIONABLE = ('Using custom data configuration', 'OpenCV is not installed')


def _actionable(record: std_logging.LogRecord) -> bool:
  return not str(record.msg).startswith(_UNACTIONABLE)


def quiet_libraries() -> None:
  """Sets absl's and Python's logging to WARNING, without the warnings that ask nothing of
  the user, unless ``--verbosity`` was given."""
  if flags.FLAGS.is_parsed() and flags.FLAGS['verbosity'].present:
    return
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger().setLevel(std_logging.WARNING)
  logging.get_absl_logger().addFilter(_actionable)
