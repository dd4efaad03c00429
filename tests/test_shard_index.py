"""The shard index (lipsync_jax.data.shard_index) and ClipRecords built from it, locally and on gs:// (the
gcs_dir fixture: a real GCS-API server on loopback): round trip, equality with a scan of the same shards, the
same bytes served either way, and clear errors for shards rewritten after indexing."""

from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest

from lipsync_jax import fs
from lipsync_jax.data import records, reindex, shard_index, tfrecord


def _clip(number: int, num_frames: int, split: str = "train") -> records.Clip:
  frames = np.full((num_frames, 16, 16, 3), number % 256, np.uint8)
  mel = np.full((80, num_frames * 80 // 25 + 1), number, np.float32)
  return records.Clip(f"spk{number % 3}/{number:03d}", split, frames, mel, np.zeros((num_frames, 4)))


def _write_split(directory: str, split: str, frames_per_clip, num_shards: int) -> list:
  """Shards of `split` in `directory` (local or gs://) and their index entries from what was written."""
  fs.makedirs(directory)
  serialized = [records.serialize_clip(_clip(i, n, split), "raw") for i, n in enumerate(frames_per_clip)]
  entries = []
  for shard in range(num_shards):
    name = records.shard_name(split, shard, num_shards)
    chunk = serialized[shard::num_shards]
    offsets, lengths = tfrecord.write_tfrecord(os.path.join(directory, name), chunk)
    size = fs.size(os.path.join(directory, name))
    entries.append(shard_index.make_entry(name, size, offsets, lengths, chunk))
  return entries


FRAMES = [20, 31, 17, 25, 40, 22, 18]


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "shards")
  return request.getfixturevalue("gcs_dir")


def test_index_round_trip_equals_scan_and_serves_the_same_bytes(root):
  entries = _write_split(root, "train", FRAMES, num_shards=3)
  path = shard_index.write(root, "train", entries[::-1])  # written in shard-name order whatever is given
  assert path == os.path.join(root, "index-train.json") and fs.isfile(path)
  index = shard_index.read(root, "train")
  assert index.names == [records.shard_name("train", i, 3) for i in range(3)] and len(index) == len(FRAMES)
  assert index.to_json() == shard_index.ShardIndex("train", tuple(entries)).to_json()
  assert index.to_json() == reindex.build(root, "train").to_json()  # equals a scan of the shards
  assert shard_index.read(root, "val") is None

  indexed = tfrecord.ClipRecords.for_split(root, "train")
  scanned = tfrecord.ClipRecords(tfrecord.find_shards(root, "train"))
  assert len(indexed) == len(scanned) == len(FRAMES)
  order = [i for shard in range(3) for i in range(shard, len(FRAMES), 3)]  # shard by shard, file order
  np.testing.assert_array_equal(indexed.num_frames, np.asarray(FRAMES)[order])
  np.testing.assert_array_equal(indexed.mel_steps, [n * 80 // 25 + 1 for n in np.asarray(FRAMES)[order]])
  np.testing.assert_array_equal(indexed.fps, np.full(len(FRAMES), 25.0))
  assert indexed.clip_ids == tuple(_clip(i, 1).clip_id for i in order)
  assert scanned.num_frames is None and scanned.clip_ids is None
  for i in range(len(FRAMES)):
    assert indexed[i].data == scanned[i].data and indexed[i].location == scanned[i].location
    clip = records.parse_example(indexed[i].data)
    assert (clip.clip_id, clip.num_frames) == (indexed.clip_ids[i], indexed.num_frames[i])
  # Picklable for grain's worker processes, and still serving (descriptors reopened lazily).
  copy = pickle.loads(pickle.dumps(indexed))
  assert copy[len(FRAMES) - 1].data == indexed[len(FRAMES) - 1].data
  assert tfrecord.ClipRecords.for_split(root, "train", verify_data_crc=True)[2].data == indexed[2].data


def test_rewritten_shard_fails_with_a_clear_error(root):
  entries = _write_split(root, "train", FRAMES, num_shards=2)
  shard_index.write(root, "train", entries)
  # Shard 0 rewritten after indexing (its last clip gone; shard 1 unchanged): its size no longer matches.
  _write_split(root, "train", FRAMES[:-1], num_shards=2)
  with pytest.raises(tfrecord.ShardError, match=r"train-00000-of-00002\.tfrecord is \d+ bytes but its index"):
    tfrecord.ClipRecords.for_split(root, "train")
  with pytest.raises(tfrecord.ShardError, match="Re-run `python -m data_pipelines.preprocess`"):
    tfrecord.ClipRecords.for_split(root, "train")
  # Another shard count: the index names other shards.
  for name in fs.listdir(root):
    if name.endswith(".tfrecord"):
      fs.remove(os.path.join(root, name))
  _write_split(root, "train", FRAMES, num_shards=1)
  with pytest.raises(tfrecord.ShardError, match="lists shards .* rewritten after the index"):
    tfrecord.ClipRecords.for_split(root, "train")
  # Re-indexing the shards as they are (the CLI) makes them usable again.
  assert reindex.main([root, "--split", "train"]) == [os.path.join(root, "index-train.json")]
  assert len(tfrecord.ClipRecords.for_split(root, "train")) == len(FRAMES)


def test_remote_split_without_index_is_scanned_with_a_warning(gcs_dir, caplog):
  _write_split(gcs_dir, "val", FRAMES[:3], num_shards=2)
  with caplog.at_level(logging.WARNING, logger="lipsync_jax.data.tfrecord"):
    source = tfrecord.ClipRecords.for_split(gcs_dir, "val")
  assert "has no index-val.json" in caplog.text and "reindex" in caplog.text
  assert len(source) == 3 and source.num_frames is None
  assert {records.parse_example(source[i].data).num_frames for i in range(3)} == set(FRAMES[:3])


def test_bad_index_files_are_clear_errors(tmp_path):
  root = str(tmp_path)
  entries = _write_split(root, "train", FRAMES[:2], num_shards=1)
  path = shard_index.write(root, "train", entries)
  data = json.loads(open(path).read())
  with open(path, "w") as f:
    json.dump(dict(data, format_version=99), f)
  with pytest.raises(shard_index.ShardIndexError, match="format_version 99.*reindex"):
    shard_index.read(root, "train")
  data["shards"][0]["clip_id"].pop()
  with open(path, "w") as f:
    json.dump(data, f)
  with pytest.raises(shard_index.ShardIndexError, match="different lengths"):
    shard_index.read(root, "train")
  with pytest.raises(ValueError, match="not a 'val' shard name"):
    shard_index.write(root, "val", entries)


def test_write_tfrecord_returns_payload_positions(tmp_path):
  path = str(tmp_path / "x.tfrecord")
  payloads = [b"a" * 5, b"", b"bc" * 100]
  offsets, lengths = tfrecord.write_tfrecord(path, payloads)
  np.testing.assert_array_equal(lengths, [5, 0, 200])
  np.testing.assert_array_equal(offsets, [12, 12 + 5 + 16, 12 + 5 + 16 + 16])
  assert os.path.getsize(path) == 12 + 5 + 16 + 16 + 200 + 4 and os.listdir(tmp_path) == ["x.tfrecord"]
  scan = tfrecord.index_tfrecord(path)
  np.testing.assert_array_equal(scan[0], offsets)
  np.testing.assert_array_equal(scan[1], lengths)
  data = open(path, "rb").read()
  assert [data[o : o + n] for o, n in zip(offsets, lengths)] == payloads
