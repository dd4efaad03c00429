"""JAX's persistent compilation cache: the ONE place that turns it on for the project's programs.

Owns `enable(cache_dir=None)` (a CLI calls it once, before its first jit), the cache directory rule, the off
switch, and `count_compiles()` (how many XLA programs this process compiled and how many it loaded from the
cache instead, from jax.monitoring events).

jax stores each compiled XLA executable on disk under a key made of the program, its argument shapes, the
jax / jaxlib version, the backend and the compile options; a later process that compiles the same program
with the same shapes loads it instead of compiling (the full-size generator, 2 CPU cores: XLA compile
~1.3 s -> ~0.04 s load; tracing, ~0.3 s, still runs: it makes the key). That is why batch shapes are
bucketed (lipsync_jax.inference.runner.bucket_sizes): a bounded set of shapes is shared by every clip
length. An entry is ~100 KB (the generator on CPU).

  directory  `cache_dir`, else $LIPSYNC_JAX_COMPILE_CACHE when it names a directory, else
             `<cache root>/jax_compile`, the cache root being $LIPSYNC_JAX_CACHE or ~/.cache/lipsync_jax
             (lipsync_jax.fs.cache_root). A directory given to jax itself
             (JAX_COMPILATION_CACHE_DIR / jax.config) wins.
  off        LIPSYNC_JAX_COMPILE_CACHE=0 (or off / false / no), or a CLI's --no_compile_cache
             (enable(disabled=True)).
  entries    programs that took >= MIN_COMPILE_TIME_S to compile (jax's own default is 1 s; the ~0.3 s
             programs are worth keeping too, the ~10 ms eager ops are not; jax's
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS wins when set); the directory is bounded to
             MAX_SIZE_BYTES, least recently used first out (jax's LRU cache; it needs `filelock`, without
             which the directory is unbounded).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from lipsync_jax import fs

ENV = "LIPSYNC_JAX_COMPILE_CACHE"
OFF_VALUES = ("0", "off", "false", "no")
SUBDIR = "jax_compile"
MIN_COMPILE_TIME_S = 0.2
MAX_SIZE_BYTES = 2 << 30
_JAX_MIN_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # jax's own setting wins when set
# jax.monitoring events: a compile request answered by the persistent cache; every compile request.
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # compile or cache load, each call
log = logging.getLogger(__name__)


def default_dir() -> str | None:
  """The directory enable() uses when given none: None when the env switch says off."""
  value = os.environ.get(ENV, "").strip()
  if value.lower() in OFF_VALUES:
    return None
  if value:
    return os.path.expanduser(value)
  return os.path.join(fs.cache_root(), SUBDIR)


def add_flag(parser) -> None:
  """`--no_compile_cache` on an argparse parser (the CLIs that compile: infer, evaluate)."""
  parser.add_argument(
    "--no_compile_cache",
    action="store_true",
    help="do not use jax's persistent compilation cache (default: on, in $LIPSYNC_JAX_COMPILE_CACHE or "
    "$LIPSYNC_JAX_CACHE/jax_compile or ~/.cache/lipsync_jax/jax_compile; LIPSYNC_JAX_COMPILE_CACHE=0 "
    "turns it off too)",
  )


def enable(
  cache_dir: str | None = None, *, disabled: bool = False, min_compile_time_s: float | None = None
) -> str | None:
  """Turns on jax's persistent compilation cache; returns its directory, or None when it stays off.

  Call before the first jit of the process (a program compiled earlier is not looked up). Calling again
  with another directory switches to it. `disabled` (a CLI's --no_compile_cache) leaves the cache off, as
  does LIPSYNC_JAX_COMPILE_CACHE=0 when no cache_dir is given. `min_compile_time_s`: default
  MIN_COMPILE_TIME_S, unless jax's own JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is set.
  """
  if disabled:
    return None
  preset = jax.config.jax_compilation_cache_dir
  if cache_dir is None and preset:
    path = preset  # the user configured jax directly: theirs wins
  else:
    path = os.path.expanduser(os.fspath(cache_dir)) if cache_dir is not None else default_dir()
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    log.warning("compile cache off: cannot create %s (%s); set %s to a writable directory or 0", path, e, ENV)
    return None
  if preset and preset != path:
    jax_cache.reset_cache()  # jax opens its cache once per process: let it open the new directory
  jax.config.update("jax_compilation_cache_dir", path)
  if min_compile_time_s is not None or _JAX_MIN_TIME_ENV not in os.environ:
    min_compile_time_s = MIN_COMPILE_TIME_S if min_compile_time_s is None else min_compile_time_s
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  if importlib.util.find_spec("filelock") is not None:
    jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
  return path


def disable() -> None:
  """Turns the persistent cache off again for this process (tests; programs compile from scratch)."""
  jax_cache.reset_cache()
  jax.config.update("jax_compilation_cache_dir", None)


@contextlib.contextmanager
def count_compiles() -> Iterator[dict[str, int]]:
  """Counts the XLA programs built inside the block, in any thread, into the dict it yields (live).

  `programs`: XLA compile requests (each one a compile or a cache load); `cache_hits`: those loaded from
  the persistent cache; `compiled` = programs - cache_hits (what really compiled).
  """
  counts = {"programs": 0, "cache_hits": 0, "compiled": 0}

  def on_event(event: str, **_) -> None:
    if event == _HIT_EVENT:  # recorded inside the compile request, before its duration event
      counts["cache_hits"] += 1

  def on_duration(event: str, seconds: float, **_) -> None:
    if event == _BACKEND_COMPILE_EVENT:
      counts["programs"] += 1
      counts["compiled"] = counts["programs"] - counts["cache_hits"]

  jax.monitoring.register_event_listener(on_event)
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_listener(on_event)
    jax.monitoring.unregister_event_duration_listener(on_duration)
