"""The TFRecord clip schema: round trip, raw vs JPEG frames, deterministic bytes, the index summary, and
clear errors on foreign records."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from lipsync_jax.data import records


def _clip(num_frames=20, size=32, mel_steps=64, seed=0):
  rng = np.random.default_rng(seed)
  frames = np.zeros((num_frames, size, size, 3), np.uint8)
  for k in range(num_frames):
    frames[k] = 8 * k  # frame k carries its index, survives JPEG within a few levels
  mel = rng.normal(size=(80, mel_steps)).astype(np.float32)
  boxes = rng.integers(0, 500, size=(num_frames, 4))
  return records.Clip("spk/00001", "val", frames, mel, boxes, fps=25.0, source="/x/spk/00001.mp4")


@pytest.mark.parametrize("frame_format", ["jpeg", "raw"])
def test_round_trip(frame_format):
  clip = _clip()
  parsed = records.parse_example(records.serialize_clip(clip, frame_format=frame_format))
  assert (parsed.clip_id, parsed.split, parsed.source) == ("spk/00001", "val", "/x/spk/00001.mp4")
  assert parsed.num_frames == 20 and parsed.img_size == 32 and parsed.fps == 25.0
  np.testing.assert_array_equal(parsed.mel, clip.mel)
  np.testing.assert_array_equal(parsed.boxes, clip.boxes)
  got = parsed.frames([3, 7])
  assert got.shape == (2, 32, 32, 3) and got.dtype == np.uint8
  tolerance = 0 if frame_format == "raw" else 3
  assert np.abs(got.astype(int) - clip.frames[[3, 7]].astype(int)).max() <= tolerance


def test_bad_inputs_are_clear_errors():
  with pytest.raises(ValueError, match="not a tf.train.Example|not a lipsync_jax clip"):
    records.parse_example(b"\x00garbage\xff" * 10)
  clip = _clip()
  with pytest.raises(ValueError, match="mel must be"):
    records.serialize_clip(records.Clip("a", "train", clip.frames, clip.mel.T, clip.boxes))
  with pytest.raises(ValueError, match="frame_format"):
    records.serialize_clip(clip, frame_format="png")


def test_shard_names_match_pattern():
  name = records.shard_name("train", 3, 12)
  assert name == "train-00003-of-00012.tfrecord"
  match = records.SHARD_PATTERN.match(name)
  assert match and match["split"] == "train" and int(match["count"]) == 12


def test_serialization_is_deterministic_across_processes():
  """The Example's feature map is written sorted by key: the same clip gives the same bytes in any process
  (string hashing is randomised per process; unsorted map order made shards differ between runs)."""
  script = (
    "import hashlib, sys; sys.path.insert(0, 'tests'); import test_records as t; "
    "from lipsync_jax.data import records; "
    "print(hashlib.sha256(records.serialize_clip(t._clip(), 'raw')).hexdigest())"
  )
  digests = {
    subprocess.run(
      [sys.executable, "-c", script],
      env=dict(os.environ, PYTHONHASHSEED=str(seed)),
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
    for seed in (1, 2, 3)
  }
  assert digests == {hashlib.sha256(records.serialize_clip(_clip(), "raw")).hexdigest()}


def test_summarize_reads_the_index_fields():
  clip = _clip(num_frames=12, mel_steps=40)
  assert records.summarize(records.serialize_clip(clip)) == ("spk/00001", 12, 40, 25.0)
  with pytest.raises(ValueError, match="not a tf.train.Example|not a lipsync_jax clip"):
    records.summarize(b"\x00garbage\xff" * 10)
