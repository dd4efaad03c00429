"""Tests for lipsync_jax.data.pipeline on tiny shards made here.

Clips are "indexed" (see `indexed_clip`): every pixel of frame k is k, mel column t carries t in row 0 and
the clip number in row 1, so a batch tells which clip, frames and mel columns it came from.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lipsync_jax import windows
from lipsync_jax.data import pipeline as input_pipeline
from lipsync_jax.data import records, sampling, shard_index, tfrecord

IMG = 16  # tiny crops
CLIP_FRAMES = (30, 24, 40, 20, 33, 28)  # 6 clips; mel length like real audio: int(3.2 * N) + 1


def indexed_clip(
  number: int, num_frames: int, mel_steps: int | None = None, split: str = "train", img_size: int = IMG
) -> records.Clip:
  """Frame k: all pixels = k (frames stay < 256); mel[0, t] = t, mel[1, :] = clip number."""
  frames = np.broadcast_to(
    np.arange(num_frames, dtype=np.uint8)[:, None, None, None], (num_frames, img_size, img_size, 3)
  ).copy()
  mel_steps = mel_steps or int(windows.MEL_STEPS_PER_SECOND * num_frames / windows.FPS) + 1
  mel = np.zeros((windows.NUM_MELS, mel_steps), np.float32)
  mel[0] = np.arange(mel_steps)
  mel[1] = number
  return records.Clip(f"spk/{number:03d}", split, frames, mel, np.zeros((num_frames, 4)))


def write_split(directory, split, clips, num_shards=2, frame_format="raw", index=False):
  """Shards of `clips` (clip i in shard i % num_shards); with `index`, the shard index too."""
  directory = str(directory)
  os.makedirs(directory, exist_ok=True)
  entries = []
  for shard in range(num_shards):
    name = records.shard_name(split, shard, num_shards)
    blobs = [records.serialize_clip(c, frame_format=frame_format) for c in clips[shard::num_shards]]
    offsets, lengths = tfrecord.write_tfrecord(os.path.join(directory, name), blobs)
    entries.append(
      shard_index.make_entry(name, os.path.getsize(os.path.join(directory, name)), offsets, lengths, blobs)
    )
  if index:
    shard_index.write(directory, split, entries)
  return directory


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("shards")
  write_split(directory, "train", [indexed_clip(i, n) for i, n in enumerate(CLIP_FRAMES)], num_shards=3)
  write_split(directory, "val", [indexed_clip(100 + i, 26, split="val") for i in range(3)], num_shards=1)
  return str(directory)


# Clip 2 (10 frames) has no room for a window: the global order drops it (index) or replaces it (no index).
MIXED_FRAMES = (30, 24, 10, 40, 20, 33)


@pytest.fixture(scope="module", params=["indexed", "scanned"])
def mixed_shards(request, tmp_path_factory):
  directory = tmp_path_factory.mktemp(f"mixed_{request.param}")
  clips = [indexed_clip(i, n) for i, n in enumerate(MIXED_FRAMES)]
  write_split(directory, "train", clips, num_shards=3, index=request.param == "indexed")
  write_split(directory, "val", [indexed_clip(100 + i, 26) for i in range(3)], num_shards=1)
  return str(directory)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def clip_numbers(batches):
  return np.concatenate([b["mel"][:, 1, 0, 0] for b in batches]).astype(int).tolist()


def process_rows(global_batch_size, process_count):
  per_process = global_batch_size // process_count
  return [(p * per_process, (p + 1) * per_process) for p in range(process_count)]


def assert_batches_equal(first, second):
  assert len(first) == len(second)
  for x, y in zip(first, second):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("mode", sampling.MODES)
def test_shapes_dtypes_ranges(shards_dir, mode):
  it = input_pipeline.make_train_iterator(
    shards_dir, "train", mode, global_batch_size=8, seed=0, process_index=0, process_count=2
  )
  batch = next(it)
  spec = sampling.element_spec(mode, 4, IMG)
  assert batch.keys() == spec.keys()
  for key, (shape, dtype) in spec.items():
    assert batch[key].shape == shape, key
    assert batch[key].dtype == dtype, key
  if mode == "expert":
    assert set(np.unique(batch["label"])) <= {0.0, 1.0}
    assert batch["faces"].max() < max(CLIP_FRAMES)
  else:
    assert batch["gt"].max() < max(CLIP_FRAMES)


def test_generator_windows_follow_the_spec(shards_dir):
  it = input_pipeline.make_train_iterator(
    shards_dir, "train", "generator", global_batch_size=16, seed=3, process_index=0, process_count=1
  )
  starts = []
  for batch in take(it, 6):
    for i in range(16):
      clip = int(batch["mel"][i, 1, 0, 0])
      num_frames = CLIP_FRAMES[clip]
      gt = batch["gt"][i]
      a = int(gt[0, 0, 0, 0])
      starts.append(a)
      # gt = frames a..a+4, every pixel of frame a+k equal to a+k.
      np.testing.assert_array_equal(gt, np.broadcast_to((a + np.arange(5))[:, None, None, None], gt.shape))
      assert 1 <= a <= num_frames - 5
      # inputs = [gt with the lower half zeroed | wrong window b..b+4], b != a.
      masked, wrong = batch["inputs"][i, ..., :3], batch["inputs"][i, ..., 3:]
      np.testing.assert_array_equal(masked[:, : IMG // 2], gt[:, : IMG // 2])
      assert not masked[:, IMG // 2 :].any()
      b = int(wrong[0, 0, 0, 0])
      assert b != a and 0 <= b <= num_frames - 5
      np.testing.assert_array_equal(wrong, np.broadcast_to((b + np.arange(5))[:, None, None, None], gt.shape))
      # mel = window at a: columns int(80 a / 25) .. +15, fully inside the mel.
      mel_steps = int(80 * num_frames / 25) + 1
      start = int(80 * a / 25)
      np.testing.assert_array_equal(batch["mel"][i, 0, :, 0], start + np.arange(16))
      # indiv_mels[k] = window of frame a + k - 1.
      for k in range(5):
        np.testing.assert_array_equal(
          batch["indiv_mels"][i, k, 0, :, 0], int(80 * (a + k - 1) / 25) + np.arange(16)
        )
      assert int(80 * (a + 3) / 25) + 16 <= mel_steps
  assert min(starts) == 1  # a = 0 never drawn, a = 1 is (96 draws over 6 clips of 20-40 frames)


def test_expert_label_semantics(shards_dir):
  it = input_pipeline.make_train_iterator(
    shards_dir, "train", "expert", global_batch_size=16, seed=1, process_index=0, process_count=1
  )
  labels, starts = [], []
  for batch in take(it, 8):
    for i in range(16):
      clip = int(batch["mel"][i, 1, 0, 0])
      start = int(batch["mel"][i, 0, 0, 0])
      np.testing.assert_array_equal(batch["mel"][i, 0, :, 0], start + np.arange(16))
      a = [f for f in range(CLIP_FRAMES[clip]) if int(80 * f / 25) == start]
      assert len(a) == 1
      a = a[0]
      starts.append(a)
      faces = batch["faces"][i]  # lower halves, channels frame-major: frame k at channels 3k..3k+2
      first = int(faces[0, 0, 0])
      np.testing.assert_array_equal(faces[0, 0], np.repeat(first + np.arange(5), 3))
      assert first <= CLIP_FRAMES[clip] - 5
      label = float(batch["label"][i, 0])
      labels.append(label)
      if label == 1.0:
        assert first == a  # in sync: frames at the mel's window
      else:
        assert first != a  # off sync: another window of the same clip
  assert 0.3 < np.mean(labels) < 0.7
  assert min(starts) == 0  # the expert may start at frame 0


def test_jpeg_shards_decode_close_to_the_values(tmp_path):
  write_split(
    tmp_path, "train", [indexed_clip(0, 30), indexed_clip(1, 30)], num_shards=1, frame_format="jpeg"
  )
  batch = next(
    input_pipeline.make_train_iterator(
      str(tmp_path), "train", "generator", 4, seed=0, process_index=0, process_count=1, num_threads=0
    )
  )
  a = batch["gt"][:, 0, 0, 0, 0].astype(int)
  expected = a[:, None] + np.arange(5)
  assert np.abs(batch["gt"][:, :, IMG // 2, IMG // 2, 1].astype(int) - expected).max() <= 2


def test_short_mel_limits_the_windows(tmp_path):
  # 40 frames but only 80 mel steps: frame f's window fits while int(3.2 f) + 16 <= 80, i.e. f <= 20.
  write_split(tmp_path, "train", [indexed_clip(0, 40, mel_steps=80)], num_shards=1)
  assert sampling.window_start_range(40, 80, "expert") == (0, 20)
  assert sampling.window_start_range(40, 80, "generator") == (1, 17)
  it = input_pipeline.make_train_iterator(
    str(tmp_path), "train", "generator", 32, seed=0, process_index=0, process_count=1
  )
  starts = np.concatenate([b["gt"][:, 0, 0, 0, 0] for b in take(it, 4)])
  assert starts.max() == 17 and starts.min() == 1


def test_short_clips_are_skipped(tmp_path):
  clips = [indexed_clip(0, 15), indexed_clip(1, 30), indexed_clip(2, 10)]
  write_split(tmp_path, "train", clips, num_shards=1)
  assert sampling.window_start_range(15, 100, "expert") is None
  assert sampling.window_start_range(16, 100, "generator") == (1, 11)
  it = input_pipeline.make_train_iterator(
    str(tmp_path), "train", "expert", 16, seed=0, process_index=0, process_count=1
  )
  seen = np.concatenate([b["mel"][:, 1, 0, 0] for b in take(it, 3)])
  assert set(seen.tolist()) == {1.0}


def test_deterministic_for_a_seed_and_independent_of_threads(shards_dir):
  def batches(seed, threads):
    it = input_pipeline.make_train_iterator(
      shards_dir, "train", "generator", 4, seed=seed, process_index=0, process_count=1, num_threads=threads
    )
    return take(it, 5)

  reference = batches(7, threads=0)
  assert_batches_equal(reference, batches(7, threads=3))
  other = batches(8, threads=0)
  assert any(not np.array_equal(x["gt"], y["gt"]) for x, y in zip(reference, other))


def test_epochs_reshuffle_and_cover_every_clip(shards_dir):
  # batch 1 per process = one clip per step; an epoch is one pass over the process's clips.
  it = input_pipeline.make_train_iterator(
    shards_dir, "train", "expert", 1, seed=0, process_index=0, process_count=1, num_threads=0
  )
  n = len(CLIP_FRAMES)
  order = [int(b["mel"][0, 1, 0, 0]) for b in take(it, 3 * n)]
  epochs = [order[i * n : (i + 1) * n] for i in range(3)]
  assert all(sorted(e) == list(range(n)) for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1


@pytest.mark.parametrize("mode", sampling.MODES)
def test_one_process_global_batch_is_the_rows_of_two_and_four_processes(mixed_shards, mode):
  # Global batch 4 over 5 usable clips: an epoch ends inside batches 1, 2, 3 and 4 (new order, new windows).
  num_batches, global_batch = 6, 4

  def batches(rows):
    return take(
      input_pipeline.make_train_iterator(
        mixed_shards, "train", mode, global_batch, seed=3, rows=rows, num_threads=1
      ),
      num_batches,
    )

  reference = batches(None)  # rows None, jax's one process: the whole global batch
  assert reference[0][next(iter(reference[0]))].shape[0] == global_batch
  for process_count in (2, 4):
    per_process = [batches(rows) for rows in process_rows(global_batch, process_count)]
    concatenated = [
      {key: np.concatenate([p[k][key] for p in per_process]) for key in reference[k]}
      for k in range(num_batches)
    ]
    assert_batches_equal(reference, concatenated)
  # process_index / process_count without rows: the contiguous block process_index * b.
  second = take(
    input_pipeline.make_train_iterator(
      mixed_shards, "train", mode, global_batch, seed=3, process_index=1, process_count=2, num_threads=0
    ),
    num_batches,
  )
  assert_batches_equal(second, [{k: v[2:] for k, v in b.items()} for b in reference])
  seen = clip_numbers(reference)
  assert 2 not in seen and set(seen) == {0, 1, 3, 4, 5}  # the short clip never, every other clip


def test_short_clips_leave_the_global_order_with_an_index(mixed_shards):
  it = input_pipeline.make_train_iterator(mixed_shards, "train", "expert", 5, seed=0, num_threads=0)
  indexed = "indexed" in os.path.basename(mixed_shards)
  assert it.get_state()["num_clips"] == (5 if indexed else 6)
  if indexed:  # one epoch = the 5 usable clips, each once
    assert sorted(clip_numbers([next(it)])) == [0, 1, 3, 4, 5]


def test_indexed_split_without_a_usable_clip_names_it(tmp_path):
  write_split(tmp_path, "train", [indexed_clip(0, 15), indexed_clip(1, 12)], num_shards=1, index=True)
  with pytest.raises(ValueError, match=r"no clip of split 'train' .* has room for a generator window"):
    input_pipeline.build_dataset(str(tmp_path), "train", "generator", 2, seed=0, rows=(0, 2))


def test_eval_batches_are_global_and_split_by_rows(mixed_shards):
  # The val split (3 clips) is smaller than the process count and the batch: the same global batches.
  reference = list(
    input_pipeline.make_eval_batches(mixed_shards, "val", "generator", 8, 2, seed=1, rows=(0, 8))
  )
  rows = [
    list(input_pipeline.make_eval_batches(mixed_shards, "val", "generator", 8, 2, seed=1, rows=r))
    for r in process_rows(8, 4)
  ]
  assert_batches_equal(
    reference, [{k: np.concatenate([r[i][k] for r in rows]) for k in reference[i]} for i in range(2)]
  )


def test_rows_outside_the_global_batch_are_refused(shards_dir):
  with pytest.raises(ValueError, match=r"rows \(4, 10\) are not a block of a global batch of 8"):
    input_pipeline.build_dataset(shards_dir, "train", "expert", 8, seed=0, rows=(4, 10))


def test_state_round_trip_gives_the_same_next_batches(shards_dir):
  kwargs = dict(process_index=0, process_count=1, num_threads=2)
  it = input_pipeline.make_train_iterator(shards_dir, "train", "expert", 4, seed=0, **kwargs)
  take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # JSON-able: saved as a JSON checkpoint item
  assert state == {
    "next_batch": 3,
    "seed": 0,
    "split": "train",
    "mode": "expert",
    "global_batch_size": 4,
    "num_clips": len(CLIP_FRAMES),
  }
  expected = take(it, 3)
  fresh = input_pipeline.make_train_iterator(shards_dir, "train", "expert", 4, seed=0, **kwargs)
  take(fresh, 1)  # a running iterator restarts at the state's batch
  fresh.set_state(state)
  assert_batches_equal(expected, take(fresh, 3))
  assert fresh.get_state()["next_batch"] == 6


def test_state_of_two_processes_continues_in_one(mixed_shards):
  def make(rows):
    return input_pipeline.make_train_iterator(mixed_shards, "train", "generator", 4, seed=9, rows=rows)

  reference = take(make((0, 4)), 6)  # one process, uninterrupted
  pair = [make(rows) for rows in process_rows(4, 2)]
  for it in pair:
    take(it, 3)
  states = [it.get_state() for it in pair]
  assert states[0] == states[1]  # every process holds the same state
  single = make((0, 4))
  single.set_state(json.loads(json.dumps(states[1])))
  assert_batches_equal(reference[3:5], take(single, 2))
  # ... and the one process's state continues in four.
  quads = [make(rows) for rows in process_rows(4, 4)]
  for it in quads:
    it.set_state(single.get_state())
  rows = [next(it) for it in quads]
  assert_batches_equal(reference[5:], [{k: np.concatenate([r[k] for r in rows]) for k in rows[0]}])


def test_state_of_another_stream_is_refused(shards_dir):
  it = input_pipeline.make_train_iterator(shards_dir, "train", "expert", 4, seed=0, num_threads=0)
  state = dict(it.get_state(), seed=1, global_batch_size=8)
  with pytest.raises(ValueError, match=r"another data stream \(seed: saved 1, now 0, global_batch_size"):
    it.set_state(state)
  with pytest.raises(ValueError, match="no 'next_batch'"):
    it.set_state({"a": 1})  # e.g. grain's own per-process iterator state


def test_restore_through_orbax_json_item(shards_dir, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  kwargs = dict(process_index=0, process_count=1, num_threads=2)
  it = input_pipeline.make_train_iterator(shards_dir, "train", "generator", 2, seed=5, **kwargs)
  take(it, 4)
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
    manager.save(4, args=ocp.args.Composite(data=ocp.args.JsonSave(it.get_state())))
    manager.wait_until_finished()
  expected = take(it, 2)
  fresh = input_pipeline.make_train_iterator(shards_dir, "train", "generator", 2, seed=5, **kwargs)
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
    assert manager.latest_step() == 4
    fresh.set_state(manager.restore(4, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"])
  assert_batches_equal(expected, take(fresh, 2))


def test_eval_batches_are_fixed_and_streamed(shards_dir):
  kwargs = dict(seed=0, process_index=0, process_count=1)
  first = input_pipeline.make_eval_batches(shards_dir, "val", "expert", 4, num_batches=3, **kwargs)
  second = input_pipeline.make_eval_batches(shards_dir, "val", "expert", 4, num_batches=3, **kwargs)
  assert len(first) == 3
  passes = [list(first), list(first), list(second)]  # every pass over every instance: the same batches
  assert_batches_equal(passes[0], passes[1])
  assert_batches_equal(passes[0], passes[2])
  dataset, _ = input_pipeline.build_dataset(shards_dir, "val", "expert", 4, **kwargs)
  assert_batches_equal(passes[0], [dataset[i] for i in range(3)])  # batch i: a pure function of (seed, i)
  assert_batches_equal(passes[0], [first[i] for i in range(3)])
  with pytest.raises(IndexError, match="eval batch 3"):
    first[3]
  assert set(np.unique(np.concatenate([b["mel"][:, 1, 0, 0] for b in passes[0]]))) <= {100.0, 101.0, 102.0}


def test_img_size_resizes_frames(shards_dir):
  batch = next(
    input_pipeline.make_train_iterator(
      shards_dir, "train", "expert", 2, seed=0, process_index=0, process_count=1, img_size=32, num_threads=0
    )
  )
  assert batch["faces"].shape == (2, 16, 32, 15)


def test_missing_split_names_the_directory_and_the_fix(shards_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no 'test' shards.*data_pipelines.preprocess"):
    input_pipeline.make_train_iterator(
      shards_dir, "test", "expert", 2, seed=0, process_index=0, process_count=1
    )
  with pytest.raises(FileNotFoundError, match="does not exist"):
    input_pipeline.make_train_iterator(
      str(tmp_path / "nope"), "train", "expert", 2, seed=0, process_index=0, process_count=1
    )


def test_truncated_shard_error_names_the_shard(tmp_path):
  write_split(tmp_path, "train", [indexed_clip(0, 30), indexed_clip(1, 30)], num_shards=1)
  path = os.path.join(tmp_path, records.shard_name("train", 0, 1))
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 100)
  with pytest.raises(tfrecord.ShardError, match=r"train-00000-of-00001\.tfrecord is corrupt.*record 1"):
    input_pipeline.make_train_iterator(
      str(tmp_path), "train", "expert", 2, seed=0, process_index=0, process_count=1
    )


def test_corrupt_record_error_names_the_shard(tmp_path):
  path = os.path.join(tmp_path, records.shard_name("train", 0, 1))
  tfrecord.write_tfrecord(path, [b"\x0a\x07garbage" * 5] * 2)
  it = input_pipeline.make_train_iterator(
    str(tmp_path), "train", "expert", 2, seed=0, img_size=IMG, process_index=0, process_count=1, num_threads=0
  )
  with pytest.raises(tfrecord.CorruptRecordError, match=r"train-00000-of-00001\.tfrecord record [01]"):
    next(it)


def test_data_crc_check_catches_flipped_bytes(tmp_path):
  write_split(tmp_path, "train", [indexed_clip(0, 30)], num_shards=1)
  path = os.path.join(tmp_path, records.shard_name("train", 0, 1))
  with open(path, "r+b") as f:  # flip one pixel byte deep inside the record (the frames are raw)
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  source = tfrecord.ClipRecords([path], verify_data_crc=True)
  with pytest.raises(tfrecord.CorruptRecordError, match="checksum"):
    source[0]
  assert tfrecord.ClipRecords([path])[0].data  # without the check the bytes are served


def test_incomplete_shard_set_is_an_error(tmp_path):
  write_split(tmp_path, "train", [indexed_clip(i, 30) for i in range(3)], num_shards=3)
  os.remove(os.path.join(tmp_path, records.shard_name("train", 1, 3)))
  with pytest.raises(tfrecord.ShardError, match=r"incomplete.*missing indices \[1\]"):
    tfrecord.find_shards(str(tmp_path), "train")


def test_worker_processes_give_the_same_batches_and_states(shards_dir):
  kwargs = dict(rows=(2, 4), num_threads=1)
  make = input_pipeline.make_train_iterator
  reference = take(make(shards_dir, "train", "generator", 4, seed=2, **kwargs), 6)
  it = make(shards_dir, "train", "generator", 4, seed=2, worker_count=2, **kwargs)
  try:
    assert_batches_equal(reference[:3], take(it, 3))
    state = it.get_state()
    assert state["next_batch"] == 3
    it.set_state(dict(state, next_batch=4))  # workers restarted at batch 4
    assert_batches_equal(reference[4:], take(it, 2))
  finally:
    it.close()
  threads_only = make(shards_dir, "train", "generator", 4, seed=2, **kwargs)
  threads_only.set_state(state)  # a state saved with workers restores without them
  assert_batches_equal(reference[3:4], take(threads_only, 1))


@pytest.mark.slow
def test_end_to_end_videos_to_preprocess_to_batches(tmp_path):
  """Videos (frame i is flat gray 20 + 4 i) -> Beam preprocessing -> batches whose frames and mels line up."""
  from data_pipelines import preprocess  # pylint: disable=import-outside-toplevel
  from lipsync_jax.media import video  # pylint: disable=import-outside-toplevel

  lengths = {"spk1/a": 40, "spk2/b": 30}
  for number, (clip_id, num_frames) in enumerate(lengths.items()):
    path = str(tmp_path / "videos" / f"{clip_id}.mp4")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with video.VideoWriter(path, 25, 160, 120) as writer:
      for i in range(num_frames):
        writer.write(np.full((120, 160, 3), 20 + 4 * i, np.uint8))
      t = np.arange(int(16000 * num_frames / 25)) / 16000
      writer.close(audio=(0.3 * np.sin(2 * np.pi * (150 + 200 * number + 100 * t) * t)).astype(np.float32))
  shards = str(tmp_path / "shards")
  preprocess.run(
    shards,
    input_glob=str(tmp_path / "videos" / "**" / "*.mp4"),
    img_size=32,
    num_shards=1,
    detector="fixed",
    detector_kwargs={"box": (40, 20, 120, 100)},
    direct_num_workers=1,
    direct_running_mode="in_memory",
  )
  source = tfrecord.ClipRecords(tfrecord.find_shards(shards, "train"))
  clips = [records.parse_example(source[i].data) for i in range(len(source))]
  assert {c.clip_id: c.num_frames for c in clips} == lengths

  def frame_index(image):  # flat gray 20 + 4 i, through H.264 + JPEG: nearest i
    return int(round((image.mean() - 20) / 4))

  batch = next(
    input_pipeline.make_train_iterator(
      shards, "train", "generator", 8, seed=0, process_index=0, process_count=1
    )
  )
  assert batch["gt"].shape == (8, 5, 32, 32, 3) and batch["inputs"].dtype == np.uint8
  for i in range(8):
    a = frame_index(batch["gt"][i, 0])
    assert [frame_index(f) for f in batch["gt"][i]] == list(range(a, a + 5))
    start = int(80 * a / 25)  # the mel is the window at a of exactly one clip (chirps: all windows differ)
    matches = [c for c in clips if np.array_equal(batch["mel"][i, :, :, 0], c.mel[:, start : start + 16])]
    assert len(matches) == 1
    clip = matches[0]
    assert 1 <= a <= clip.num_frames - 5
    np.testing.assert_array_equal(
      batch["indiv_mels"][i, 0, :, :, 0], clip.mel[:, int(80 * (a - 1) / 25) : int(80 * (a - 1) / 25) + 16]
    )
    b = frame_index(batch["inputs"][i, 0, ..., 3:])
    assert b != a and [frame_index(f) for f in batch["inputs"][i, ..., 3:]] == list(range(b, b + 5))
    assert not batch["inputs"][i, :, 16:, :, :3].any()
