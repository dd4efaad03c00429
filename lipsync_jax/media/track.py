"""THE face track: raw per-frame detections -> the final box of every frame, and the crop it cuts.

Owns the one way boxes are made final, used alike by preprocessing (lipsync_jax.data.clips), inference and
evaluation, so that a training crop and an inference crop of the same frame with the same detector are
identical:

  detect (per frame, box or None) -> pad_and_clip -> fill_missing (nearest detected frame)
    -> smooth_boxes (the original's forward window) -> crop_and_resize

`FaceTrack` does this incrementally (bounded look-ahead, for streaming inference); `track_boxes` is the
whole-clip call and is FaceTrack fed every detection then finalised at the end (the same code path).

Boxes are (x1, y1, x2, y2) integer pixel coordinates of the source frame, x2/y2 exclusive (the slice
`frame[y1:y2, x1:x2]`), the convention of the original Wav2Lip code. Padding is per box, so padding before
or after the nearest-box fill gives the same boxes.

FaceTrack, incrementally: `add(raw_boxes)` appends the detections of the next frames (padded and clipped);
`finalize(end)` returns the boxes of the frames that became final, in order. A frame is final once the
`smooth_window` frames after it are known (or at `end`). Frames without a face get the nearest detected box
among the frames known so far (the last detection before the gap, reaching back at most `max_wait` frames,
and the detections up to the newest frame), or None with no_face='passthrough' (the caller passes such
frames through unchanged). Frames before the first face wait up to `max_wait` frames for it; after that
they are final as None (passed through). Fed everything and finalised once with end=True, the result is the
whole-clip rule exactly (what `track_boxes` does): every missing frame takes its nearest detected frame (the
earlier on a tie), then the original's smoothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]
# (top, bottom, left, right) pixels added around a detected box; the original inference default.
DEFAULT_PADS = (0, 10, 0, 0)
DEFAULT_SMOOTH_WINDOW = 5
NO_FACE_POLICIES = ("carry", "passthrough")


def pad_and_clip(
  box: Sequence[int], pads: Sequence[int] = DEFAULT_PADS, width: int | None = None, height: int | None = None
) -> Box:
  """Grows `box` by pads=(top, bottom, left, right) pixels and clips it to a width x height frame.

  Same arithmetic as the original inference (`y1 = max(0, y1 - top)`, `y2 = min(h, y2 + bottom)`, ...).
  """
  if width is None or height is None:
    raise ValueError("pad_and_clip needs the frame's width and height")
  if len(pads) != 4:
    raise ValueError(f"pads must be (top, bottom, left, right), got {pads!r}")
  top, bottom, left, right = (int(p) for p in pads)
  x1, y1, x2, y2 = (int(v) for v in box)
  return (max(0, x1 - left), max(0, y1 - top), min(int(width), x2 + right), min(int(height), y2 + bottom))


def smooth_boxes(boxes: np.ndarray, window: int = DEFAULT_SMOOTH_WINDOW) -> np.ndarray:
  """Temporal smoothing exactly as the original `get_smoothened_boxes`: box i becomes the mean of boxes
  i..i+window-1 (the last `window` boxes near the end), truncated to int. window <= 1 returns a copy."""
  boxes = np.array(boxes, dtype=np.int64).reshape(-1, 4)  # a copy; updated in place like the original
  if window <= 1 or len(boxes) == 0:
    return boxes
  count = len(boxes)
  for i in range(count):
    chunk = boxes[count - window :] if i + window > count else boxes[i : i + window]
    boxes[i] = np.mean(chunk, axis=0)
  return boxes


def fill_missing(boxes: Sequence[Sequence[int] | None]) -> tuple[np.ndarray, int]:
  """Replaces each missing (None) box by the nearest detected one (the earlier on a tie).

  Returns (boxes (N, 4) int64, number of frames that had no box). Raises ValueError if no frame has a box.
  """
  count = len(boxes)
  present = np.array([b is not None for b in boxes], dtype=bool)
  if count and not present.any():
    raise ValueError(f"no face box in any of the {count} frames")
  if count == 0:
    return np.zeros((0, 4), np.int64), 0
  known = np.flatnonzero(present)
  # For each frame, the index of the nearest detected frame: compare the neighbour on each side.
  right = np.searchsorted(known, np.arange(count), side="left").clip(0, len(known) - 1)
  left = (right - 1).clip(0, len(known) - 1)
  pick_left = np.abs(np.arange(count) - known[left]) <= np.abs(known[right] - np.arange(count))
  nearest = np.where(pick_left, known[left], known[right])
  filled = np.array([boxes[j] for j in nearest], dtype=np.int64).reshape(count, 4)
  return filled, int(count - present.sum())


def crop_and_resize(
  frame: np.ndarray, box: Sequence[int], size: int, interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
  """frame[y1:y2, x1:x2] resized to (size, size) (cv2.resize, bilinear like the original)."""
  x1, y1, x2, y2 = (int(v) for v in box)
  crop = frame[max(0, y1) : y2, max(0, x1) : x2]
  if crop.size == 0:
    raise ValueError(f"face box {tuple(box)} is empty inside a {frame.shape[1]}x{frame.shape[0]} frame")
  return cv2.resize(crop, (int(size), int(size)), interpolation=interpolation)


def box_from_tblr(box_tblr: Sequence[int], width: int, height: int) -> Box:
  """The original's --box (top, bottom, left, right) -> (x1, y1, x2, y2) clipped to a width x height frame.

  Raises ValueError when the clipped box is empty.
  """
  if len(box_tblr) != 4:
    raise ValueError(f"a box is (top, bottom, left, right), got {tuple(box_tblr)!r}")
  y1, y2, x1, x2 = (int(v) for v in box_tblr)
  x1, y1, x2, y2 = max(0, x1), max(0, y1), min(int(width), x2), min(int(height), y2)
  if x2 <= x1 or y2 <= y1:
    raise ValueError(
      f"box {tuple(box_tblr)} (top bottom left right) is empty inside a {width}x{height} "
      "frame; give top < bottom and left < right inside the frame"
    )
  return (x1, y1, x2, y2)


class FaceTrack:
  """Raw detections -> final boxes, incrementally (bounded look-ahead; see the module docstring).

  add(raw boxes of the next frames), then finalize(end_of_stream) returns the boxes (x1, y1, x2, y2) or None
  (= pass the frame through) of the frames that became final, in order. Counts: `frames_with_face` (frames
  with a detection), `frames_without_face` (final frames without one), `passthrough_frames` (final frames
  returned as None).
  """

  def __init__(
    self,
    width: int,
    height: int,
    pads: Sequence[int] = DEFAULT_PADS,
    smooth_window: int = DEFAULT_SMOOTH_WINDOW,
    no_face: str = "carry",
    max_wait: int = 250,
  ):
    if no_face not in NO_FACE_POLICIES:
      raise ValueError(f"no_face must be one of {NO_FACE_POLICIES}, got {no_face!r}")
    if len(pads) != 4:
      raise ValueError(f"pads must be (top, bottom, left, right), got {tuple(pads)!r}")
    self.width, self.height = int(width), int(height)
    self.pads = tuple(int(p) for p in pads)
    self.window = max(1, int(smooth_window))
    self.no_face, self.max_wait = no_face, int(max_wait)
    self.padded: list[Box | None] = []
    self.num_final = 0
    self.last_box: Box | None = None
    self.frames_with_face = 0
    self.frames_without_face = 0
    self.passthrough_frames = 0

  def add(self, raw_boxes: Sequence[Sequence[int] | None]) -> None:
    """Appends the raw detections (box or None) of the next frames."""
    for box in raw_boxes:
      if box is None:
        self.padded.append(None)
      else:
        self.frames_with_face += 1
        self.padded.append(pad_and_clip(box, self.pads, self.width, self.height))

  def finalize(self, end: bool) -> list[Box | None]:
    """The boxes of the frames that became final since the last call (all remaining ones when `end`)."""
    known, start = len(self.padded), self.num_final
    stop = known if end else known - self.window
    if stop <= start:
      return []
    lo = max(0, min(start, known - self.window))
    # Reach back to the last detection before the context, so 'nearest' sees true distances.
    back, floor = lo - 1, max(0, lo - self.max_wait)
    while back >= floor and self.padded[back] is None:
      back -= 1
    if back >= floor:
      lo = back
    context = self.padded[lo:known]
    if all(b is None for b in context):
      if self.last_box is None:
        if not end and known - start < self.max_wait:
          return []  # wait for a first face a little longer
        result: list[Box | None] = [None] * (stop - start)
        self.frames_without_face += stop - start
        self.passthrough_frames += stop - start
        self.num_final = stop
        return result
      filled = np.tile(np.asarray(self.last_box, np.int64), (len(context), 1))
    else:
      filled, _ = fill_missing(context)
    smoothed = smooth_boxes(filled, self.window)
    result = []
    for i in range(start, stop):
      missing = self.padded[i] is None
      self.frames_without_face += missing
      if missing and self.no_face == "passthrough":
        self.passthrough_frames += 1
        result.append(None)
      else:
        result.append(tuple(int(v) for v in smoothed[i - lo]))
    self.last_box = tuple(int(v) for v in filled[stop - 1 - lo])
    self.num_final = stop
    return result

  def stats(self) -> dict:
    return dict(
      frames_with_face=self.frames_with_face,
      frames_without_face=self.frames_without_face,
      passthrough_frames=self.passthrough_frames,
    )


def track_boxes(
  detections: Sequence[Sequence[int] | None],
  width: int,
  height: int,
  pads: Sequence[int] = DEFAULT_PADS,
  smooth_window: int = DEFAULT_SMOOTH_WINDOW,
  no_face: str = "carry",
) -> tuple[list[Box | None], dict]:
  """The whole clip at once: FaceTrack fed every detection, finalised with end=True.

  Returns (one box (x1, y1, x2, y2) or None per frame, stats {frames_with_face, frames_without_face,
  passthrough_frames}). With no face in any frame every box is None.
  """
  track = FaceTrack(
    width, height, pads=pads, smooth_window=smooth_window, no_face=no_face, max_wait=max(len(detections), 1)
  )
  track.add(detections)
  boxes = track.finalize(end=True)
  return boxes, track.stats()
