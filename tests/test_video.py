"""Tests for lipsync_jax.media.video: H.264+AAC write/read round trip, probing, audio extraction, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile

from lipsync_jax.media import audio, video

SR = 16000


def _frame(i: int, height: int, width: int) -> np.ndarray:
  """A smooth test pattern whose blue level encodes the frame index."""
  frame = np.zeros((height, width, 3), np.uint8)
  frame[..., 0] = 20 + 8 * i  # B
  frame[..., 1] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]  # G ramp
  frame[..., 2] = 180  # R
  return frame


def _tone(seconds: float) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_round_trip_frames_fps_pixels_and_audio(tmp_path):
  path = tmp_path / "clip.mp4"
  n, height, width = 30, 64, 96
  wav = _tone(n / 25)
  with video.VideoWriter(path, fps=25, width=width, height=height) as writer:
    for i in range(n):
      writer.write(_frame(i, height, width))
    writer.close(audio=wav)
  assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]  # no temp files left

  info = video.probe(path)
  assert (info.num_frames, info.width, info.height) == (n, width, height)
  assert info.fps == pytest.approx(25.0) and info.has_audio and info.has_video
  assert info.duration == pytest.approx(n / 25, abs=0.1)

  frames, fps = video.read_frames(path)
  assert fps == pytest.approx(25.0)
  assert frames.shape == (n, height, width, 3) and frames.dtype == np.uint8
  for i in (0, 13, n - 1):
    expected = _frame(i, height, width).astype(np.float32)
    assert np.abs(frames[i].astype(np.float32) - expected).mean() < 3.0  # BGR order, lossy but close
  streamed = video.iter_frames(path)
  first = next(streamed)
  streamed.close()
  np.testing.assert_array_equal(first, frames[0])

  decoded = video.read_audio(path)
  assert decoded.dtype == np.float32 and decoded.ndim == 1
  assert decoded.size == wav.size  # encoder padding trimmed
  rms = np.sqrt(np.mean(decoded[2000:-2000] ** 2))
  assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
  np.testing.assert_array_equal(audio.load_wav(path), decoded)  # load_wav falls back to PyAV for mp4


def test_odd_size_is_padded_to_even(tmp_path):
  path = tmp_path / "odd.mp4"
  with video.VideoWriter(path, fps=25, width=33, height=21) as writer:
    assert writer.frame_size == (34, 22)
    for i in range(3):
      writer.write(_frame(i, 21, 33))
  info = video.probe(path)
  assert (info.width, info.height, info.num_frames, info.has_audio) == (34, 22, 3, False)


def test_writer_rejects_wrong_frames_and_cleans_up_on_error(tmp_path):
  path = tmp_path / "bad.mp4"
  with pytest.raises(video.VideoError, match="expected a"):
    with video.VideoWriter(path, fps=25, width=32, height=32) as writer:
      writer.write(np.zeros((16, 16, 3), np.uint8))
  assert os.listdir(tmp_path) == []


def test_read_audio_from_wav_resamples(tmp_path):
  path = tmp_path / "tone.wav"
  soundfile.write(path, np.stack([_tone(1.0)] * 2, axis=1), SR)
  wav = video.read_audio(path, sr=8000)
  assert wav.size == pytest.approx(8000, abs=2)
  info = video.probe(path)
  assert not info.has_video and info.has_audio and info.duration == pytest.approx(1.0, abs=0.01)


def test_errors_name_the_file(tmp_path):
  silent_video = tmp_path / "noaudio.mp4"
  with video.VideoWriter(silent_video, fps=25, width=32, height=32) as writer:
    writer.write(_frame(0, 32, 32))
  with pytest.raises(video.VideoError, match="noaudio.mp4.*no audio stream"):
    video.read_audio(silent_video)

  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(b"\x00\x01not a video" * 100)
  for fn in (video.probe, video.read_frames, video.read_audio, lambda p: list(video.iter_frames(p))):
    with pytest.raises(video.VideoError, match="garbage.mp4"):
      fn(garbage)
  with pytest.raises(video.VideoError, match="not found"):
    video.probe(tmp_path / "missing.mp4")


def test_same_frames_give_identical_files(tmp_path):
  digests = []
  for name in ("a.mp4", "b.mp4"):
    with video.VideoWriter(tmp_path / name, fps=25, width=48, height=48) as writer:
      for i in range(12):
        frame = _frame(i, 48, 48).copy()  # fresh buffers each time
        frame[10 + i : 20 + i, 5:15] = 255  # some motion for inter prediction
        writer.write(frame)
      writer.close(audio=_tone(0.48))
    digests.append((tmp_path / name).read_bytes())
  assert digests[0] == digests[1]
