"""The shard index: `index-{split}.json` next to a split's TFRecord shards, written by preprocessing.

Owns the index file (its name, content, `write`, `read`) and its in-memory form (`ShardEntry`, one per
shard; `ShardIndex`, a split's entries in shard-name order). With it, `lipsync_jax.data.tfrecord.ClipRecords`
serves records without scanning the shards (on gs:// a scan costs one network read per record) and the
input pipeline knows every clip's length without reading a record.

Content (JSON, columnar to stay compact: ~40 bytes per clip):
  format_version  FORMAT_VERSION
  split           the split's name
  num_records     total records of the split
  shards          per shard, in shard-name order:
    name          shard file name ({split}-xxxxx-of-nnnnn.tfrecord)
    size          shard size in bytes when indexed (a different size later means the shard was rewritten)
    offset        per record, in file order: byte offset of the record's payload (after the 12-byte header)
    length        payload length in bytes
    clip_id       the record's clip_id
    num_frames    frames of the clip
    mel_steps     mel columns of the clip
    fps           frame rate of the clip's frames

Writers: data_pipelines.preprocess (its shard sink emits one `ShardEntry` per shard, built from what
`tfrecord.write_tfrecord` returns, without re-reading) and lipsync_jax.data.demo. For shards made before the
index existed (or rewritten by hand), `python -m lipsync_jax.data.reindex SHARDS_DIR [--split S]` reads
every record once and writes the index (lipsync_jax.data.reindex; tfrecord.scan_shard).
The file is written atomically (dataset_info.write_text_atomically: local temp + rename, one object write on
gs://) through lipsync_jax.fs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence

import numpy as np

from lipsync_jax import fs
from lipsync_jax.data import dataset_info, records

FORMAT_VERSION = 1
_COLUMNS = ("offset", "length", "clip_id", "num_frames", "mel_steps", "fps")


class ShardIndexError(ValueError):
  """An index file that cannot be used (unknown version, inconsistent columns)."""


INDEX_PATTERN = re.compile(r"^index-(?P<split>[a-z]+)\.json$")


def index_name(split: str) -> str:
  """The index file's name for `split`: index-{split}.json."""
  return f"index-{split}.json"


def index_path(shards_dir: str, split: str) -> str:
  return os.path.join(shards_dir, index_name(split))


@dataclasses.dataclass(frozen=True, eq=False)
class ShardEntry:
  """One shard's index: its name and size, and per record (file order) where the payload is and what clip
  it holds. Arrays are int64 (fps float64); `clip_id` a tuple of str."""

  name: str
  size: int
  offset: np.ndarray
  length: np.ndarray
  clip_id: tuple[str, ...]
  num_frames: np.ndarray
  mel_steps: np.ndarray
  fps: np.ndarray

  def __post_init__(self):
    for key, dtype in (
      ("offset", np.int64),
      ("length", np.int64),
      ("num_frames", np.int64),
      ("mel_steps", np.int64),
      ("fps", np.float64),
    ):
      object.__setattr__(self, key, np.asarray(getattr(self, key), dtype).reshape(-1))
    object.__setattr__(self, "clip_id", tuple(str(c) for c in self.clip_id))
    counts = {key: len(getattr(self, key)) for key in _COLUMNS}
    if len(set(counts.values())) != 1:
      raise ShardIndexError(f"shard {self.name}: index columns have different lengths {counts}")

  def __len__(self) -> int:
    return len(self.offset)

  def to_json(self) -> dict:
    return dict(
      name=self.name,
      size=int(self.size),
      offset=self.offset.tolist(),
      length=self.length.tolist(),
      clip_id=list(self.clip_id),
      num_frames=self.num_frames.tolist(),
      mel_steps=self.mel_steps.tolist(),
      fps=self.fps.tolist(),
    )

  @classmethod
  def from_json(cls, data: dict) -> ShardEntry:
    return cls(**{key: data[key] for key in ("name", "size") + _COLUMNS})


def make_entry(
  name: str, size: int, offsets: Sequence[int], lengths: Sequence[int], serialized_records: Sequence[bytes]
) -> ShardEntry:
  """The entry of a shard just written: `offsets`, `lengths` as `tfrecord.write_tfrecord` returned them,
  the per-clip fields read from the records themselves (no file access)."""
  summaries = [records.summarize(r) for r in serialized_records]
  return ShardEntry(
    name=name,
    size=int(size),
    offset=offsets,
    length=lengths,
    clip_id=[s.clip_id for s in summaries],
    num_frames=[s.num_frames for s in summaries],
    mel_steps=[s.mel_steps for s in summaries],
    fps=[s.fps for s in summaries],
  )


@dataclasses.dataclass(frozen=True, eq=False)
class ShardIndex:
  """A split's index: its shards' entries in shard-name order. Per-record arrays concatenate the shards."""

  split: str
  shards: tuple[ShardEntry, ...]

  def __len__(self) -> int:
    return sum(len(s) for s in self.shards)

  @property
  def names(self) -> list[str]:
    return [s.name for s in self.shards]

  def column(self, key: str) -> np.ndarray:
    """Per-record `key` (one of offset, length, num_frames, mel_steps, fps) over all shards, in order."""
    if key == "clip_id":
      return np.asarray([c for s in self.shards for c in s.clip_id], dtype=object)
    dtype = np.float64 if key == "fps" else np.int64
    return np.concatenate([getattr(s, key) for s in self.shards] + [np.zeros(0, dtype)])

  def to_json(self) -> dict:
    return dict(
      format_version=FORMAT_VERSION,
      split=self.split,
      num_records=len(self),
      shards=[s.to_json() for s in self.shards],
    )


def write(shards_dir: str, split: str, entries: Sequence[ShardEntry]) -> str:
  """Writes shards_dir/index-{split}.json (entries sorted by shard name) atomically; returns its path."""
  index = ShardIndex(split, tuple(sorted(entries, key=lambda e: e.name)))
  for entry in index.shards:
    match = records.SHARD_PATTERN.match(entry.name)
    if not match or match["split"] != split:
      raise ValueError(f"index of split '{split}' got shard {entry.name!r}, not a '{split}' shard name")
  path = index_path(shards_dir, split)
  # Compact separators: the file is read by programs, and a large split has ~10^5 clips.
  dataset_info.write_text_atomically(path, json.dumps(index.to_json(), separators=(",", ":")) + "\n")
  return path


def read(shards_dir: str, split: str) -> ShardIndex | None:
  """The index of `split` in `shards_dir`, or None when there is none. A file of another format version or
  with inconsistent columns raises ShardIndexError naming it and what to do."""
  path = index_path(shards_dir, split)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    data = json.load(f)
  fix = (
    "Re-run `python -m data_pipelines.preprocess` for this split, or re-index the shards as they are "
    f"with `python -m lipsync_jax.data.reindex {shards_dir} --split {split}`."
  )
  if data.get("format_version") != FORMAT_VERSION:
    raise ShardIndexError(
      f"{path} has format_version {data.get('format_version')!r}; this lipsync_jax reads version "
      f"{FORMAT_VERSION}. {fix}"
    )
  try:
    index = ShardIndex(data["split"], tuple(ShardEntry.from_json(s) for s in data["shards"]))
  except (KeyError, TypeError, ShardIndexError) as e:
    raise ShardIndexError(f"{path} is not a valid shard index ({type(e).__name__}: {e}). {fix}") from e
  if index.split != split or len(index) != data.get("num_records"):
    raise ShardIndexError(
      f"{path} describes split {index.split!r} with {len(index)} records (header says "
      f"{data.get('num_records')}); expected split {split!r}. {fix}"
    )
  return index
