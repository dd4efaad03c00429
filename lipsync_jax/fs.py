"""The one file-system layer: local paths and remote ones (gs://...) through etils.epath and fsspec/gcsfs.

Owns how the project touches files outside the decoders: `path(p)` (an epath.Path), `exists`, `isdir`,
`isfile`, `listdir`, `glob`, `open`, `makedirs`, `size`, `read_range` (one ranged read: a record of a shard),
`remove`, `rmtree`, `move` (files and directories; across local and remote), `copy`, `absolute(p)` (a local
path made absolute, a remote one unchanged: orbax refuses relative paths), `local_copy(p)` (gives decoders
and `torch.load` a local file: a no-op for local paths, a temporary copy for remote ones) and
`staged_output(p)` (a local file for encoders to write; uploaded to `p` when the block succeeds).

Remote paths: gs:// (and any fsspec protocol) go through **gcsfs**, for us and for orbax alike. etils.epath
(which orbax uses for its directories and metadata) would pick TensorFlow's GCS file system whenever
TensorFlow is importable (clu needs TensorFlow); `configure_remote()` (run when lipsync_jax is imported)
sets `EPATH_USE_TF=false` unless the user set it, so every gs:// access shares one client, one set of
credentials (Application Default Credentials; `STORAGE_EMULATOR_HOST` for an emulator) and one retry
policy. gcsfs's listings cache is off: other processes and orbax's tensorstore write behind its back, and
a stale listing would hide a new checkpoint step. Orbax writes arrays through tensorstore's own GCS driver
(`TENSORSTORE_GCS_HTTP_URL` for an emulator; tests/conftest.py's `gcs_bucket` fixture sets both).
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

import fsspec
from etils import epath

PathLike = str | os.PathLike


def configure_remote() -> None:
  """gs:// through gcsfs everywhere (epath included) with fresh listings; see the module docstring."""
  os.environ.setdefault("EPATH_USE_TF", "false")
  fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)


configure_remote()


def _remote_fs(p: str) -> tuple[fsspec.AbstractFileSystem, str]:
  filesystem, stripped = fsspec.core.url_to_fs(p)
  return filesystem, stripped


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
  filesystem, stripped = _remote_fs(pattern)
  return sorted(filesystem.unstrip_protocol(p) for p in filesystem.glob(stripped))


def open(p: PathLike, mode: str = "r", encoding: str | None = None) -> IO[Any]:  # noqa: A001 - fs.open
  """Opens a local or remote file (text modes default to UTF-8)."""
  if "b" not in mode and encoding is None:
    encoding = "utf-8"
  return path(p).open(mode, encoding=encoding) if encoding else path(p).open(mode)


def makedirs(p: PathLike) -> None:
  """Creates directory `p` and its parents (no error if it exists)."""
  path(p).mkdir(parents=True, exist_ok=True)


def size(p: PathLike) -> int:
  """Size of file `p` in bytes."""
  p = os.fspath(p)
  if not is_remote(p):
    return os.path.getsize(p)
  filesystem, stripped = _remote_fs(p)
  return int(filesystem.size(stripped))


def read_range(p: PathLike, offset: int, length: int) -> bytes:
  """`length` bytes of file `p` from byte `offset` (fewer at the end of the file): one ranged GET remotely."""
  p = os.fspath(p)
  if not is_remote(p):
    with builtins.open(p, "rb") as f:
      f.seek(offset)
      return f.read(length)
  filesystem, stripped = _remote_fs(p)
  return filesystem.cat_file(stripped, start=int(offset), end=int(offset) + int(length))


def remove(p: PathLike, missing_ok: bool = False) -> None:
  """Deletes file `p`."""
  path(p).unlink(missing_ok=missing_ok)


def rmtree(p: PathLike) -> None:
  """Deletes directory `p` and everything under it (no error if it does not exist)."""
  p = os.fspath(p)
  if not is_remote(p):
    shutil.rmtree(p, ignore_errors=True)
    return
  filesystem, stripped = _remote_fs(p)
  if filesystem.exists(stripped):
    filesystem.rm(stripped, recursive=True)


def copy(src: PathLike, dst: PathLike) -> None:
  """Copies file `src` to `dst` (local or remote, either way), replacing `dst`."""
  src, dst = os.fspath(src), os.fspath(dst)
  if not is_remote(src) and not is_remote(dst):
    shutil.copyfile(src, dst)
    return
  with open(src, "rb") as f_in, open(dst, "wb") as f_out:
    shutil.copyfileobj(f_in, f_out, length=16 << 20)


def move(src: PathLike, dst: PathLike) -> None:
  """Moves file or directory `src` to `dst` (which must not exist as a directory).

  Local -> local is a rename (atomic on one file system). An object store has no rename: objects are
  copied server-side, then the source is deleted (not atomic; a reader may see both for a moment).
  """
  src, dst = os.fspath(src), os.fspath(dst)
  if not is_remote(src) and not is_remote(dst):
    shutil.move(src, dst)
    return
  if is_remote(src) and is_remote(dst) and src.split("://")[0] == dst.split("://")[0]:
    filesystem, src_stripped = _remote_fs(src)
    _, dst_stripped = _remote_fs(dst)
    filesystem.mv(src_stripped, dst_stripped, recursive=isdir(src))
    return
  if isdir(src):  # across local and remote: file by file
    for name in listdir(src):
      if isdir(os.path.join(src, name)):
        makedirs(os.path.join(dst, name))
      move(os.path.join(src, name), os.path.join(dst, name))
    rmtree(src)
    return
  copy(src, dst)
  remove(src)


@contextlib.contextmanager
def staged_output(p: PathLike) -> Iterator[str]:
  """Yields a local path for a writer that needs a real file (video encoders); when the block succeeds the
  file becomes `p` (local: renamed into place; remote: uploaded), else it is removed: a failed write never
  leaves a half-written `p`. The local name keeps `p`'s extension (encoders pick the container by it)."""
  p = os.fspath(p)
  name = path(p).name or "file"
  if is_remote(p):
    directory = tempfile.mkdtemp(prefix="lipsync_jax_out_")
  else:
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    directory = tempfile.mkdtemp(prefix=".lipsync_jax_out_", dir=os.path.dirname(os.path.abspath(p)))
  local = os.path.join(directory, name)
  try:
    yield local
    if is_remote(p):
      copy(local, p)
    else:
      os.replace(local, p)
  finally:
    shutil.rmtree(directory, ignore_errors=True)


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
