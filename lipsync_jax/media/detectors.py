"""Face detectors behind one interface, and the face-box utilities shared by preprocessing and inference.

Owns: the `FaceDetector` interface and its registry `DETECTORS` (`get_detector(name, **kwargs)`), and the
box helpers every consumer uses so that training crops and inference crops are cut the same way:

  detect (per frame, box or None) -> fill_missing -> pad_and_clip -> smooth_boxes -> crop_and_resize

Boxes are (x1, y1, x2, y2) integer pixel coordinates of the source frame, x2/y2 exclusive (the slice
`frame[y1:y2, x1:x2]`), the convention of the original Wav2Lip code.

Detectors:
  'haar'  OpenCV's bundled frontal-face Haar cascade (works offline, no weights to download). Each frame is
          converted to grayscale, downscaled so its longer side is at most `detect_size` pixels,
          histogram-equalised, and the biggest detection is kept.
  'fixed' the same given box for every frame (clipped to the frame), e.g. for pre-cropped face videos.
  's3fd'  the detector the original used; not bundled (its weights cannot be fetched here): asking for it
          raises `NotImplementedError` that says what to do.

Nothing here depends on Apache Beam or JAX: preprocessing (data_pipelines/preprocess.py) and inference
(lipsync_jax/infer.py) both import it.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np

Box = Tuple[int, int, int, int]
# (top, bottom, left, right) pixels added around a detected box; the original inference default.
DEFAULT_PADS = (0, 10, 0, 0)
DEFAULT_SMOOTH_WINDOW = 5


class FaceDetector:
  """Interface: `detect(frames)` -> one (x1, y1, x2, y2) box or None per frame (BGR uint8 frames)."""

  name = "base"

  def detect(self, frames: Sequence[np.ndarray]) -> list[Optional[Box]]:
    return [self.detect_one(frame) for frame in frames]

  def detect_one(self, frame: np.ndarray) -> Optional[Box]:
    raise NotImplementedError


def _check_frame(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"face detection expects (H, W, 3) uint8 BGR frames, got {frame.shape} {frame.dtype}")
  return frame


class HaarDetector(FaceDetector):
  """OpenCV's bundled frontal-face Haar cascade; keeps the biggest face per frame.

  Args:
    detect_size: frames whose longer side exceeds this are downscaled to it before detection (speed); the
      box is scaled back to source pixels.
    scale_factor, min_neighbors: `cv2.CascadeClassifier.detectMultiScale` parameters.
    min_face_fraction: smallest face side, as a fraction of the frame's shorter side (0.2: talking-head
      footage has big faces; smaller values find smaller faces and cost more time).
    cascade_path: another cascade XML (default: haarcascade_frontalface_default.xml shipped with OpenCV).
  """

  name = "haar"

  def __init__(self, detect_size: int = 320, scale_factor: float = 1.1, min_neighbors: int = 5,
               min_face_fraction: float = 0.2, cascade_path: Optional[str] = None):
    if cascade_path is None:
      cascade_path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    self.cascade = cv2.CascadeClassifier(cascade_path)
    if self.cascade.empty():
      raise FileNotFoundError(
          f"OpenCV could not load the Haar cascade {cascade_path!r}; install opencv-python(-headless) 4.x "
          "(which ships cv2.data.haarcascades) or pass cascade_path=")
    self.detect_size = int(detect_size)
    self.scale_factor = float(scale_factor)
    self.min_neighbors = int(min_neighbors)
    self.min_face_fraction = float(min_face_fraction)

  def detect_one(self, frame: np.ndarray) -> Optional[Box]:
    frame = _check_frame(frame)
    height, width = frame.shape[:2]
    scale = min(1.0, self.detect_size / max(height, width))
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
      gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                        interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(8, int(self.min_face_fraction * min(gray.shape)))
    faces = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                          minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
    if len(faces) == 0:
      return None
    x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    x1, y1 = int(np.floor(x / scale)), int(np.floor(y / scale))
    x2, y2 = int(np.ceil((x + w) / scale)), int(np.ceil((y + h) / scale))
    return (max(0, x1), max(0, y1), min(width, x2), min(height, y2))


class FixedBoxDetector(FaceDetector):
  """Returns the same box (x1, y1, x2, y2) for every frame, clipped to the frame."""

  name = "fixed"

  def __init__(self, box: Sequence[int]):
    if box is None or len(box) != 4:
      raise ValueError(f"the 'fixed' detector needs box=(x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 <= x1 or y2 <= y1:
      raise ValueError(f"fixed box {box!r} is empty: need x2 > x1 and y2 > y1")
    self.box = (x1, y1, x2, y2)

  def detect_one(self, frame: np.ndarray) -> Optional[Box]:
    height, width = _check_frame(frame).shape[:2]
    x1, y1, x2, y2 = self.box
    clipped = (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
      return None  # the box lies outside this frame
    return clipped


class S3FDDetector(FaceDetector):
  """Placeholder for the S3FD detector the original Wav2Lip used (weights not bundled)."""

  name = "s3fd"

  def __init__(self, **unused_kwargs):
    raise NotImplementedError(
        "the 's3fd' face detector is not bundled with lipsync_jax (its weights s3fd.pth cannot be "
        "downloaded here). Use detector='haar' (default) or 'fixed' with box=(x1, y1, x2, y2); to add S3FD, "
        "implement a FaceDetector subclass whose detect(frames) returns one (x1, y1, x2, y2) box or None per "
        "frame and register it in lipsync_jax.media.detectors.DETECTORS['s3fd'].")


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "haar": HaarDetector,
    "fixed": FixedBoxDetector,
    "s3fd": S3FDDetector,
}


def get_detector(name: str = "haar", **kwargs) -> FaceDetector:
  """Builds the detector registered under `name` ('haar' | 'fixed' | 's3fd') with `kwargs`."""
  if name not in DETECTORS:
    raise ValueError(f"unknown face detector {name!r}; choose one of {sorted(DETECTORS)}")
  return DETECTORS[name](**kwargs)


# ---------------------------------------------------------------------------------------------------------
# Box utilities.
# ---------------------------------------------------------------------------------------------------------


def pad_and_clip(box: Sequence[int], pads: Sequence[int] = DEFAULT_PADS, width: int = None,
                 height: int = None) -> Box:
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
    chunk = boxes[count - window:] if i + window > count else boxes[i:i + window]
    boxes[i] = np.mean(chunk, axis=0)
  return boxes


def fill_missing(boxes: Sequence[Optional[Sequence[int]]]) -> tuple[np.ndarray, int]:
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


def crop_and_resize(frame: np.ndarray, box: Sequence[int], size: int,
                    interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
  """frame[y1:y2, x1:x2] resized to (size, size) (cv2.resize, bilinear like the original)."""
  x1, y1, x2, y2 = (int(v) for v in box)
  crop = frame[max(0, y1):y2, max(0, x1):x2]
  if crop.size == 0:
    raise ValueError(f"face box {tuple(box)} is empty inside a {frame.shape[1]}x{frame.shape[0]} frame")
  return cv2.resize(crop, (int(size), int(size)), interpolation=interpolation)
