"""Tests for data_pipelines.preprocess (the Beam job end to end), lipsync_jax.data.clips (the per-clip work)
and lipsync_jax.data.demo's Beam-free builder, on tiny videos made here.

Videos are written with lipsync_jax.media.video: every pixel of frame i has the value 20 + 4 i (before H.264),
so the decoded face crops prove frame order and the 30 -> 25 fps resampling; the 'fixed' detector keeps
boxes known.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import grain
import numpy as np
import pytest

from data_pipelines import preprocess
from lipsync_jax import fs
from lipsync_jax.data import clips, demo, records, reindex, shard_index, tfrecord
from lipsync_jax.media import detectors, face_detector, video

BOX = (40, 20, 120, 100)  # x1, y1, x2, y2 in the 160x120 source frames
PADDED_BOX = (40, 20, 120, 110)  # default pads (0, 10, 0, 0)
FIXED = dict(detector="fixed", detector_kwargs={"box": BOX})
FAST = dict(direct_num_workers=1, direct_running_mode="in_memory")


def _fixed_config():
  return dict(detector="fixed", detector_kwargs=(("box", BOX),))


def _frame_value(i: int) -> int:
  return 20 + 4 * i


def _write_clip(path, num_frames=40, fps=25, audio="tone"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with video.VideoWriter(path, fps, 160, 120) as writer:
    for i in range(num_frames):
      writer.write(np.full((120, 160, 3), _frame_value(i), np.uint8))
    t = np.arange(int(16000 * num_frames / fps)) / 16000
    wav = {"tone": 0.3 * np.sin(2 * np.pi * 220 * t), "silent": 0 * t, None: None}[audio]
    writer.close(audio=None if wav is None else wav.astype(np.float32))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("videos"))
  _write_clip(f"{root}/spk1/a.mp4", 40)
  _write_clip(f"{root}/spk1/b.mp4", 36, fps=30)  # 1.2 s -> 30 frames at 25 fps
  _write_clip(f"{root}/spk3/c.mp4", 20)
  _write_clip(f"{root}/spk2/short.mp4", 10)
  _write_clip(f"{root}/spk2/noaudio.mp4", 30, audio=None)
  _write_clip(f"{root}/spk2/silent.mp4", 30, audio="silent")
  with open(f"{root}/spk2/garbage.mp4", "wb") as f:
    f.write(b"this is not a video " * 20)
  return root


def _read_split(out_dir, split):
  paths = sorted(glob.glob(os.path.join(out_dir, f"{split}-*.tfrecord")))
  clips = {}
  for path in paths:
    for raw in grain.experimental.TFRecordIterDataset(path):  # a standard TFRecord reader
      clip = records.parse_example(raw)
      clips[clip.clip_id] = clip
  return paths, clips


def _check_tfrecord_crcs(path):
  """Every record's length and data CRC verify (Beam's reader raises on a mismatch); returns the count."""
  from apache_beam.io.tfrecordio import _default_crc32c_fn, _TFRecordUtil

  assert _default_crc32c_fn(b"123456789") == 0xE3069283  # the CRC-32C check value: the right polynomial
  count = 0
  with open(path, "rb") as f:
    while _TFRecordUtil.read_record(f) is not None:
      count += 1
  return count


def test_glob_end_to_end_with_bad_inputs(corpus, tmp_path):
  out = str(tmp_path / "shards")
  info = preprocess.run(out, input_glob=f"{corpus}/spk[12]/*.mp4", img_size=64, num_shards=2, **FIXED, **FAST)

  assert {r["clip_id"]: r["reason"] for r in info["skipped"]} == {
    "spk2/garbage": "unreadable",
    "spk2/noaudio": "no_audio",
    "spk2/short": "too_few_frames",
    "spk2/silent": "audio_silent",
  }
  assert info["splits"]["train"]["num_clips"] == 2 and info["num_skipped"] == 4
  assert info["img_size"] == 64 and info["audio"]["hop_size"] == 200
  assert info["last_run"]["counters"] == {
    "clips_written": 2,
    "frames_written": 70,
    "skipped_audio_silent": 1,
    "skipped_no_audio": 1,
    "skipped_too_few_frames": 1,
    "skipped_unreadable": 1,
  }
  on_disk = json.load(open(os.path.join(out, "dataset_info.json")))
  assert on_disk["skipped_by_reason"] == {
    "audio_silent": 1,
    "no_audio": 1,
    "too_few_frames": 1,
    "unreadable": 1,
  }
  paths, clips = _read_split(out, "train")
  assert [os.path.basename(p) for p in paths] == [
    "train-00000-of-00002.tfrecord",
    "train-00001-of-00002.tfrecord",
  ]
  assert sorted(os.listdir(out)) == sorted(
    ["dataset_info.json", "index-train.json"] + info["splits"]["train"]["shards"]
  )
  assert sum(_check_tfrecord_crcs(p) for p in paths) == 2
  assert sorted(clips) == ["spk1/a", "spk1/b"]
  # The index: clips by sorted rank over the 6 listed (skipped ones too): a, b -> shard 0 of 2; it equals a
  # scan of the shards, and ClipRecords serves every record from it.
  index = shard_index.read(out, "train")
  assert [list(s.clip_id) for s in index.shards] == [["spk1/a", "spk1/b"], []]
  assert index.to_json() == reindex.build(out, "train").to_json()
  source = tfrecord.ClipRecords.for_split(out, "train")
  assert source.clip_ids == ("spk1/a", "spk1/b") and source.num_frames.tolist() == [40, 30]
  assert [records.parse_example(source[i].data).clip_id for i in range(2)] == ["spk1/a", "spk1/b"]

  a, b = clips["spk1/a"], clips["spk1/b"]
  assert (a.num_frames, b.num_frames) == (40, 30)
  for clip, seconds in ((a, 1.6), (b, 1.2)):
    assert clip.img_size == 64 and clip.fps == 25.0 and clip.split == "train"
    assert clip.mel.shape[0] == 80 and abs(clip.mel.shape[1] - (80 * seconds + 1)) <= 2
    assert np.isfinite(clip.mel).all() and clip.mel.max() > -4.0
    np.testing.assert_array_equal(clip.boxes, np.tile(PADDED_BOX, (clip.num_frames, 1)))
  # Frame order: crop k carries source frame k's value (read back through the same decoder).
  source_a = video.read_frames(f"{corpus}/spk1/a.mp4")[0].reshape(40, -1).mean(1)
  source_b = video.read_frames(f"{corpus}/spk1/b.mp4")[0].reshape(36, -1).mean(1)
  assert np.all(np.diff(source_a) > 2)  # consecutive frames are distinguishable
  np.testing.assert_allclose(a.frames(range(40)).reshape(40, -1).mean(1), source_a, atol=1.0)
  # 30 fps -> 25 fps by nearest timestamp: output frame k shows source frame round(1.2 k).
  np.testing.assert_allclose(
    b.frames(range(30)).reshape(30, -1).mean(1),
    source_b[[int(np.floor(1.2 * k + 0.5)) for k in range(30)]],
    atol=1.0,
  )


def test_process_clip_streaming_detect_every_and_no_face(corpus):
  """The per-clip function without Beam: the two-decode path (big frames) equals the in-memory one."""
  task = clips.ClipTask("train", "spk1/b", f"{corpus}/spk1/b.mp4")
  held, stats = clips.process_clip(task, clips.PreprocessConfig(**_fixed_config()))
  streamed, stats2 = clips.process_clip(
    task, clips.PreprocessConfig(max_decoded_mib=0, detect_every=4, **_fixed_config())
  )
  np.testing.assert_array_equal(held.frames, streamed.frames)
  np.testing.assert_array_equal(held.mel, streamed.mel)
  assert (stats["frames_searched"], stats2["frames_searched"]) == (30, 9)  # 0, 4, ..., 28 and the last
  assert stats["resampled"] and stats["source_fps"] == pytest.approx(30.0)

  class NoFaceAfterFrame10(face_detector.FaceDetector):
    def detect_faces(self, frames):
      face = face_detector.faces_array([BOX], [1.0], 10**4, 10**4)
      return [face] * 10 + [face[:0]] * (len(frames) - 10)

  config = clips.PreprocessConfig(max_no_face_fraction=0.5, **_fixed_config())
  with pytest.raises(clips.SkipClip, match="no face in 20 of 30") as skip:
    clips.process_clip(task, config, NoFaceAfterFrame10())
  assert skip.value.reason == "no_face"
  record, report = clips.process_to_record(task, config, NoFaceAfterFrame10())
  assert record is None and report["reason"] == "no_face"
  # Allowed more faceless frames, the clip is one shot: the track carries the last face through them.
  config = clips.PreprocessConfig(max_no_face_fraction=1.0, **_fixed_config())
  record, report = clips.process_to_record(task, config, NoFaceAfterFrame10())
  assert record is not None and report["no_face_frames"] == 20 and report["scene_cuts"] == 0


def test_filelist_splits_rerun_and_settings_guard(corpus, tmp_path):
  root = tmp_path / "lrs2"
  os.symlink(corpus, root)
  (tmp_path / "lists").mkdir()
  train_list, val_list = tmp_path / "lists" / "train.txt", tmp_path / "lists" / "val.txt"
  train_list.write_text("spk1/a\nspk1/b NF\nspk2/garbage\n\n")  # LRS2 test lists carry extra tokens
  val_list.write_text("spk3/c\n")
  out = str(tmp_path / "shards")

  first = preprocess.run(
    out, filelist=[str(train_list), str(val_list)], data_root=str(root), num_shards=3, **FIXED, **FAST
  )
  assert {s: v["num_clips"] for s, v in first["splits"].items()} == {"train": 2, "val": 1}
  assert first["splits"]["train"]["num_skipped"] == 1 and first["skipped"][0]["clip_id"] == "spk2/garbage"
  assert len(glob.glob(os.path.join(out, "*.tfrecord"))) == 6

  # Rerun into the same directory with another shard count: same records, no stale shards left.
  second = preprocess.run(
    out, filelist=[str(train_list), str(val_list)], data_root=str(root), num_shards=1, **FIXED, **FAST
  )
  assert sorted(os.listdir(out)) == [
    "dataset_info.json",
    "index-train.json",
    "index-val.json",
    "train-00000-of-00001.tfrecord",
    "val-00000-of-00001.tfrecord",
  ]
  for key in ("num_clips", "num_skipped", "skipped_by_reason", "skipped"):
    assert second[key] == first[key]
  assert sorted(_read_split(out, "train")[1]) == ["spk1/a", "spk1/b"]

  # Only val again: train's shards and info entry are kept as they are.
  train_bytes = open(os.path.join(out, "train-00000-of-00001.tfrecord"), "rb").read()
  train_index = open(os.path.join(out, "index-train.json")).read()
  third = preprocess.run(out, filelist=str(val_list), data_root=str(root), num_shards=2, **FIXED, **FAST)
  assert third["carried_over_splits"] == ["train"] and third["splits"]["train"] == second["splits"]["train"]
  assert open(os.path.join(out, "train-00000-of-00001.tfrecord"), "rb").read() == train_bytes
  assert open(os.path.join(out, "index-train.json")).read() == train_index
  assert shard_index.read(out, "val").names == ["val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]
  assert third["splits"]["val"]["shards"] == ["val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]
  assert third["num_skipped"] == 1  # train's skipped clip is still listed

  # Other settings into the same directory are refused (nothing written) unless overwrite.
  with pytest.raises(ValueError, match="overwrite"):
    preprocess.run(out, filelist=str(val_list), data_root=str(root), img_size=48, **FIXED, **FAST)
  assert json.load(open(os.path.join(out, "dataset_info.json")))["img_size"] == 96
  fourth = preprocess.run(
    out, filelist=str(val_list), data_root=str(root), img_size=48, overwrite=True, **FIXED, **FAST
  )
  assert sorted(os.listdir(out)) == ["dataset_info.json", "index-val.json", "val-00000-of-00001.tfrecord"]
  assert list(fourth["splits"]) == ["val"] and _read_split(out, "val")[1]["spk3/c"].img_size == 48


def test_default_runner_and_detector_on_synthetic_corpus_equals_demo_builder(tmp_path):
  """Default DirectRunner mode (multi_processing) with the default detector on the demo faces; the
  Beam-free demo builder (a process pool over the same per-clip function) writes the same records."""
  synthetic = pytest.importorskip("lipsync_jax.data.synthetic")
  corpus = str(tmp_path / "demo")
  synthetic.make_corpus(corpus, num_clips=3, seconds=1.0, workers=1, progress=False)
  out = str(tmp_path / "shards")
  info = preprocess.run(out, data_root=corpus, direct_num_workers=2, progress=False)
  assert info["num_skipped"] == 0, info["skipped"]
  assert info["preprocess"]["detector"] == detectors.DEFAULT and info["last_run"]["direct_num_workers"] == 2
  assert info["last_run"]["counters"] == {"clips_written": 3, "frames_written": 75}  # from worker processes
  found = {}
  for split in info["splits"]:
    found.update(_read_split(out, split)[1])
  assert len(found) == 3
  for clip_id, clip in found.items():
    true = np.load(os.path.join(corpus, clip_id + ".boxes.npy"))
    assert clip.num_frames == len(true) == 25 and clip.img_size == 96
    # Detected (padded, smoothed) boxes overlap the renderer's true face boxes.
    ix = np.clip(np.minimum(clip.boxes[:, 2], true[:, 2]) - np.maximum(clip.boxes[:, 0], true[:, 0]), 0, None)
    iy = np.clip(np.minimum(clip.boxes[:, 3], true[:, 3]) - np.maximum(clip.boxes[:, 1], true[:, 1]), 0, None)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = ix * iy / (area(clip.boxes) + area(true) - ix * iy)
    assert iou.min() > 0.5, iou

  demo_out = str(tmp_path / "demo_shards")
  demo_info = demo.build_shards(corpus, demo_out, clips.PreprocessConfig(), workers=2, progress=False)
  assert sorted(os.listdir(demo_out)) == sorted(os.listdir(out))  # same shard and index names
  for name in os.listdir(out):  # Beam (2 worker processes) and the process pool: the same bytes
    if name != "dataset_info.json":
      assert open(os.path.join(demo_out, name), "rb").read() == open(os.path.join(out, name), "rb").read()
  # A demo cache built before the index existed gets its index files on the next ensure_demo_shards.
  for split in info["splits"]:
    os.remove(shard_index.index_path(demo_out, split))
  demo._index_older_build(demo_out)
  for split in info["splits"]:
    assert shard_index.read(demo_out, split).to_json() == shard_index.read(out, split).to_json()
  ignore = ("created_by", "last_run")
  assert {k: v for k, v in demo_info.items() if k not in ignore} == {
    k: v for k, v in info.items() if k not in ignore
  }
  assert demo_info["last_run"]["counters"] == info["last_run"]["counters"]
  for split in info["splits"]:
    paths, demo_clips = _read_split(demo_out, split)
    ids = [
      records.parse_example(raw).clip_id for p in paths for raw in grain.experimental.TFRecordIterDataset(p)
    ]
    assert ids == sorted(ids)  # deterministic order
    for clip_id, clip in demo_clips.items():
      beam_clip = found[clip_id]
      assert clip.encoded_frames == beam_clip.encoded_frames  # the same JPEG bytes
      np.testing.assert_array_equal(clip.mel, beam_clip.mel)
      np.testing.assert_array_equal(clip.boxes, beam_clip.boxes)
      assert (clip.split, clip.source, clip.num_frames) == (
        beam_clip.split,
        beam_clip.source,
        beam_clip.num_frames,
      )


OLD_FLAGS = {  # the CLI's flags and defaults before the options were generated from the dataclasses
  "--input": None,
  "--filelist": None,
  "--data_root": None,
  "--split": None,
  "--out": None,
  "--img_size": 96,
  "--detector": detectors.DEFAULT,
  "--fixed_box": None,
  "--pads": [0, 10, 0, 0],
  "--smooth_window": 5,
  "--frame_format": "jpeg",
  "--jpeg_quality": 95,
  "--fps_policy": "resample",
  "--min_frames": 16,
  "--max_no_face_fraction": 0.25,
  "--detect_every": 1,
  "--num_shards": 0,
  "--clips_per_shard": 128,
  "--limit": 0,
  "--overwrite": False,
  "--runner": "DirectRunner",
  "--direct_num_workers": 0,
  "--direct_running_mode": "multi_processing",
}


def test_cli_flags_are_generated_from_the_dataclasses():
  actions = {a.option_strings[0]: a for a in preprocess._parser()._actions if a.option_strings}
  for flag, default in OLD_FLAGS.items():
    assert actions[flag].default == default, flag
  assert set(actions) - set(OLD_FLAGS) == {"-h", "--verbosity", "--max_decoded_mib", "--detector_weights"}
  assert actions["--detector"].choices == sorted(detectors.DETECTORS)
  assert actions["--detector"].default == detectors.DEFAULT
  assert actions["--pads"].nargs == 4 and actions["--smooth_window"].help.startswith("boxes averaged")
  args, _ = preprocess._parser().parse_known_args(["--out", "x", "--pads", "1", "2", "3", "4", "--overwrite"])
  config = clips.PreprocessConfig(**clips.flag_values(clips.PreprocessConfig, args))
  assert config.pads == (1, 2, 3, 4) and config.img_size == 96 and args.overwrite
  with pytest.raises(TypeError, match="unknown options \\['img_sise'\\]"):
    preprocess.run("unused", data_root="unused", img_sise=64)
  # The DirectRunner is Beam's FnApiRunner, picked here (Beam's own DirectRunner first tries to fetch Prism).
  pipeline = preprocess._make_pipeline(preprocess.JobOptions(), [], workers=2, verbosity=0)
  assert type(pipeline.runner).__name__ == "FnApiRunner"


def test_cli_output_is_short(corpus, tmp_path):
  """Quiet by default: Beam's and its worker processes' logs stay out; progress and the summary remain."""
  out = str(tmp_path / "shards")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_pipelines.preprocess",
      "--input",
      f"{corpus}/spk[12]/*.mp4",
      "--out",
      out,
      "--detector",
      "fixed",
      "--fixed_box",
      ",".join(map(str, BOX)),
      "--direct_num_workers",
      "2",
    ],
    capture_output=True,
    text=True,
    timeout=600,
    check=True,
  )
  lines = proc.stderr.splitlines()
  assert lines[0].startswith("preprocess: 6 clips {'train': 6} ->"), proc.stderr
  assert any(line.startswith("preprocess: 6/6 clips, ") and "clips/s" in line for line in lines), proc.stderr
  assert lines[-1].startswith("preprocess: 2 clips written, 4 skipped"), proc.stderr
  assert len(lines) <= 4, proc.stderr  # no Beam / worker / apitools lines
  assert json.loads(proc.stdout)["splits"] == {"train": 2}


def test_gcs_output_and_input(corpus, gcs_dir, tmp_path):
  """--out gs:// (the emulator): the same shard bytes as a local run, readable by ClipRecords.for_split
  from the index; a rerun replaces the remote shards; --input gs://.../**/*.mp4 decodes from local copies."""
  local_out, remote_out = str(tmp_path / "local"), f"{gcs_dir}/shards"
  kwargs = dict(input_glob=f"{corpus}/spk[1]/*.mp4", img_size=32, num_shards=2, **FIXED, **FAST)
  local_info = preprocess.run(local_out, **kwargs)
  remote_info = preprocess.run(remote_out, **kwargs)
  assert remote_info["splits"] == local_info["splits"] and remote_info["num_clips"] == 2
  names = sorted(os.listdir(local_out))
  assert fs.listdir(remote_out) == names  # no staging folder left behind
  for name in names:
    if name != "dataset_info.json":  # same shards and index, byte for byte
      with fs.open(f"{remote_out}/{name}", "rb") as f:
        assert f.read() == open(os.path.join(local_out, name), "rb").read(), name
  source = tfrecord.ClipRecords.for_split(remote_out, "train")
  assert source.paths[0].startswith("gs://") and source.clip_ids == ("spk1/a", "spk1/b")
  assert [records.parse_example(source[i].data).num_frames for i in range(len(source))] == [40, 30]

  rerun = preprocess.run(remote_out, **dict(kwargs, num_shards=1))
  assert rerun["splits"]["train"]["shards"] == ["train-00000-of-00001.tfrecord"]
  assert fs.listdir(remote_out) == ["dataset_info.json", "index-train.json", "train-00000-of-00001.tfrecord"]
  assert len(tfrecord.ClipRecords.for_split(remote_out, "train")) == 2

  for name in ("a", "b"):
    fs.copy(f"{corpus}/spk1/{name}.mp4", f"{gcs_dir}/videos/spk1/{name}.mp4")
  from_gcs = str(tmp_path / "from_gcs")
  info = preprocess.run(from_gcs, **dict(kwargs, input_glob=f"{gcs_dir}/videos/**/*.mp4"))
  assert info["num_clips"] == 2 and info["num_skipped"] == 0
  got, want = _read_split(from_gcs, "train")[1], _read_split(local_out, "train")[1]
  assert sorted(got) == ["spk1/a", "spk1/b"]
  for clip_id, clip in got.items():
    assert clip.source == f"{gcs_dir}/videos/{clip_id}.mp4"
    assert clip.encoded_frames == want[clip_id].encoded_frames
    np.testing.assert_array_equal(clip.mel, want[clip_id].mel)
