"""TFRecord framing: writing shards and random access over them (one read per record), local or gs://.

Owns the TFRecord file format as lipsync_jax reads it: `write_tfrecord` (returns where each record's
payload is, for the shard index), `index_tfrecord` (scan a shard's framing; length CRCs checked),
`scan_shard` (a shard's lipsync_jax.data.shard_index entry from its bytes), `find_shards` (a split's complete
shard set) and `ClipRecords`, the grain random-access source over all shards of a split. Paths go through
lipsync_jax.fs: a shards directory may be local or gs://.

Random access over TFRecord, no conversion. A global shuffle of clips needs random access, and grain's own
`grain.experimental.TFRecordIterDataset` is sequential (one file, no shuffle, no CRC checks). Clip records
are large (a 5 s clip of 96 px JPEG crops is ~0.9 MB), so a table of (shard, offset, length) per record is
tiny. `ClipRecords.for_split` takes it from the shard index preprocessing writes (index-{split}.json, see
lipsync_jax.data.shard_index: no scan, one size check per shard, and per-record num_frames / mel_steps / fps
for the input pipeline). Without an index it scans the framing of every shard (checking each length CRC;
~5 us per record from a local page cache, 0.5 s for 100k clips; over gs:// far slower, so it warns). Record
`i` is then one read: `os.pread` on a cached descriptor for local files, one ranged GET
(`lipsync_jax.fs.read_range`) for remote ones. Converting to ArrayRecord would give the same random access
but doubles the storage and adds a second copy to keep in sync; the shards stay the one format that
preprocessing writes.

Errors: a shard whose framing is broken (truncated, bad length CRC, not a TFRecord) fails while scanning
(`ShardError`), naming the shard and byte offset; a shard whose size differs from its index entry (rewritten
after indexing) fails when the source is built (`ShardError`, naming the shard); a missing or partial shard
set fails in `find_shards`. Data CRCs are checked only with `verify_data_crc=True` (`CorruptRecordError` on
a mismatch): crc32c with crcmod costs ~1.2 ms per record, more than the whole per-sample budget.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import crcmod.predefined
import numpy as np

from lipsync_jax import fs
from lipsync_jax.data import records, shard_index

log = logging.getLogger(__name__)

_HEADER_BYTES = 12  # uint64 length + uint32 masked crc32c of the length
_FOOTER_BYTES = 4  # uint32 masked crc32c of the data


class ShardError(ValueError):
  """A TFRecord shard is missing, truncated, rewritten since indexing, or not a TFRecord file."""


class CorruptRecordError(ValueError):
  """A record inside a shard does not parse or decode as a lipsync_jax clip."""


_crc32c = crcmod.predefined.mkPredefinedCrcFun("crc-32c")  # C extension; the same function Beam falls back to


def _masked_crc32c(data: bytes) -> int:
  """The TFRecord format's masked CRC-32C."""
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(record: bytes) -> bytes:
  """One TFRecord record: length, masked CRC-32C of the length, data, masked CRC-32C of the data (also the
  framing of TensorBoard event files: lipsync_jax.training.summaries)."""
  length = struct.pack("<Q", len(record))
  length_crc, data_crc = struct.pack("<I", _masked_crc32c(length)), struct.pack("<I", _masked_crc32c(record))
  return length + length_crc + record + data_crc


def framed_size(lengths: Sequence[int] | np.ndarray) -> int:
  """Bytes of a TFRecord file holding payloads of `lengths` (16 bytes of framing per record)."""
  return int(np.sum(lengths, dtype=np.int64)) + (_HEADER_BYTES + _FOOTER_BYTES) * len(lengths)


def write_tfrecord(path: str, serialized_records: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray]:
  """Writes records to `path` (local or gs://) with standard TFRecord framing (length, masked CRC-32C of
  the length, data, masked CRC-32C of the data: what Beam's and TensorFlow's writers produce); returns the
  (offsets, lengths) of the payloads (int64), what the shard index stores. Written to a local file first
  (lipsync_jax.fs.staged_output): locally renamed into place, remotely uploaded as one object; a failed
  write leaves nothing at `path`."""
  offsets, lengths, position = [], [], 0
  with fs.staged_output(path) as local, open(local, "wb") as f:
    for record in serialized_records:
      offsets.append(position + _HEADER_BYTES)
      lengths.append(len(record))
      f.write(frame_record(record))
      position += _HEADER_BYTES + len(record) + _FOOTER_BYTES
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def _corrupt_shard(path: str, offset: int, record: int, what: str) -> ShardError:
  return ShardError(
    f"TFRecord shard {path} is corrupt at byte {offset} (record {record}): {what}. Re-run "
    "`python -m data_pipelines.preprocess` for this split, or move the shard out of the directory."
  )


def _scan_framing(path: str, size: int, read: Callable[[int, int], bytes]) -> tuple[np.ndarray, np.ndarray]:
  """(offsets, lengths) of every payload of a shard of `size` bytes, read(n, offset) giving its bytes."""
  offsets, lengths = [], []
  position = 0
  while position < size:
    header = read(_HEADER_BYTES, position)
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
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def index_tfrecord(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(offsets, lengths) of every record's payload in one TFRecord file; length CRCs are checked.

  Local: one `os.pread` per record header. Remote: the headers are read through one buffered file (fsspec
  fetches it in large blocks), i.e. about the whole shard's bytes: use the shard index instead."""
  size = fs.size(path)
  if not fs.is_remote(path):
    fd = os.open(path, os.O_RDONLY)
    try:
      return _scan_framing(path, size, lambda n, offset: os.pread(fd, n, offset))
    finally:
      os.close(fd)
  with fs.open(path, "rb") as f:

    def read(n: int, offset: int) -> bytes:
      f.seek(offset)
      return f.read(n)

    return _scan_framing(path, size, read)


def scan_shard(path: str) -> shard_index.ShardEntry:
  """The shard index entry of shard `path` as it is: framing scanned, every record read and summarised
  (for shards without an index; preprocessing builds entries from what it writes instead)."""
  offsets, lengths = index_tfrecord(path)
  with fs.open(path, "rb") as f:
    payloads = []
    for offset, length in zip(offsets.tolist(), lengths.tolist()):
      f.seek(offset)
      payloads.append(f.read(length))
  try:
    return shard_index.make_entry(fs.path(path).name, fs.size(path), offsets, lengths, payloads)
  except ValueError as e:
    raise ShardError(f"TFRecord shard {path} holds a record that is not a lipsync_jax clip: {e}") from e


def find_shards(shards_dir: str, split: str) -> list[str]:
  """Sorted shard paths `{split}-xxxxx-of-nnnnn.tfrecord` in `shards_dir` (local or gs://); a clear error
  if none/partial."""
  hint = (
    "Create them with `python -m data_pipelines.preprocess --input 'VIDEOS/**/*.mp4' --out "
    f"{shards_dir}` (or use lipsync_jax.data.demo.ensure_demo_shards() for the demo corpus)."
  )
  if not fs.isdir(shards_dir):
    raise FileNotFoundError(f"shards directory {shards_dir!r} does not exist. {hint}")
  found = {}
  for name in fs.listdir(shards_dir):
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
  """grain random-access source over TFRecord shards: record `i` -> RawClip (one read).

  Build it with `ClipRecords.for_split(shards_dir, split)`: from the split's shard index when there is one
  (no scan; `fs.size` per shard checks none was rewritten since), else by scanning each shard's framing in
  parallel threads. Per-record arrays in record order (shard by shard, file order): `num_frames`,
  `mel_steps` (int64), `fps` (float64) and `clip_ids` (tuple of str), or None when built without an index.
  Picklable (file descriptors are reopened lazily in each process) for mp_prefetch; thread-safe.
  """

  def __init__(
    self,
    paths: Sequence[str],
    verify_data_crc: bool = False,
    index_threads: int = 16,
    index: shard_index.ShardIndex | None = None,
  ):
    self._paths = [str(p) for p in paths]
    self._verify_data_crc = verify_data_crc
    self._remote = [fs.is_remote(p) for p in self._paths]
    threads = max(1, min(index_threads, len(self._paths)))
    if index is not None:
      self._check_index(index, threads)
      per_shard = [(entry.offset, entry.length) for entry in index.shards]
      self.num_frames: np.ndarray | None = index.column("num_frames")
      self.mel_steps: np.ndarray | None = index.column("mel_steps")
      self.fps: np.ndarray | None = index.column("fps")
      self.clip_ids: tuple[str, ...] | None = tuple(c for entry in index.shards for c in entry.clip_id)
    else:
      with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        per_shard = list(pool.map(index_tfrecord, self._paths))
      self.num_frames = self.mel_steps = self.fps = self.clip_ids = None
    self._shard = np.concatenate(
      [np.full(len(o), i, np.int32) for i, (o, _) in enumerate(per_shard)] + [np.zeros(0, np.int32)]
    )
    self._record_in_shard = np.concatenate(
      [np.arange(len(o), dtype=np.int64) for o, _ in per_shard] + [np.zeros(0, np.int64)]
    )
    self._offset = np.concatenate([o for o, _ in per_shard] + [np.zeros(0, np.int64)])
    self._length = np.concatenate([n for _, n in per_shard] + [np.zeros(0, np.int64)])
    self._init_files()

  @classmethod
  def for_split(cls, shards_dir: str, split: str, verify_data_crc: bool = False) -> ClipRecords:
    """The records of `split` in `shards_dir` (local or gs://): from index-{split}.json when present, else
    by scanning the shards (a warning when they are remote: one network read per record)."""
    paths = find_shards(shards_dir, split)
    index = shard_index.read(shards_dir, split)
    if index is None and fs.is_remote(shards_dir):
      log.warning(
        "%s has no %s: scanning every record header of %d shards over the network (slow). Re-run "
        "`python -m data_pipelines.preprocess` for this split, or index the shards once with "
        "`python -m lipsync_jax.data.reindex %s --split %s`.",
        shards_dir,
        shard_index.index_name(split),
        len(paths),
        shards_dir,
        split,
      )
    return cls(paths, verify_data_crc=verify_data_crc, index=index)

  def _check_index(self, index: shard_index.ShardIndex, threads: int) -> None:
    """The index describes exactly these shards, at their current sizes (else ShardError: re-run)."""
    directory = os.path.dirname(self._paths[0]) if self._paths else "."
    fix = (
      "Re-run `python -m data_pipelines.preprocess` for this split (or, if the shards are right as they "
      f"are, re-index them: `python -m lipsync_jax.data.reindex {directory} --split {index.split}`)."
    )
    names = [fs.path(p).name for p in self._paths]
    if names != index.names:
      raise ShardError(
        f"{shard_index.index_path(directory, index.split)} lists shards {index.names[:4]}... "
        f"({len(index.names)}) but the directory holds {names[:4]}... ({len(names)}): the shards were "
        f"rewritten after the index was written. {fix}"
      )
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      sizes = list(pool.map(fs.size, self._paths))
    for path, size, entry in zip(self._paths, sizes, index.shards):
      end = int(entry.offset[-1] + entry.length[-1] + _FOOTER_BYTES) if len(entry) else 0
      if size != entry.size or end != entry.size:
        raise ShardError(
          f"TFRecord shard {path} is {size} bytes but its index entry says {entry.size} (records end at "
          f"byte {end}): the shard was rewritten after the index was written. {fix}"
        )

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
    indexed = "indexed" if self.num_frames is not None else "scanned"
    return f"ClipRecords({len(self._paths)} shards, {len(self)} records, {indexed})"

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
    if self._remote[shard]:  # one ranged GET; stateless, so thread-safe
      data = fs.read_range(self._paths[shard], offset, length + extra)
    else:  # the local fast path: pread on a descriptor opened once per shard and process
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
