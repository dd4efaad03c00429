"""The face detector interface: what every detector returns, and the helpers that build it.

Owns `FaceDetector` (frames in, every face of every frame out: (N, 5) float32 rows (x1, y1, x2, y2, score),
best first), `faces_array` (boxes + scores -> those rows, clipped and sorted), `best_box` and
`check_frame`. The detectors themselves and their registry live in lipsync_jax.media.detectors (Haar, fixed)
and their own modules (lipsync_jax.media.blazeface, lipsync_jax.media.s3fd), which all import this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[int, int, int, int]


class FaceDetector:
  """Interface. Frames are (H, W, 3) uint8 BGR (as decoded by lipsync_jax.media.video).

  `detect_faces(frames)` -> per frame every face found: an (N, 5) float32 array of rows
  (x1, y1, x2, y2, score), best first, integer-valued coordinates clipped to the frame (x2/y2 exclusive),
  N may be 0. The face track (lipsync_jax.media.track) picks the face that continues the person it follows.
  `detect(frames)` -> the best box (or None) per frame, for callers that want one face.
  Subclasses implement `faces_one(frame)` or, when batched (a jitted network), `detect_faces` itself.
  """

  name = "base"

  def detect_faces(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [self.faces_one(frame) for frame in frames]

  def faces_one(self, frame: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def detect(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
    return [best_box(faces) for faces in self.detect_faces(frames)]


def faces_array(boxes, scores, width: int, height: int) -> np.ndarray:
  """(N, 4) boxes + (N,) scores -> the (N, 5) `detect_faces` rows: clipped, rounded, empty boxes dropped,
  best score first (a stable sort: equal scores keep their order)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  x1 = np.clip(np.floor(boxes[:, 0]), 0, width)
  y1 = np.clip(np.floor(boxes[:, 1]), 0, height)
  x2 = np.clip(np.ceil(boxes[:, 2]), 0, width)
  y2 = np.clip(np.ceil(boxes[:, 3]), 0, height)
  rows = np.stack([x1, y1, x2, y2, scores], axis=1).astype(np.float32)
  rows = rows[(rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])]
  return rows[np.argsort(-rows[:, 4], kind="stable")]


def best_box(faces: np.ndarray) -> Box | None:
  """The first (best) row of a `detect_faces` array as an int box, or None when there is none."""
  if len(faces) == 0:
    return None
  return tuple(int(v) for v in faces[0, :4])


def check_frame(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"face detection expects (H, W, 3) uint8 BGR frames, got {frame.shape} {frame.dtype}")
  return frame
