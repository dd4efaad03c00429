"""XLA:CPU flags lipsync_jax turns on by default: which ones, why, and how to opt out.

Owns `DEFAULT_CPU_FLAGS` and `apply_default_xla_flags()`, which `lipsync_jax/__init__.py` calls on import
so that every entry point (training, inference, benchmarks, tests) gets them before JAX starts a backend.

  --xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce
      Routes XLA:CPU dots, convolutions and reductions through YNNPACK. Measured on the 2-core CI-class
      CPU (bench/train_bench.py, full models, default batches, fp32): expert step 2.79 s -> 1.99 s,
      generator 18.4 s -> 11.4 s; convolution forward ~2x and weight gradients ~2.5x faster.
      It only affects the CPU backend; GPU/TPU programs are unchanged.

Rules: a flag the user already set in XLA_FLAGS is left as the user set it; `LIPSYNC_JAX_XLA_FLAGS=off`
adds nothing; flags are added only for a jaxlib whose flag set was checked (`TESTED_JAXLIB`), because XLA
aborts on flags it does not know. Flags added after JAX created its CPU backend would be ignored, so that
case logs a warning instead.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys

DEFAULT_CPU_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'individual_dot,reduce'}
TESTED_JAXLIB = ('0.10.2',)
OPT_OUT_ENV = 'LIPSYNC_JAX_XLA_FLAGS'


def _jaxlib_version() -> str | None:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def _backend_started() -> bool:
  if 'jax' not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel

    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # pylint: disable=broad-except  # private API: if it moved, assume not started
    return False


def apply_default_xla_flags(environ=None, jaxlib_version: str | None = None) -> list[str]:
  """Appends the missing default flags to XLA_FLAGS in `environ` (os.environ); returns those added."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT_ENV, '').lower() in ('0', 'off', 'false', 'no'):
    return []
  version = jaxlib_version if jaxlib_version is not None else _jaxlib_version()
  if version not in TESTED_JAXLIB:
    return []
  current = environ.get('XLA_FLAGS', '')
  present = {token.lstrip('-').split('=', 1)[0] for token in current.split()}
  added = [f'--{name}={value}' for name, value in DEFAULT_CPU_FLAGS.items() if name not in present]
  if not added:
    return []
  if environ is os.environ and _backend_started():
    logging.warning(
      'lipsync_jax: JAX already started its backend, so the default XLA:CPU flags %s are not '
      'applied (import lipsync_jax before running JAX code, or set them in XLA_FLAGS).',
      added,
    )
    return []
  environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()
  return added
