"""Tests for lipsync_jax.inference + the infer CLI: mel chunks, the batch runner, the generator, end-to-end
mp4s, crops identical to preprocessing, CLI."""

from __future__ import annotations

import os

import cv2
import jax
import numpy as np
import pytest

from lipsync_jax import compile_cache, infer, weights
from lipsync_jax.inference.frames import InferenceError
from lipsync_jax.inference.lipsync import Generator, lipsync, mel_chunk_starts
from lipsync_jax.inference.runner import BatchRunner, bucket_sizes
from lipsync_jax.media import face_detector, video

WIDTH = 1 / 16  # tiny generator
H, W = 120, 160
FACE_BOX = (50, 20, 110, 100)  # x1, y1, x2, y2 of the drawn face


@pytest.fixture(autouse=True)
def _compile_cache_in_tmp(tmp_path, monkeypatch):
  """The CLI turns on jax's persistent compilation cache: keep it out of the user's cache dir, and off
  again after each test."""
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "jax_compile"))
  yield
  compile_cache.disable()


@pytest.fixture(scope="module")
def tiny_generator():
  from lipsync_jax.models import Wav2Lip, example_inputs

  variables = Wav2Lip(width_multiplier=WIDTH).init(jax.random.key(0), *example_inputs("wav2lip", 1, 96))
  variables = jax.tree.map(np.asarray, variables)
  return variables, {"kind": "wav2lip", "width_multiplier": WIDTH, "img_size": 96}


class ScriptedDetector(face_detector.FaceDetector):
  """The drawn face's box, except on frames whose mean brightness marks them as 'no face' (dark frames)."""

  def faces_one(self, frame):
    box = [] if frame.mean() < 40 else [FACE_BOX]
    return face_detector.faces_array(box, [1.0] * len(box), frame.shape[1], frame.shape[0])


def _face_frames(num, dark=()):
  frames = []
  for i in range(num):
    f = np.full((H, W, 3), 100, np.uint8)
    cv2.ellipse(f, (80, 60), (28, 38), 0, 0, 360, (150, 170, 200), -1)
    cv2.line(f, (70, 80), (90, 80 + i % 3), (40, 40, 120), 3)
    if i in dark:
      f[:] = 10
    frames.append(f)
  return frames


def _write_video(path, frames, fps=25, wav=None):
  with video.VideoWriter(path, fps, frames[0].shape[1], frames[0].shape[0]) as writer:
    for f in frames:
      writer.write(f)
    writer.close(audio=wav)


def _write_wav(path, seconds, sr=16000):
  import soundfile

  t = np.arange(int(seconds * sr)) / sr
  wav = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
  soundfile.write(path, wav.astype(np.float32), sr)
  return path


def _original_chunk_count(num_steps, fps):
  """The original inference.py loop, transcribed."""
  chunks, i = [], 0
  while True:
    start = int(i * 80.0 / fps)
    if start + 16 > num_steps:
      chunks.append(num_steps - 16)
      break
    chunks.append(start)
    i += 1
  return chunks


@pytest.mark.parametrize("steps,fps", [(16, 25), (17, 25), (100, 25), (333, 30), (80, 29.97), (400, 24)])
def test_mel_chunk_starts_match_original(steps, fps):
  assert mel_chunk_starts(steps, fps) == _original_chunk_count(steps, fps)


def test_mel_chunk_starts_too_short():
  with pytest.raises(InferenceError, match="too short"):
    mel_chunk_starts(10, 25)


def test_batch_runner_pads_to_one_shape_and_maps_rows():
  calls = []

  def fn(variables, x, y):
    calls.append(x.shape)
    return {"sum": x.astype(np.float32).sum(axis=(1, 2)) * variables["w"], "y": y}

  runner = BatchRunner(fn, {"w": np.float32(2.0)}, batch_size=4)
  x = np.arange(10 * 3 * 2, dtype=np.uint8).reshape(10, 3, 2)
  y = np.arange(10, dtype=np.int32)
  made = []

  def inputs_for(rows):
    made.append(len(rows))
    return x[rows.start : rows.stop], y[rows.start : rows.stop]

  out = runner.map(10, inputs_for)
  assert made == [4, 4, 2] and runner.trace_count == 1 and calls == [(4, 3, 2)]
  np.testing.assert_array_equal(out["sum"], x.astype(np.float32).sum(axis=(1, 2)) * 2)
  np.testing.assert_array_equal(out["y"], y)
  np.testing.assert_array_equal(runner.run(x[:1], y[:1])["y"], y[:1])
  assert runner.trace_count == 1
  with pytest.raises(ValueError, match="batch of 5 rows"):
    runner.run(x[:5], y[:5])


def test_bucket_sizes_bound_padding_and_shapes():
  assert bucket_sizes(128) == (1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128)
  assert bucket_sizes(1) == (1,) and bucket_sizes(5) == (1, 2, 3, 4, 5)
  assert bucket_sizes(100) == (1, 2, 4, 8, 12, 24, 36, 48, 60, 72, 84, 96, 100)
  for batch in (1, 3, 16, 100, 128, 512):
    sizes = bucket_sizes(batch)
    step = max(1, batch // 8)
    assert sizes[-1] == batch and len(sizes) <= 8 + step.bit_length() + 1
    runner = BatchRunner(lambda v, x: x, {}, batch, buckets=sizes)
    for rows in range(1, batch + 1):
      size = runner.bucket(rows)
      assert size in sizes and rows <= size < rows + step and (size < 2 * rows or rows < 2), (batch, rows)
  with pytest.raises(ValueError, match="batch_size"):
    bucket_sizes(0)


def test_batch_runner_buckets_pad_to_the_smallest_shape():
  shapes = []

  def fn(variables, x):
    shapes.append(x.shape[0])  # runs only while tracing
    return x * variables["w"]

  runner = BatchRunner(fn, {"w": np.float32(3.0)}, batch_size=8, buckets=(2, 4))
  assert runner.buckets == (2, 4, 8)
  assert runner.plan(19) == [8, 8, 4] and runner.plan(16) == [8, 8] and runner.plan(1) == [2]
  x = np.arange(19, dtype=np.float32)
  np.testing.assert_array_equal(runner.map(19, lambda rows: (x[rows.start : rows.stop],)), x * 3)
  assert shapes == [8, 4] and runner.trace_count == 2
  for k, want in ((1, 2), (2, 2), (3, 4), (5, 8)):
    assert runner.bucket(k) == want
    np.testing.assert_array_equal(runner.run(x[:k]), x[:k] * 3)
  assert sorted(set(shapes)) == [2, 4, 8] and runner.trace_count == 3
  with pytest.raises(ValueError, match="buckets must lie"):
    BatchRunner(fn, {}, batch_size=4, buckets=(8,))
  with pytest.raises(ValueError, match="batch of 0 rows"):
    runner.run(x[:0])


def test_generator_buckets_give_the_same_outputs(tiny_generator):
  """Bucketing changes only how many padding rows a batch carries: every real row's output is the same as
  in one fixed full batch (the former behaviour), within float rounding (uint8 +-1)."""
  variables, meta = tiny_generator
  rng = np.random.default_rng(0)
  mels = rng.normal(size=(8, 80, 16)).astype(np.float32)
  crops = rng.integers(0, 255, (8, 96, 96, 3), dtype=np.uint8)
  fixed = Generator(variables, meta, batch_size=8, buckets=(8,))
  bucketed = Generator(variables, meta, batch_size=8)
  assert bucketed.runner.buckets == bucket_sizes(8) == (1, 2, 3, 4, 5, 6, 7, 8)
  assert bucketed.compile(11) == [3, 8]  # an 11-row run: one full batch, then 3 rows
  full = fixed(mels, crops).astype(int)
  for k in (3, 8):
    out = bucketed(mels[:k], crops[:k])
    assert out.shape == (k, 96, 96, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - full[:k]).max() <= 1, k
  assert fixed.trace_count == 1 and bucketed.trace_count == 2
  padded = fixed(mels[:3], crops[:3]).astype(int)  # the former way: 3 rows padded to 8
  assert np.abs(padded - full[:3]).max() <= 1 and fixed.trace_count == 1


def test_lipsync_video_loops_and_counts_missing_faces(tmp_path, tiny_generator):
  variables, meta = tiny_generator
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(12, dark=(5,)))
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 1.0)  # 25 frames > 12 video frames: loops
  out = os.path.join(tmp_path, "out", "result.mp4")
  stats = lipsync(
    face, audio, variables, out, meta, batch_size=8, detector=ScriptedDetector(), progress=False
  )
  want_frames = len(mel_chunk_starts(81, 25))
  assert stats["frames"] == want_frames == 22
  # The black frame 5 is a shot of its own (a scene cut into it and out of it) with no face: it passes
  # through unchanged even with no_face='carry' (a box is never carried across a cut). Output frames 5 and
  # 17 show it, so the generator runs 7, 8 and 5 rows (bucketed; 8 and 6 compiled ahead from the length).
  assert stats["batches"] == 3 and stats["compiles"] <= 4
  assert stats["frames_without_face"] == 1 and stats["passthrough_frames"] == 1
  assert stats["scene_cuts"] == 2 and stats["carried_frames"] == 0
  assert stats["source_frames"] == 12
  info = video.probe(out)
  assert info.num_frames == want_frames and (info.width, info.height) == (W, H)
  assert info.has_audio and abs(info.fps - 25) < 1e-6
  frames, _ = video.read_frames(out)
  src, _ = video.read_frames(face)
  # Outside the face box nothing changes (up to one more H.264 generation); inside, the output is pasted.
  outside = np.abs(frames[0][:, :40].astype(int) - src[0][:, :40].astype(int)).mean()
  inside = np.abs(frames[0][60:100, 55:105].astype(int) - src[0][60:100, 55:105].astype(int)).mean()
  assert outside < 8 and inside > 2 * outside + 10, (outside, inside)


def test_lipsync_passthrough_keeps_faceless_frame(tmp_path, tiny_generator):
  variables, meta = tiny_generator
  face = os.path.join(tmp_path, "face.mp4")
  frames = _face_frames(10, dark=(3,))
  _write_video(face, frames)
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 0.3)
  out = os.path.join(tmp_path, "o.mp4")
  stats = lipsync(
    face,
    audio,
    variables,
    out,
    meta,
    batch_size=16,
    detector=ScriptedDetector(),
    no_face="passthrough",
    progress=False,
  )
  assert stats["passthrough_frames"] == 1
  got, _ = video.read_frames(out)
  assert stats["frames"] == len(got) == len(mel_chunk_starts(25, 25)) == 5
  assert np.abs(got[3].astype(int) - 10).max() < 4  # the dark frame came through untouched


def test_lipsync_still_image_with_fixed_box(tmp_path, tiny_generator):
  variables, meta = tiny_generator
  image = os.path.join(tmp_path, "face.png")
  cv2.imwrite(image, _face_frames(1)[0])
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 0.5)
  out = os.path.join(tmp_path, "o.mp4")
  stats = lipsync(
    image, audio, variables, out, meta, batch_size=4, fps=20, box=(20, 100, 50, 110), progress=False
  )
  info = video.probe(out)
  assert info.num_frames == stats["frames"] == len(mel_chunk_starts(41, 20))
  assert abs(info.fps - 20) < 1e-6 and info.has_audio


def test_no_face_anywhere_is_a_clear_error(tmp_path, tiny_generator):
  variables, meta = tiny_generator
  face = os.path.join(tmp_path, "dark.mp4")
  _write_video(face, _face_frames(6, dark=range(6)))
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 0.3)
  out = os.path.join(tmp_path, "o.mp4")
  with pytest.raises(InferenceError, match="no face detected"):
    lipsync(face, audio, variables, out, meta, batch_size=4, detector=ScriptedDetector(), progress=False)
  assert not os.path.exists(out)


def test_cli_with_official_format_pth_and_variables_dir(tmp_path, tiny_generator, capsys):
  from lipsync_jax import convert

  variables, _ = tiny_generator
  pth = os.path.join(tmp_path, "wav2lip_tiny.pth")
  convert.save_torch_checkpoint(pth, "wav2lip", variables)
  var_dir = weights.save_variables(os.path.join(tmp_path, "vars"), variables, "wav2lip")
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(8))
  speech = os.path.join(tmp_path, "speech.mp4")  # audio taken from another video's track
  _write_video(speech, _face_frames(10), wav=np.sin(np.arange(6400) * 0.05).astype(np.float32) * 0.3)
  for ckpt in (pth, var_dir):
    out = os.path.join(tmp_path, f"out_{os.path.basename(ckpt)}.mp4")
    rc = infer.main(
      [
        "--face",
        face,
        "--audio",
        speech,
        "--checkpoint",
        ckpt,
        "--out",
        out,
        "--box",
        "20",
        "100",
        "50",
        "110",
        "--batch_size",
        "8",
        "--no_progress",
      ]
    )
    assert rc == 0, capsys.readouterr().err
    info = video.probe(out)
    assert info.has_audio and info.num_frames == len(mel_chunk_starts(33, 25))


def test_cli_error_lines(tmp_path, tiny_generator, capsys):
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(4))
  garbage = os.path.join(tmp_path, "audio.mp3")
  open(garbage, "wb").write(b"\x00garbage" * 10)
  cases = [
    (
      ["--face", os.path.join(tmp_path, "missing.mp4"), "--audio", garbage, "--checkpoint", face],
      "missing.mp4",
    ),
    (["--face", face, "--audio", garbage, "--checkpoint", os.path.join(tmp_path, "nope.pth")], "nope.pth"),
  ]
  bad_pth = os.path.join(tmp_path, "bad.pth")
  open(bad_pth, "wb").write(b"not torch")
  cases.append((["--face", face, "--audio", garbage, "--checkpoint", bad_pth], "bad.pth"))
  for argv, needle in cases:
    assert infer.main(argv + ["--out", os.path.join(tmp_path, "o.mp4")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
  # An unreadable audio file, with a valid checkpoint.
  var_dir = weights.save_variables(os.path.join(tmp_path, "vars"), tiny_generator[0], "wav2lip")
  assert (
    infer.main(
      ["--face", face, "--audio", garbage, "--checkpoint", var_dir, "--out", os.path.join(tmp_path, "o.mp4")]
    )
    == 1
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "audio.mp3" in err[0]


def test_generator_bfloat16_close_to_float32(tiny_generator):
  import jax.numpy as jnp

  variables, meta = tiny_generator
  rng = np.random.default_rng(3)
  mels = rng.normal(size=(2, 80, 16)).astype(np.float32)
  crops = rng.integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
  f32 = Generator(variables, meta, 2)(mels, crops).astype(int)
  bf16 = Generator(variables, meta, 2, compute_dtype=jnp.bfloat16)(mels, crops).astype(int)
  assert np.abs(f32 - bf16).mean() < 3


class BrightBoxDetector(face_detector.FaceDetector):
  """The bounding box of the bright pixels (the drawn 'face'), None on frames without any."""

  def faces_one(self, frame):
    ys, xs = np.nonzero(frame.mean(axis=-1) > 200)
    box = [] if len(xs) < 20 else [(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)]
    return face_detector.faces_array(box, [1.0] * len(box), frame.shape[1], frame.shape[0])


class RecordingGenerator:
  """Stands in for inference's Generator: records the crops the pipeline feeds it, returns them as is."""

  batch_size, img_size, bn_folded, trace_count = 8, 96, False, 0

  def __init__(self):
    self.crops = []

  def compile(self, num_rows):
    return []

  def __call__(self, mels, crops):
    self.crops.extend(np.asarray(crops))
    return np.asarray(crops)


def test_inference_crops_equal_preprocessing_crops(tmp_path):
  """The same video and detector give the same face crops in training data (data.clips.process_clip) and
  at inference (what the lip-sync pipeline feeds the generator): one face track, same pads, same smoothing.
  Fails if either path changes its track (different pads, smoothing, fill or crop)."""
  from lipsync_jax.data import clips

  rng = np.random.default_rng(7)
  num = 40
  frames = []
  for i in range(num):
    f = np.full((H, W, 3), 60, np.uint8)
    x, y = 50 + int(rng.integers(-4, 5)), 20 + int(rng.integers(-4, 5))  # jitter: smoothing matters
    f[y : y + 70, x : x + 56] = 235
    f[y + 45 : y + 52, x + 14 : x + 42] = 40
    if i in (9, 23):  # two frames whose face the detector misses: the nearest-box fill is part of the track
      f[:16, :16] = 160  # (the mark it misses them by; the same shot, no scene cut)
    frames.append(f)
  t = np.arange(num * 640) / 16000
  clip = os.path.join(tmp_path, "clip.mp4")
  _write_video(clip, frames, wav=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
  speech = _write_wav(os.path.join(tmp_path, "speech.wav"), num / 25 + 0.5)  # every video frame is used

  class MissesMarkedFrames(BrightBoxDetector):
    def faces_one(self, frame):
      faces = super().faces_one(frame)
      return faces[:0] if frame[:16, :16].mean() > 110 else faces

  record, stats = clips.process_clip(
    clips.ClipTask("train", "c", clip), clips.PreprocessConfig(), MissesMarkedFrames()
  )
  assert record.frames.shape == (num, 96, 96, 3)
  assert stats["no_face_frames"] == 2 and stats["scene_cuts"] == 0

  def inference_crops(**options):
    recorder = RecordingGenerator()
    lipsync(
      clip,
      speech,
      None,
      os.path.join(tmp_path, "out.mp4"),
      detector=MissesMarkedFrames(),
      generator=recorder,
      progress=False,
      **options,
    )
    assert len(recorder.crops) >= num
    return np.stack(recorder.crops[:num])

  np.testing.assert_array_equal(inference_crops(), record.frames)
  # The comparison is sensitive to the track: other pads or no smoothing give other crops.
  assert not np.array_equal(inference_crops(nosmooth=True), record.frames)
  assert not np.array_equal(inference_crops(pads=(0, 0, 0, 0)), record.frames)


def test_lipsync_bucketed_equals_one_fixed_shape(tmp_path, tiny_generator):
  """End to end, the bucketed generator (a 22-frame clip at batch 16: batches of 16 and 6 rows) writes the
  same video as the former single padded shape."""
  variables, meta = tiny_generator
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(12))
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 1.0)
  outs, stats = [], []
  for name, generator in (
    ("fixed", Generator(variables, meta, 16, buckets=(16,))),
    ("bucketed", Generator(variables, meta, 16)),
  ):
    out = os.path.join(tmp_path, f"{name}.mp4")
    stats.append(lipsync(face, audio, None, out, box=(20, 100, 50, 110), generator=generator, progress=False))
    outs.append(video.read_frames(out)[0].astype(int))
  assert stats[0]["frames"] == stats[1]["frames"] == 22
  assert stats[0]["compiles"] == 1 and stats[1]["compiles"] == 2
  assert outs[0].shape == outs[1].shape
  assert np.abs(outs[0] - outs[1]).mean() < 0.05 and np.abs(outs[0] - outs[1]).max() <= 8


def test_cli_second_run_compiles_nothing(tmp_path, tiny_generator):
  """Two CLI processes on one cache directory: the first compiles its XLA programs (the generator's batch
  shapes), the second loads every one of them from the persistent cache."""
  import json
  import subprocess
  import sys

  var_dir = weights.save_variables(os.path.join(tmp_path, "vars"), tiny_generator[0], "wav2lip")
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(10))
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 1.0)
  # Every program is cached however fast it compiled (the tiny generator may take < MIN_COMPILE_TIME_S).
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PLATFORMS="cpu")
  env[compile_cache.ENV] = os.path.join(tmp_path, "cache")
  runs = []
  for i in range(2):
    out, stats = os.path.join(tmp_path, f"o{i}.mp4"), os.path.join(tmp_path, f"s{i}.json")
    cmd = [sys.executable, "-m", "lipsync_jax.infer", "--face", face, "--audio", audio]
    cmd += ["--checkpoint", var_dir, "--out", out, "--box", "20", "100", "50", "110", "--batch_size", "8"]
    cmd += ["--no_progress", "--stats_json", stats]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with open(stats) as f:
      runs.append(json.load(f))
  first, second = runs
  assert first["compile_cache_dir"] == env[compile_cache.ENV]
  assert first["xla_programs"] >= 2 and first["xla_cache_hits"] == 0  # batch shapes 8 and 6
  assert first["frames"] == 22 and first["compiles"] == 2
  assert second["xla_programs"] == first["xla_programs"]
  assert second["xla_cache_hits"] == second["xla_programs"]
  assert "0 compiled" in proc.stdout and f"{second['xla_programs']} from the compile cache" in proc.stdout
  first_frames = video.read_frames(os.path.join(tmp_path, "o0.mp4"))[0]
  np.testing.assert_array_equal(video.read_frames(out)[0], first_frames)


def test_cli_reads_and_writes_gcs(tmp_path, tiny_generator, capsys, gcs_dir):
  """Every path on gs:// (the emulator): face, audio, checkpoint (a variables dir), output and stats JSON;
  a missing gs:// input is named like a local one, and a failed run leaves no output object."""
  import json

  from lipsync_jax import fs

  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(8))
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 0.6)
  fs.copy(face, f"{gcs_dir}/in/face.mp4")
  fs.copy(audio, f"{gcs_dir}/in/a.wav")
  var_dir = weights.save_variables(f"{gcs_dir}/vars", tiny_generator[0], "wav2lip")
  out, stats_json = f"{gcs_dir}/out/result.mp4", f"{gcs_dir}/out/stats.json"
  args = ["--checkpoint", var_dir, "--box", "20", "100", "50", "110", "--batch_size", "8", "--no_progress"]
  inputs = ["--face", f"{gcs_dir}/in/face.mp4", "--audio", f"{gcs_dir}/in/a.wav"]
  rc = infer.main(inputs + ["--out", out, "--stats_json", stats_json] + args)
  assert rc == 0, capsys.readouterr().err
  assert f"wrote {out}:" in capsys.readouterr().out
  with fs.local_copy(out) as local:
    info = video.probe(local)
  assert info.has_audio and info.num_frames == len(mel_chunk_starts(1 + 9600 * 80 // 16000, 25))
  with fs.open(stats_json) as f:
    assert json.load(f)["out"] == out
  # Missing input on gs://: one error line naming it. An unreadable audio: no output object is left.
  assert infer.main(["--face", f"{gcs_dir}/in/absent.mp4", "--audio", audio, "--out", out] + args) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f"{gcs_dir}/in/absent.mp4" in err[0], err
  fs.copy(__file__, f"{gcs_dir}/in/garbage.wav")
  failed = f"{gcs_dir}/out/failed.mp4"
  bad_audio = ["--face", f"{gcs_dir}/in/face.mp4", "--audio", f"{gcs_dir}/in/garbage.wav"]
  assert infer.main(bad_audio + ["--out", failed] + args) == 1
  assert "garbage.wav" in capsys.readouterr().err and not fs.exists(failed)
