"""lipsync_jax.logs: quiet by default, everything back at verbosity 1."""

from __future__ import annotations

import logging

import pytest

from lipsync_jax import logs


class _Collect(logging.Handler):
  def __init__(self):
    super().__init__(logging.DEBUG)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture
def collected():
  handler = _Collect()  # added by each test AFTER logs.setup: like a handler set up later, or none at all
  root = logging.getLogger()
  root_level = root.level
  root.setLevel(logging.INFO)  # as a CLI sets it (absl's app.run, or logging.basicConfig)
  saved = {name: logging.getLogger(name).level for name in ('absl', 'orbax', 'jax._src.xla_bridge')}
  yield handler
  root.removeHandler(handler)
  root.setLevel(root_level)
  for name, level in saved.items():
    logging.getLogger(name).setLevel(level)


def test_quiet_drops_library_info_and_known_noise_but_keeps_real_warnings(collected):
  logs.setup(0)
  logging.getLogger().addHandler(collected)
  logging.getLogger('absl').info('Restoring checkpoint from /x')  # orbax through absl: INFO
  logging.getLogger('absl').warning('Given directory is read only=/x/checkpoints')  # orbax: not actionable
  logging.getLogger('jax._src.xla_bridge').warning("Unable to initialize backend 'tpu'")
  logging.getLogger('absl').warning('a real warning')
  logging.getLogger('lipsync_jax.test').info('our own line')
  assert collected.messages == ['a real warning', 'our own line']


def test_verbosity_one_brings_library_logs_back(collected):
  logs.setup(1)
  logging.getLogger().addHandler(collected)
  logging.getLogger('absl').info('Restoring checkpoint from /x')
  assert collected.messages == ['Restoring checkpoint from /x']
