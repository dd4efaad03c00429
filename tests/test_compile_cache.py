"""Tests for lipsync_jax.compile_cache: the directory rule, the off switches, and that a second process
really loads its programs from the persistent cache (counted from jax's monitoring events) on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import pytest

from lipsync_jax import compile_cache, fs

# A second process: enables the cache in argv[1] (or the default rule when '-'), compiles one small program,
# prints the counts as JSON.
_CHILD = """
import json, sys
import jax, jax.numpy as jnp
from lipsync_jax import compile_cache
path = compile_cache.enable(None if sys.argv[1] == '-' else sys.argv[1], min_compile_time_s=0)
with compile_cache.count_compiles() as counts:
  f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(axis=0) * 3)
  f(jnp.ones((64, 32), jnp.float32)).block_until_ready()
print(json.dumps(dict(counts, path=path)))
"""


def _child(cache_arg: str, **env) -> dict:
  environ = {k: v for k, v in os.environ.items() if k not in (compile_cache.ENV, "JAX_COMPILATION_CACHE_DIR")}
  out = subprocess.run(
    [sys.executable, "-c", _CHILD, cache_arg],
    env=dict(environ, JAX_PLATFORMS="cpu", **env),
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _restore_jax_cache_config():
  """enable() changes process-wide jax config: put it back after each test."""
  before = jax.config.jax_compilation_cache_dir
  yield
  compile_cache.disable()
  if before:
    jax.config.update("jax_compilation_cache_dir", before)


def test_default_dir_rule(monkeypatch, tmp_path):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.delenv(fs.CACHE_ENV, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compile_cache.default_dir() == str(tmp_path / "home" / ".cache" / "lipsync_jax" / "jax_compile")
  monkeypatch.setenv(fs.CACHE_ENV, str(tmp_path / "root"))
  assert compile_cache.default_dir() == str(tmp_path / "root" / "jax_compile")
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
  assert compile_cache.default_dir() == str(tmp_path / "mine")
  for off in ("0", "off", "False", "no"):
    monkeypatch.setenv(compile_cache.ENV, off)
    assert compile_cache.default_dir() is None


def test_enable_and_off_switches(monkeypatch, tmp_path):
  compile_cache.disable()
  assert compile_cache.enable(str(tmp_path / "c"), disabled=True) is None
  assert jax.config.jax_compilation_cache_dir is None
  monkeypatch.setenv(compile_cache.ENV, "0")
  assert compile_cache.enable() is None
  assert jax.config.jax_compilation_cache_dir is None
  # An explicit directory is used even when the env switch says off (the caller asked for it).
  path = compile_cache.enable(str(tmp_path / "c"), min_compile_time_s=0.5)
  assert path == str(tmp_path / "c") and os.path.isdir(path)
  assert jax.config.jax_compilation_cache_dir == path
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5
  # Switching directories in one process.
  other = compile_cache.enable(str(tmp_path / "d"))
  assert jax.config.jax_compilation_cache_dir == other == str(tmp_path / "d")
  assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_TIME_S


def test_second_process_loads_from_the_cache(tmp_path):
  cache = str(tmp_path / "cache")
  first = _child(cache)
  assert first["path"] == cache
  assert first["programs"] >= 1 and first["cache_hits"] == 0 and first["compiled"] == first["programs"]
  entries = [name for name in os.listdir(cache) if name.endswith("-cache")]
  assert entries, os.listdir(cache)
  second = _child(cache)
  assert second["programs"] == first["programs"]
  assert second["cache_hits"] == second["programs"] and second["compiled"] == 0
  # The default rule, through the environment: a fresh root compiles, off compiles without the cache.
  root = _child("-", LIPSYNC_JAX_CACHE=str(tmp_path / "root"))
  assert root["path"] == str(tmp_path / "root" / "jax_compile") and root["cache_hits"] == 0
  assert _child("-", LIPSYNC_JAX_CACHE=str(tmp_path / "root"))["compiled"] == 0
  off = _child("-", LIPSYNC_JAX_COMPILE_CACHE="0", LIPSYNC_JAX_CACHE=str(tmp_path / "root"))
  assert off["path"] is None and off["cache_hits"] == 0 and off["compiled"] >= 1


def test_count_compiles_in_process():
  compile_cache.disable()
  with compile_cache.count_compiles() as counts:
    jax.jit(lambda x: x * 7 + 1)(jax.numpy.arange(13.0)).block_until_ready()
  assert counts["programs"] >= 1 and counts["cache_hits"] == 0 and counts["compiled"] == counts["programs"]
  before = dict(counts)
  jax.jit(lambda x: x * 9 + 2)(jax.numpy.arange(13.0)).block_until_ready()
  assert counts == before  # listeners are removed at the end of the block
