"""Tests for lipsync_jax.inference + the infer CLI: mel chunks, the batch runner, the generator, end-to-end
mp4s, crops identical to preprocessing, CLI."""

from __future__ import annotations

import os

import cv2
import jax
import numpy as np
import pytest

from lipsync_jax import infer, weights
from lipsync_jax.inference.frames import InferenceError
from lipsync_jax.inference.lipsync import Generator, lipsync, mel_chunk_starts
from lipsync_jax.inference.runner import BatchRunner
from lipsync_jax.media import detectors, video

WIDTH = 1 / 16  # tiny generator
H, W = 120, 160
FACE_BOX = (50, 20, 110, 100)  # x1, y1, x2, y2 of the drawn face


@pytest.fixture(scope="module")
def tiny_generator():
  from lipsync_jax.models import Wav2Lip, example_inputs

  variables = Wav2Lip(width_multiplier=WIDTH).init(jax.random.key(0), *example_inputs("wav2lip", 1, 96))
  variables = jax.tree.map(np.asarray, variables)
  return variables, {"kind": "wav2lip", "width_multiplier": WIDTH, "img_size": 96}


class ScriptedDetector(detectors.FaceDetector):
  """The drawn face's box, except on frames whose mean brightness marks them as 'no face' (dark frames)."""

  def detect_one(self, frame):
    return None if frame.mean() < 40 else FACE_BOX


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


def test_generator_fixed_batch_never_recompiles(tiny_generator):
  variables, meta = tiny_generator
  runner = Generator(variables, meta, batch_size=4)
  rng = np.random.default_rng(0)
  outs = []
  for k in (4, 4, 1, 3):
    out = runner(
      rng.normal(size=(k, 80, 16)).astype(np.float32), rng.integers(0, 255, (k, 96, 96, 3), dtype=np.uint8)
    )
    assert out.shape == (k, 96, 96, 3) and out.dtype == np.uint8
    outs.append(out)
  assert runner.trace_count == 1
  # Padding does not change results: the single item of a padded batch equals its value in a full batch.
  mels = rng.normal(size=(4, 80, 16)).astype(np.float32)
  crops = rng.integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)
  full = runner(mels, crops)
  np.testing.assert_array_equal(runner(mels[:1], crops[:1])[0], full[0])
  assert runner.trace_count == 1


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
  assert stats["compiles"] == 1 and stats["batches"] == 3
  assert stats["frames_without_face"] == 1 and stats["passthrough_frames"] == 0
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


class BrightBoxDetector(detectors.FaceDetector):
  """The bounding box of the bright pixels (the drawn 'face'), None on frames without any."""

  def detect_one(self, frame):
    ys, xs = np.nonzero(frame.mean(axis=-1) > 200)
    if len(xs) < 20:
      return None
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


class RecordingGenerator:
  """Stands in for inference's Generator: records the crops the pipeline feeds it, returns them as is."""

  batch_size, img_size, bn_folded, trace_count = 8, 96, False, 0

  def __init__(self):
    self.crops = []

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
    if i not in (9, 23):  # two frames without a face: the nearest-box fill is part of the track
      x, y = 50 + int(rng.integers(-4, 5)), 20 + int(rng.integers(-4, 5))  # jitter: smoothing matters
      f[y : y + 70, x : x + 56] = 235
      f[y + 45 : y + 52, x + 14 : x + 42] = 40
    frames.append(f)
  t = np.arange(num * 640) / 16000
  clip = os.path.join(tmp_path, "clip.mp4")
  _write_video(clip, frames, wav=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
  speech = _write_wav(os.path.join(tmp_path, "speech.wav"), num / 25 + 0.5)  # every video frame is used

  record, _ = clips.process_clip(
    clips.ClipTask("train", "c", clip), clips.PreprocessConfig(), BrightBoxDetector()
  )
  assert record.frames.shape == (num, 96, 96, 3)

  def inference_crops(**options):
    recorder = RecordingGenerator()
    lipsync(
      clip,
      speech,
      None,
      os.path.join(tmp_path, "out.mp4"),
      detector=BrightBoxDetector(),
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
