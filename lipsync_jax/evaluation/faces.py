"""Evaluation inputs: the face boxes of a clip (THE face track) and the error every evaluator raises.

Owns `EvaluationError`, `detect(frames, detector)` (raw boxes, streamed), `tracked_boxes(raw, width,
height, pads, smooth)` (raw boxes through `lipsync_jax.media.track.track_boxes`: pad + clip, nearest-box
fill, the original's 5-frame smoothing, the same rule preprocessing and inference use) and
`face_boxes(frames, ...)`, both for frames in memory. 25 fps frames come from
`lipsync_jax.media.video.iter_frames(path, fps=25.0)` (THE fps rule, lipsync_jax.media.fps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lipsync_jax.media import track


class EvaluationError(ValueError):
  """A video / checkpoint that cannot be evaluated; the message names it and what to do."""


def detect(frames: Iterable[np.ndarray], detector: Any = "haar") -> list[track.Box | None]:
  """Raw detections, one frame at a time (frames may be a stream). `detector`: a registry name
  (lipsync_jax.media.detectors) or a FaceDetector."""
  from lipsync_jax.media import detectors

  det = detectors.get_detector(detector) if isinstance(detector, str) else detector
  return [det.detect_one(frame) for frame in frames]


def tracked_boxes(
  raw: Sequence[Sequence[int] | None],
  width: int,
  height: int,
  pads: Sequence[int] = track.DEFAULT_PADS,
  smooth: bool = True,
) -> tuple[np.ndarray, int]:
  """Raw detections -> boxes (N, 4) int (x1, y1, x2, y2) by the face track, and the number of frames
  without a detected face."""
  boxes, stats = track.track_boxes(
    raw, width, height, pads=pads, smooth_window=track.DEFAULT_SMOOTH_WINDOW if smooth else 1
  )
  if stats["frames_with_face"] == 0:
    raise EvaluationError("no face detected in any frame; pass a fixed --box")
  return np.asarray(boxes, np.int64).reshape(-1, 4), int(stats["frames_without_face"])


def face_boxes(
  frames: Sequence[np.ndarray],
  detector: Any = "haar",
  pads: Sequence[int] = track.DEFAULT_PADS,
  smooth: bool = True,
) -> tuple[np.ndarray, int]:
  """detect + tracked_boxes for frames in memory."""
  if not len(frames):
    raise EvaluationError("no frames to detect faces in")
  height, width = frames[0].shape[:2]
  return tracked_boxes(detect(frames, detector), width, height, pads, smooth)
