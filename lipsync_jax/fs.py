"""The one file-system layer: local paths and remote ones (gs://...) through etils.epath.

Owns how the project touches files outside the decoders: `path(p)` (an epath.Path), `exists`, `isdir`,
`isfile`, `listdir`, `glob`, `open`, `makedirs`, `absolute(p)` (a local path made absolute, a remote one
unchanged: orbax refuses relative paths) and `local_copy(p)`, a context manager that gives decoders and
`torch.load` a local file (a no-op for local paths; a temporary copy, removed afterwards, for remote ones).
"""

from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from etils import epath

PathLike = str | os.PathLike


def is_remote(p: PathLike) -> bool:
  """True for URLs such as gs://bucket/x (anything with a scheme), False for local paths."""
  return "://" in os.fspath(p)


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path (local or remote)."""
  return epath.Path(os.fspath(p))


def absolute(p: PathLike) -> str:
  """A local path made absolute; a remote path (gs://...) returned unchanged."""
  p = os.fspath(p)
  return p if is_remote(p) else os.path.abspath(p)


def exists(p: PathLike) -> bool:
  return path(p).exists()


def isdir(p: PathLike) -> bool:
  return path(p).is_dir()


def isfile(p: PathLike) -> bool:
  return path(p).is_file()


def listdir(p: PathLike) -> list[str]:
  """The names (not paths) in directory `p`, sorted."""
  return sorted(child.name for child in path(p).iterdir())


def glob(pattern: PathLike) -> list[str]:
  """Paths matching `pattern`, sorted; `**` matches any number of directories (local and remote)."""
  pattern = os.fspath(pattern)
  if not is_remote(pattern):
    return sorted(_glob.glob(pattern, recursive=True))
  parts = pattern.split("/")
  fixed = next(i for i, part in enumerate(parts) if any(c in part for c in "*?[") or i == len(parts) - 1)
  root, rest = "/".join(parts[:fixed]), "/".join(parts[fixed:])
  return sorted(os.fspath(p) for p in path(root).glob(rest))


def open(p: PathLike, mode: str = "r", encoding: str | None = None) -> IO[Any]:  # noqa: A001 - fs.open
  """Opens a local or remote file (text modes default to UTF-8)."""
  if "b" not in mode and encoding is None:
    encoding = "utf-8"
  return path(p).open(mode, encoding=encoding) if encoding else path(p).open(mode)


def makedirs(p: PathLike) -> None:
  """Creates directory `p` and its parents (no error if it exists)."""
  path(p).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def local_copy(p: PathLike) -> Iterator[str]:
  """Yields a local path with the contents of `p`: `p` itself when local, else a temporary copy."""
  p = os.fspath(p)
  if not is_remote(p):
    yield p
    return
  directory = tempfile.mkdtemp(prefix="lipsync_jax_")
  local = os.path.join(directory, path(p).name or "file")
  try:
    with path(p).open("rb") as src, builtins.open(local, "wb") as dst:
      shutil.copyfileobj(src, dst, length=16 << 20)
    yield local
  finally:
    shutil.rmtree(directory, ignore_errors=True)


# The project's local cache root (the demo corpus, jax's compilation cache): $LIPSYNC_JAX_CACHE, else
# ~/.cache/lipsync_jax.
CACHE_ENV = "LIPSYNC_JAX_CACHE"


def cache_root(cache_dir: str | None = None) -> str:
  """`cache_dir` if given, else $LIPSYNC_JAX_CACHE, else ~/.cache/lipsync_jax (user-expanded)."""
  return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/lipsync_jax")
