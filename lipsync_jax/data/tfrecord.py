"""TFRecord framing: writing shards and a random-access index over them (one `pread` per record).

Owns the TFRecord file format as lipsync_jax reads it: `write_tfrecord`, `index_tfrecord` (length CRCs
checked), `find_shards` (a split's complete shard set), and `ClipRecords`, the grain random-access source
over all shards of a split.

Random access over TFRecord, no conversion. A global shuffle of clips needs random access, and grain's own
`grain.experimental.TFRecordIterDataset` is sequential (one file, no shuffle, no CRC checks). Clip records
are large (a 5 s clip of 96 px JPEG crops is ~0.9 MB), so an index of (shard, offset, length) per record is
tiny (20 bytes per clip) and costs one 12-byte header read per record to build: `ClipRecords` scans the
TFRecord framing of every shard once (checking each length CRC; ~5 us per record from the page cache,
0.5 s for 100k clips) and then serves record `i` with a single `os.pread`. Converting to ArrayRecord would
give the same random access but doubles the storage and adds a second copy to keep in sync; the shards
stay the one format that preprocessing writes. Files must be on a local or FUSE-mounted file system (e.g.
gcsfuse on Cloud TPU VMs).

Errors: a shard whose framing is broken (truncated, bad length CRC, not a TFRecord) fails while indexing
(`ShardError`), naming the shard and byte offset; a missing or partial shard set fails in `find_shards`.
Data CRCs are checked only with `verify_data_crc=True` (`CorruptRecordError` on a mismatch): crc32c with
crcmod costs ~1.2 ms per record, more than the whole per-sample budget.
"""

from __future__ import annotations

import concurrent.futures
import os
import struct
import threading
from collections.abc import Sequence
from typing import NamedTuple

import crcmod.predefined
import numpy as np

from lipsync_jax.data import records

_HEADER_BYTES = 12  # uint64 length + uint32 masked crc32c of the length
_FOOTER_BYTES = 4  # uint32 masked crc32c of the data


class ShardError(ValueError):
  """A TFRecord shard is missing, truncated or not a TFRecord file."""


class CorruptRecordError(ValueError):
  """A record inside a shard does not parse or decode as a lipsync_jax clip."""


_crc32c = crcmod.predefined.mkPredefinedCrcFun("crc-32c")  # C extension; the same function Beam falls back to


def _masked_crc32c(data: bytes) -> int:
  """The TFRecord format's masked CRC-32C."""
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecord(path: str, serialized_records: Sequence[bytes]) -> str:
  """Writes records to `path` with standard TFRecord framing (length, masked CRC-32C of the length, data,
  masked CRC-32C of the data: what Beam's and TensorFlow's writers produce); temp name, then rename."""
  tmp_path = f"{path}.tmp-{os.getpid()}"
  with open(tmp_path, "wb") as f:
    for record in serialized_records:
      length = struct.pack("<Q", len(record))
      f.write(
        length
        + struct.pack("<I", _masked_crc32c(length))
        + record
        + struct.pack("<I", _masked_crc32c(record))
      )
  os.replace(tmp_path, path)
  return path


def _corrupt_shard(path: str, offset: int, record: int, what: str) -> ShardError:
  return ShardError(
    f"TFRecord shard {path} is corrupt at byte {offset} (record {record}): {what}. Re-run "
    "`python -m data_pipelines.preprocess` for this split, or move the shard out of the directory."
  )


def index_tfrecord(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(offsets, lengths) of every record's payload in one TFRecord file; length CRCs are checked."""
  offsets, lengths = [], []
  size = os.path.getsize(path)
  fd = os.open(path, os.O_RDONLY)
  try:
    position = 0
    while position < size:
      header = os.pread(fd, _HEADER_BYTES, position)
      if len(header) != _HEADER_BYTES:
        raise _corrupt_shard(path, position, len(offsets), f"truncated record header ({len(header)} bytes)")
      length, length_crc = struct.unpack("<QI", header)
      if _masked_crc32c(header[:8]) != length_crc:
        raise _corrupt_shard(path, position, len(offsets), "length checksum mismatch (not a TFRecord file?)")
      end = position + _HEADER_BYTES + length + _FOOTER_BYTES
      if end > size:
        raise _corrupt_shard(
          path,
          position,
          len(offsets),
          f"record of {length} bytes runs past the end of the file ({size} bytes)",
        )
      offsets.append(position + _HEADER_BYTES)
      lengths.append(length)
      position = end
  finally:
    os.close(fd)
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def find_shards(shards_dir: str, split: str) -> list[str]:
  """Sorted shard paths `{split}-xxxxx-of-nnnnn.tfrecord` in `shards_dir`; a clear error if none/partial."""
  hint = (
    "Create them with `python -m data_pipelines.preprocess --input 'VIDEOS/**/*.mp4' --out "
    f"{shards_dir}` (or use lipsync_jax.data.demo.ensure_demo_shards() for the demo corpus)."
  )
  if not os.path.isdir(shards_dir):
    raise FileNotFoundError(f"shards directory {shards_dir!r} does not exist. {hint}")
  found = {}
  for name in os.listdir(shards_dir):
    match = records.SHARD_PATTERN.match(name)
    if match and match["split"] == split:
      found[int(match["index"])] = (name, int(match["count"]))
  if not found:
    raise FileNotFoundError(
      f"no '{split}' shards ({split}-xxxxx-of-nnnnn.tfrecord) in {shards_dir!r}. {hint}"
    )
  counts = {count for _, count in found.values()}
  expected = max(counts)
  missing = sorted(set(range(expected)) - set(found))
  if missing or len(counts) > 1:
    raise ShardError(
      f"split '{split}' in {shards_dir!r} is incomplete: {len(found)} shards present, "
      f"'of' counts {sorted(counts)}, missing indices {missing[:10]}. Re-run preprocessing "
      "into an empty directory."
    )
  return [os.path.join(shards_dir, found[i][0]) for i in sorted(found)]


class RawClip(NamedTuple):
  """One undecoded record and where it came from (for error messages)."""

  data: bytes
  location: str


class ClipRecords:
  """grain random-access source over TFRecord shards: record `i` -> RawClip (one `os.pread`).

  The index (shard, payload offset, payload length) is built once by scanning the framing of each shard in
  parallel threads. Picklable (file descriptors are reopened lazily in each process) for mp_prefetch.
  """

  def __init__(self, paths: Sequence[str], verify_data_crc: bool = False, index_threads: int = 16):
    self._paths = [str(p) for p in paths]
    self._verify_data_crc = verify_data_crc
    with concurrent.futures.ThreadPoolExecutor(max(1, min(index_threads, len(self._paths)))) as pool:
      per_shard = list(pool.map(index_tfrecord, self._paths))
    self._shard = np.concatenate(
      [np.full(len(o), i, np.int32) for i, (o, _) in enumerate(per_shard)] + [np.zeros(0, np.int32)]
    )
    self._record_in_shard = np.concatenate(
      [np.arange(len(o), dtype=np.int64) for o, _ in per_shard] + [np.zeros(0, np.int64)]
    )
    self._offset = np.concatenate([o for o, _ in per_shard] + [np.zeros(0, np.int64)])
    self._length = np.concatenate([n for _, n in per_shard] + [np.zeros(0, np.int64)])
    self._init_files()

  def _init_files(self):
    self._fds: dict[int, int] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_fds"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_files()

  def __del__(self, _close=os.close):
    for fd in getattr(self, "_fds", {}).values():
      try:
        _close(fd)
      except OSError:
        pass

  def __len__(self) -> int:
    return len(self._offset)

  def __repr__(self) -> str:
    return f"ClipRecords({len(self._paths)} shards, {len(self)} records)"

  @property
  def paths(self) -> list[str]:
    return list(self._paths)

  def location(self, index: int) -> str:
    shard = int(self._shard[index])
    return (
      f"shard {self._paths[shard]} record {int(self._record_in_shard[index])} "
      f"(byte {int(self._offset[index]) - _HEADER_BYTES})"
    )

  def _fd(self, shard: int) -> int:
    fd = self._fds.get(shard)
    if fd is None:
      with self._lock:
        fd = self._fds.get(shard)
        if fd is None:
          fd = self._fds[shard] = os.open(self._paths[shard], os.O_RDONLY)
    return fd

  def __getitem__(self, index: int) -> RawClip:
    index = int(index)
    shard, offset, length = int(self._shard[index]), int(self._offset[index]), int(self._length[index])
    extra = _FOOTER_BYTES if self._verify_data_crc else 0
    data = os.pread(self._fd(shard), length + extra, offset)
    if len(data) != length + extra:
      raise CorruptRecordError(
        f"{self.location(index)}: short read ({len(data)} of {length + extra} bytes);"
        " was the shard modified after indexing?"
      )
    if self._verify_data_crc:
      data, (crc,) = data[:length], struct.unpack("<I", data[length:])
      if _masked_crc32c(data) != crc:
        raise CorruptRecordError(
          f"{self.location(index)}: data checksum mismatch. Re-run preprocessing for "
          "this split, or move the shard out of the directory."
        )
    return RawClip(data, self.location(index))
