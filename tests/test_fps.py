"""Tests for lipsync_jax.media.fps (the one fps rule) and video.iter_frames(path, fps=25.0) on real files.

Files are written here with PyAV (H.264) at 24, 29.97 (30000/1001), 30 and 50 fps and with irregular
timestamps (variable frame rate); frame i carries i as an 8-bit binary code of black/white blocks, so every
decoded 25 fps frame names the source frame it came from. The expected mapping is computed by brute force
from the definition (nearest timestamp, the earlier on a tie, output frames while k / 25 < end).
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from lipsync_jax.media import fps, video

BITS, BLOCK, HEIGHT = 8, 16, 32


def _paint(index: int) -> np.ndarray:
  frame = np.zeros((HEIGHT, BITS * BLOCK, 3), np.uint8)
  for bit in range(BITS):
    if index >> bit & 1:
      frame[:, bit * BLOCK : (bit + 1) * BLOCK] = 255
  return frame


def _read_index(frame: np.ndarray) -> int:
  levels = frame[4:-4].reshape(HEIGHT - 8, BITS, BLOCK, 3)[:, :, 4:-4].mean(axis=(0, 2, 3))
  return int(sum(1 << bit for bit in range(BITS) if levels[bit] > 128))


def _write(path: str, pts: list[int], time_base: fractions.Fraction, rate) -> None:
  """H.264 mp4 whose frame i has presentation time pts[i] * time_base."""
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = BITS * BLOCK, HEIGHT, "yuv420p"
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    for i, p in enumerate(pts):
      frame = av.VideoFrame.from_ndarray(_paint(i), format="bgr24")
      frame.pts, frame.time_base = p, time_base
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _expected(times: list[fractions.Fraction], target: int = 25) -> list[int]:
  """The rule by brute force: output k at k/target takes the nearest frame (earlier on a tie)."""
  start = times[0]
  times = [t - start for t in times]
  end = times[-1] + (times[-1] - times[-2])
  out, k = [], 0
  while fractions.Fraction(k, target) < end:
    time = fractions.Fraction(k, target)
    out.append(min(range(len(times)), key=lambda i: (abs(times[i] - time), i)))
    k += 1
  return out


@pytest.mark.parametrize(
  "rate,num_frames,count",
  [
    (fractions.Fraction(24), 48, 50),  # 2 s: one frame in 25 repeated
    (fractions.Fraction(30000, 1001), 60, 51),  # 2.002 s: 51 frames start before the end
    (fractions.Fraction(30), 36, 30),  # 1.2 s
    (fractions.Fraction(50), 100, 50),  # every other frame
  ],
)
def test_constant_rates_to_25(tmp_path, rate, num_frames, count):
  path = str(tmp_path / f"{float(rate):.2f}.mp4")
  _write(path, list(range(num_frames)), 1 / rate, rate)
  native = [_read_index(f) for f in video.iter_frames(path)]
  assert native == list(range(num_frames))  # the painting survives H.264
  got = [_read_index(f) for f in video.iter_frames(path, fps=25.0)]
  times = [i / rate for i in range(num_frames)]
  assert got == _expected(times) and len(got) == count
  # The same rule from timestamps alone (what a caller with probe()d timestamps uses).
  assert fps.resample_indices(times).tolist() == got
  if rate == 30:
    assert got[:7] == [0, 1, 2, 4, 5, 6, 7]  # round(1.2 k): frame 3 dropped
  if rate == 24:
    assert got[:3] == [0, 1, 2] and got[12:14] == [12, 12]  # 12/24 s = 0.5 s is nearest to 12/25 and 13/25


def test_variable_frame_rate(tmp_path):
  time_base = fractions.Fraction(1, 1000)  # ms
  pts = [0, 30, 50, 90, 100, 170, 180, 260, 300, 390, 400, 430]
  path = str(tmp_path / "vfr.mp4")
  _write(path, pts, time_base, 25)
  got = [_read_index(f) for f in video.iter_frames(path, fps=25.0)]
  times = [p * time_base for p in pts]
  assert got == _expected(times)
  # By hand: k=1 (40 ms) is halfway between 30 and 50 ms -> the earlier frame 1; 80 ms -> 90 (frame 3);
  # 120 ms -> 100 (frame 4); 160 -> 170 (5); 200 -> 180 (6); 240 -> 260 (7); 280 ms is halfway between
  # 260 and 300 -> frame 7; 320 -> 300 (8); 360 -> 390 (9); 400 -> 400 (10); 440 -> 430 (11) (end 460 ms).
  assert got == [0, 1, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11]


def test_rule_edge_cases():
  assert fps.resample_indices([]).tolist() == []
  assert fps.resample_indices([3.0]).tolist() == [0]  # one frame: one output frame
  # Timestamps count from the first frame; a non-increasing timestamp drops that frame.
  step = fractions.Fraction(1, 25)
  assert fps.resample_indices([10 + 0 * step, 10 + step, 10 + step, 10 + 2 * step]).tolist() == [0, 1, 3]
  # Exact ties take the earlier frame: 12.5 fps source, output frame 1 (0.04 s) is between 0 and 0.08.
  third = fractions.Fraction(2, 25)
  assert fps.resample_indices([0, third, 2 * third]).tolist() == [0, 0, 1, 1, 2, 2]
  assert fps.resample_indices(np.arange(10) / 25.0).tolist() == list(range(10))  # 25 fps: identity
  with pytest.raises(ValueError, match="target fps"):
    fps.resample_indices([0.0], target_fps=0)
