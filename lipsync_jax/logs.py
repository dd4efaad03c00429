"""Quiet by default: what a run prints is what a user acts on; third-party chatter only when asked for.

Owns the logging set-up every CLI of the project calls first (`setup(verbosity)`), and the environment
defaults that must be in place before TensorFlow's or XLA's C++ code starts (`quiet_environment()`, called
on `import lipsync_jax`):

  TF_CPP_MIN_LOG_LEVEL=2       TensorFlow's C++ INFO/WARNING lines (oneDNN notices, absl pre-init banner)
  TF_ENABLE_ONEDNN_OPTS=0      the oneDNN "custom operations are on" notice (TF is only used for TensorBoard
                               summaries here, never for compute)

Both are `setdefault`s: a value the user set wins. `setup(verbosity)`:
  verbosity 0 (default)  our own INFO lines (lipsync_jax logs through the standard `logging` tree); the
                         'absl' logger, through which orbax, grain and clu log, and other third-party
                         loggers only from WARNING (Beam and jax's 'tpu' probe only from ERROR: their
                         warnings on a CPU machine are not actionable)
  verbosity >= 1         everything at INFO, as the libraries log it (absl's `--verbosity=1`, or `-v`)
"""

from __future__ import annotations

import logging
import os

# Loggers whose INFO (or WARNING) lines are noise at verbosity 0, and the level they get then.
THIRD_PARTY_LEVELS = {
  'absl': logging.WARNING,  # libraries that log through absl (orbax: 'Restoring checkpoint ...')
  'orbax': logging.WARNING,
  'grain': logging.WARNING,
  'jax._src.xla_bridge': logging.ERROR,  # "Unable to initialize backend 'tpu'" on a CPU machine
  'jax._src.distributed': logging.WARNING,
  'jax._src.compilation_cache': logging.WARNING,
  'apache_beam': logging.ERROR,
  'root': logging.INFO,
  'tensorflow': logging.ERROR,
  'h5py': logging.WARNING,
  'matplotlib': logging.WARNING,
  'PIL': logging.WARNING,
  'numba': logging.WARNING,
}
# Warnings libraries log although nothing is wrong for our use: Beam's import-time 'apitools' notice, and
# orbax's notice each time a checkpoint is opened read-only (loading the frozen expert from a workdir).
_ROOT_NOISE = ('apitools not found', 'Given directory is read only')


def quiet_environment() -> None:
  """Environment defaults that silence C++ log spam; must run before TensorFlow is imported."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


class _DropKnownNoise(logging.Filter):
  """Drops known non-actionable root-logger warnings (e.g. Beam's 'apitools not found' on import)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not any(text in str(record.msg) for text in _ROOT_NOISE)


def add_verbosity_flag(parser) -> None:
  """The `--verbosity` flag of the argparse CLIs (training's comes from absl and means the same)."""
  parser.add_argument(
    '--verbosity',
    type=int,
    default=0,
    help="0: this tool's progress and results only; 1: third-party libraries' logs too",
  )


def setup(verbosity: int = 0) -> None:
  """Sets the levels above (verbosity 0) or lets every library log at INFO (verbosity >= 1)."""
  quiet_environment()
  root = logging.getLogger()
  if verbosity >= 1:
    for name in THIRD_PARTY_LEVELS:
      logging.getLogger(None if name == 'root' else name).setLevel(logging.INFO)
    return
  for name, level in THIRD_PARTY_LEVELS.items():
    if name != 'root':
      logging.getLogger(name).setLevel(level)
  # Filters on the loggers the noise is logged on (root: Beam; 'absl': orbax) and on root's handlers (for
  # records propagated from other loggers). Python's last-resort handler, used while root has none, does not
  # run handler filters, so the logger filters are what a plain script relies on.
  for logger in (root, logging.getLogger('absl')):
    if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
      logger.addFilter(_DropKnownNoise())
  for handler in root.handlers:
    if not any(isinstance(f, _DropKnownNoise) for f in handler.filters):
      handler.addFilter(_DropKnownNoise())
