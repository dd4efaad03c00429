"""Face detectors behind one interface.

Owns: the `FaceDetector` interface and its registry `DETECTORS` (`get_detector(name, **kwargs)`). A
detector returns one raw box or None per frame; what happens to the boxes next (pad, fill, smooth, crop)
is the face track's job (lipsync_jax.media.track), shared by preprocessing, inference and evaluation.

Boxes are (x1, y1, x2, y2) integer pixel coordinates of the source frame, x2/y2 exclusive (the slice
`frame[y1:y2, x1:x2]`), the convention of the original Wav2Lip code.

Detectors:
  'haar'  OpenCV's bundled frontal-face Haar cascade (works offline, no weights to download). Each frame is
          converted to grayscale, downscaled so its longer side is at most `detect_size` pixels,
          histogram-equalised, and the biggest detection is kept.
  'fixed' the same given box for every frame (clipped to the frame), e.g. for pre-cropped face videos.
  's3fd'  the detector the original used; not bundled (its weights cannot be fetched here): asking for it
          raises `NotImplementedError` that says what to do.

Nothing here depends on Apache Beam or JAX.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]


class FaceDetector:
  """Interface: `detect(frames)` -> one (x1, y1, x2, y2) box or None per frame (BGR uint8 frames)."""

  name = "base"

  def detect(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
    return [self.detect_one(frame) for frame in frames]

  def detect_one(self, frame: np.ndarray) -> Box | None:
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

  def __init__(
    self,
    detect_size: int = 320,
    scale_factor: float = 1.1,
    min_neighbors: int = 5,
    min_face_fraction: float = 0.2,
    cascade_path: str | None = None,
  ):
    if cascade_path is None:
      cascade_path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    self.cascade = cv2.CascadeClassifier(cascade_path)
    if self.cascade.empty():
      raise FileNotFoundError(
        f"OpenCV could not load the Haar cascade {cascade_path!r}; install opencv-python(-headless) 4.x "
        "(which ships cv2.data.haarcascades) or pass cascade_path="
      )
    self.detect_size = int(detect_size)
    self.scale_factor = float(scale_factor)
    self.min_neighbors = int(min_neighbors)
    self.min_face_fraction = float(min_face_fraction)

  def detect_one(self, frame: np.ndarray) -> Box | None:
    frame = _check_frame(frame)
    height, width = frame.shape[:2]
    scale = min(1.0, self.detect_size / max(height, width))
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
      gray = cv2.resize(
        gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
      )
    gray = cv2.equalizeHist(gray)
    min_side = max(8, int(self.min_face_fraction * min(gray.shape)))
    faces = self.cascade.detectMultiScale(
      gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
    )
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

  def detect_one(self, frame: np.ndarray) -> Box | None:
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
      "frame and register it in lipsync_jax.media.detectors.DETECTORS['s3fd']."
    )


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
