"""THE frame-rate rule: which source frame each output frame of a fixed-rate (25 fps) video shows.

Owns the one resampling rule used by preprocessing, inference and evaluation (through
`lipsync_jax.media.video.iter_frames(path, fps=25.0)` or `resample_indices`):

  Times are presentation timestamps measured from the first frame (t_0 = 0), so a variable-frame-rate
  source is resampled by when its frames are really shown. Output frame k (time k / target_fps) shows the
  source frame whose timestamp is nearest to k / target_fps; on a tie (k / target_fps exactly halfway
  between two frames) the EARLIER frame. Output frames are made while k / target_fps < end, where end is
  the last frame's timestamp plus its duration, taken as the interval before it (1 / target_fps for a
  one-frame source): a 36-frame 30 fps clip (1.2 s) gives 30 frames, 48 frames at 24 fps give 50.
  Frames are dropped or repeated; the audio is untouched, so sync stays within half a source frame.
  A frame whose timestamp does not increase over the previous frame's (damaged streams) is dropped.

Arithmetic is exact (fractions.Fraction): pass timestamps as Fractions (PyAV's pts * time_base) for exact
ties; floats are taken at their exact binary value.
"""

from __future__ import annotations

import fractions
import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
DEFAULT_FPS = 25.0


def _fraction(value: numbers.Real | fractions.Fraction) -> fractions.Fraction:
  if isinstance(value, fractions.Fraction):
    return value
  if isinstance(value, (int, np.integer)):
    return fractions.Fraction(int(value))
  return fractions.Fraction(float(value))


def target_rate(target_fps: float) -> fractions.Fraction:
  """`target_fps` as an exact rate (25.0 -> 25, 29.97... -> 30000/1001)."""
  if not target_fps or target_fps <= 0:
    raise ValueError(f"target fps must be > 0, got {target_fps!r}")
  if isinstance(target_fps, fractions.Fraction):
    return target_fps
  return fractions.Fraction(target_fps).limit_denominator(1001)


def resample(
  timed: Iterable[tuple[numbers.Real | fractions.Fraction, T]], target_fps: float = DEFAULT_FPS
) -> Iterator[T]:
  """Streams the items of (timestamp seconds, item) pairs at `target_fps` by the rule above.

  An item shown by several output frames is yielded that many times (the same object). Holds one item.
  """
  rate = target_rate(target_fps)
  k = 0
  start = None
  prev_t, prev_item, interval = None, None, None
  for t, item in timed:
    t = _fraction(t)
    if start is None:
      start = t
    t -= start
    if prev_t is not None:
      if t <= prev_t:
        continue  # a non-increasing timestamp: the frame is never shown
      twice_mid = prev_t + t  # k / rate <= (prev_t + t) / 2  <=>  2 k <= rate (prev_t + t): ties -> earlier
      while 2 * k <= rate * twice_mid:
        yield prev_item
        k += 1
      interval = t - prev_t
    prev_t, prev_item = t, item
  if prev_t is None:
    return
  end = prev_t + (interval if interval is not None else 1 / rate)
  while k < rate * end:  # k / rate < end
    yield prev_item
    k += 1


def resample_indices(
  timestamps: Sequence[numbers.Real | fractions.Fraction], target_fps: float = DEFAULT_FPS
) -> np.ndarray:
  """Source frame index of every output frame at `target_fps` (int64), for frames at `timestamps` (s)."""
  return np.fromiter(resample(((t, i) for i, t in enumerate(timestamps)), target_fps), dtype=np.int64)
