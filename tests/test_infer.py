"""Tests for lipsync_jax.infer: mel chunks, streaming boxes, fixed-shape generator, end-to-end mp4s, CLI."""

from __future__ import annotations

import os

import cv2
import jax
import numpy as np
import pytest

from lipsync_jax.media import detectors as face_detection, video
from lipsync_jax import infer

WIDTH = 1 / 16  # tiny generator
H, W = 120, 160
FACE_BOX = (50, 20, 110, 100)  # x1, y1, x2, y2 of the drawn face


@pytest.fixture(scope="module")
def tiny_generator():
  from lipsync_jax.models import Wav2Lip, example_inputs
  variables = Wav2Lip(width_multiplier=WIDTH).init(jax.random.key(0), *example_inputs("wav2lip", 1, 96))
  variables = jax.tree.map(np.asarray, variables)
  return variables, {"kind": "wav2lip", "width_multiplier": WIDTH, "img_size": 96}


class ScriptedDetector(face_detection.FaceDetector):
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
    start = int(i * 80. / fps)
    if start + 16 > num_steps:
      chunks.append(num_steps - 16)
      break
    chunks.append(start)
    i += 1
  return chunks


@pytest.mark.parametrize("steps,fps", [(16, 25), (17, 25), (100, 25), (333, 30), (80, 29.97), (400, 24)])
def test_mel_chunk_starts_match_original(steps, fps):
  assert infer.mel_chunk_starts(steps, fps) == _original_chunk_count(steps, fps)


def test_mel_chunk_starts_too_short():
  with pytest.raises(infer.InferenceError, match="too short"):
    infer.mel_chunk_starts(10, 25)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_streaming_boxes_equal_whole_video(chunk):
  rng = np.random.default_rng(chunk)
  n = 50
  raw = [tuple(int(v) for v in (rng.integers(20, 40), rng.integers(10, 30), rng.integers(100, 120),
                                 rng.integers(80, 110))) for _ in range(n)]
  for i in (0, 1, 17, 30, 31, 49):  # short gaps (within the look-ahead), incl. both ends
    raw[i] = None
  pads = (0, 10, 0, 0)
  padded = [None if b is None else face_detection.pad_and_clip(b, pads, W, H) for b in raw]
  filled, missing = face_detection.fill_missing(padded)
  want = face_detection.smooth_boxes(filled, 5)
  tracker = infer.BoxTracker(pads, W, H)
  got = []
  for start in range(0, n, chunk):
    tracker.add(raw[start:start + chunk])
    got += tracker.finalize(end=False)
  got += tracker.finalize(end=True)
  assert len(got) == n
  np.testing.assert_array_equal(np.asarray(got), want)
  assert tracker.frames_without_face == missing == 6


def test_passthrough_policy_marks_missing_frames():
  tracker = infer.BoxTracker((0, 0, 0, 0), W, H, smooth=False, no_face="passthrough")
  tracker.add([FACE_BOX, None, FACE_BOX])
  boxes = tracker.finalize(end=True)
  assert boxes[0] == FACE_BOX and boxes[1] is None and boxes[2] == FACE_BOX
  assert tracker.passthrough_frames == 1


def test_generator_fixed_batch_never_recompiles(tiny_generator):
  variables, meta = tiny_generator
  runner = infer.GeneratorRunner(variables, meta, batch_size=4)
  rng = np.random.default_rng(0)
  outs = []
  for k in (4, 4, 1, 3):
    out = runner.run(rng.normal(size=(k, 80, 16)).astype(np.float32),
                     rng.integers(0, 255, (k, 96, 96, 3), dtype=np.uint8))
    assert out.shape == (k, 96, 96, 3) and out.dtype == np.uint8
    outs.append(out)
  assert runner.trace_count == 1
  # Padding does not change results: the single item of a padded batch equals its value in a full batch.
  mels = rng.normal(size=(4, 80, 16)).astype(np.float32)
  crops = rng.integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)
  full = runner.run(mels, crops)
  np.testing.assert_array_equal(runner.run(mels[:1], crops[:1])[0], full[0])
  assert runner.trace_count == 1


def test_lipsync_video_loops_and_counts_missing_faces(tmp_path, tiny_generator):
  variables, meta = tiny_generator
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(12, dark=(5,)))
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 1.0)  # 25 frames > 12 video frames: loops
  out = os.path.join(tmp_path, "out", "result.mp4")
  stats = infer.lipsync(face, audio, variables, out, meta, batch_size=8, detector=ScriptedDetector(),
                        progress=False)
  want_frames = len(infer.mel_chunk_starts(81, 25))
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
  stats = infer.lipsync(face, audio, variables, out, meta, batch_size=16, detector=ScriptedDetector(),
                        no_face="passthrough", progress=False)
  assert stats["passthrough_frames"] == 1
  got, _ = video.read_frames(out)
  assert stats["frames"] == len(got) == len(infer.mel_chunk_starts(25, 25)) == 5
  assert np.abs(got[3].astype(int) - 10).max() < 4  # the dark frame came through untouched


def test_lipsync_still_image_with_fixed_box(tmp_path, tiny_generator):
  variables, meta = tiny_generator
  image = os.path.join(tmp_path, "face.png")
  cv2.imwrite(image, _face_frames(1)[0])
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 0.5)
  out = os.path.join(tmp_path, "o.mp4")
  stats = infer.lipsync(image, audio, variables, out, meta, batch_size=4, fps=20, box=(20, 100, 50, 110),
                        progress=False)
  info = video.probe(out)
  assert info.num_frames == stats["frames"] == len(infer.mel_chunk_starts(41, 20))
  assert abs(info.fps - 20) < 1e-6 and info.has_audio


def test_no_face_anywhere_is_a_clear_error(tmp_path, tiny_generator):
  variables, meta = tiny_generator
  face = os.path.join(tmp_path, "dark.mp4")
  _write_video(face, _face_frames(6, dark=range(6)))
  audio = _write_wav(os.path.join(tmp_path, "a.wav"), 0.3)
  out = os.path.join(tmp_path, "o.mp4")
  with pytest.raises(infer.InferenceError, match="no face detected"):
    infer.lipsync(face, audio, variables, out, meta, batch_size=4, detector=ScriptedDetector(),
                  progress=False)
  assert not os.path.exists(out)


def test_cli_with_official_format_pth_and_variables_dir(tmp_path, tiny_generator, capsys):
  from lipsync_jax import convert
  variables, _ = tiny_generator
  pth = os.path.join(tmp_path, "wav2lip_tiny.pth")
  convert.save_torch_checkpoint(pth, "wav2lip", variables)
  var_dir = convert.save_variables(os.path.join(tmp_path, "vars"), variables, "wav2lip")
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(8))
  speech = os.path.join(tmp_path, "speech.mp4")  # audio taken from another video's track
  _write_video(speech, _face_frames(10), wav=np.sin(np.arange(6400) * 0.05).astype(np.float32) * 0.3)
  for ckpt in (pth, var_dir):
    out = os.path.join(tmp_path, f"out_{os.path.basename(ckpt)}.mp4")
    rc = infer.main(["--face", face, "--audio", speech, "--checkpoint", ckpt, "--out", out,
                     "--box", "20", "100", "50", "110", "--batch_size", "8", "--no_progress"])
    assert rc == 0, capsys.readouterr().err
    info = video.probe(out)
    assert info.has_audio and info.num_frames == len(infer.mel_chunk_starts(33, 25))


def test_cli_error_lines(tmp_path, tiny_generator, capsys):
  face = os.path.join(tmp_path, "face.mp4")
  _write_video(face, _face_frames(4))
  garbage = os.path.join(tmp_path, "audio.mp3")
  open(garbage, "wb").write(b"\x00garbage" * 10)
  cases = [
      (["--face", os.path.join(tmp_path, "missing.mp4"), "--audio", garbage, "--checkpoint", face],
       "missing.mp4"),
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
  from lipsync_jax import convert
  var_dir = convert.save_variables(os.path.join(tmp_path, "vars"), tiny_generator[0], "wav2lip")
  assert infer.main(["--face", face, "--audio", garbage, "--checkpoint", var_dir, "--out",
                     os.path.join(tmp_path, "o.mp4")]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "audio.mp3" in err[0]


def test_load_checkpoint_from_training_workdir(tmp_path, tiny_generator):
  """A generator-stage workdir written by lipsync_jax.training.checkpointing -> the generator variables + meta."""
  import flax.struct
  import jax.numpy as jnp
  from lipsync_jax.training import checkpointing

  class State(flax.struct.PyTreeNode):
    step: jnp.ndarray
    params: dict
    batch_stats: dict

  variables, _ = tiny_generator
  workdir = os.path.join(tmp_path, "wd")
  state = State(step=jnp.asarray(7), params=variables["params"], batch_stats=variables["batch_stats"])
  with checkpointing.make_manager(workdir, async_save=False) as manager:
    checkpointing.save(manager, 7, state, None, {"stage": "generator", "width_multiplier": WIDTH,
                                                 "img_size": 96})
    manager.wait_until_finished()
  loaded, meta = infer.load_checkpoint(workdir, "wav2lip")
  assert meta["width_multiplier"] == WIDTH and meta["img_size"] == 96
  np.testing.assert_array_equal(loaded["params"]["output_block_1"]["kernel"],
                                variables["params"]["output_block_1"]["kernel"])
  with pytest.raises(ValueError, match="expert"):
    infer.load_checkpoint(workdir, "syncnet")  # no expert in a generator workdir


def test_generator_bfloat16_close_to_float32(tiny_generator):
  import jax.numpy as jnp
  variables, meta = tiny_generator
  rng = np.random.default_rng(3)
  mels = rng.normal(size=(2, 80, 16)).astype(np.float32)
  crops = rng.integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
  f32 = infer.GeneratorRunner(variables, meta, 2).run(mels, crops).astype(int)
  bf16 = infer.GeneratorRunner(variables, meta, 2, compute_dtype=jnp.bfloat16).run(mels, crops).astype(int)
  assert np.abs(f32 - bf16).mean() < 3
