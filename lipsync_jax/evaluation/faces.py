"""Evaluation inputs: the face boxes of a clip (THE face track) and the error every evaluator raises.

Owns `EvaluationError`, `detect_with_cuts(frames, detector)` (every face of every frame + scene-cut
flags, streamed in batches), `tracked_boxes(detections, width, height, pads, smooth, cuts)` (through
`lipsync_jax.media.track.track_boxes`: the face that continues the track, pad + clip, nearest-box fill and
the original's 5-frame smoothing within each shot, the same rule preprocessing and inference use) and
`face_boxes(frames, ...)` for frames in memory. 25 fps frames come from
`lipsync_jax.media.video.iter_frames(path, fps=25.0)` (THE fps rule, lipsync_jax.media.fps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lipsync_jax.media import detectors, track


class EvaluationError(ValueError):
  """A video / checkpoint that cannot be evaluated; the message names it and what to do."""


def detect_with_cuts(
  frames: Iterable[np.ndarray], detector: Any = detectors.DEFAULT, batch_size: int = 16
) -> tuple[list[np.ndarray], list[bool]]:
  """Every face of every frame (`detect_faces` (N, 5) rows) and the scene-cut flags of THE face track,
  frames streamed in batches of `batch_size` (frames may be a generator). `detector`: a registry name
  (lipsync_jax.media.detectors) or a FaceDetector."""
  det = detectors.get_detector(detector) if isinstance(detector, str) else detector
  scene_cuts = track.SceneCuts()
  found: list[np.ndarray] = []
  cuts: list[bool] = []
  batch: list[np.ndarray] = []
  for frame in frames:
    cuts.append(scene_cuts.update(frame))
    batch.append(frame)
    if len(batch) == batch_size:
      found.extend(det.detect_faces(batch))
      batch = []
  if batch:
    found.extend(det.detect_faces(batch))
  return found, cuts


def detect(frames: Iterable[np.ndarray], detector: Any = detectors.DEFAULT) -> list[np.ndarray]:
  """`detect_with_cuts` without the cut flags (for callers that track a single shot)."""
  return detect_with_cuts(frames, detector)[0]


def tracked_boxes(
  raw: Sequence,
  width: int,
  height: int,
  pads: Sequence[int] = track.DEFAULT_PADS,
  smooth: bool = True,
  cuts: Sequence[bool] | None = None,
) -> tuple[np.ndarray, int]:
  """Detections -> boxes (N, 4) int (x1, y1, x2, y2) by the face track (scene cuts when `cuts` is given),
  and the number of frames without a detected face. Frames in a shot without any face keep the nearest
  box of the clip (an evaluator needs a crop for every frame; they are counted as without a face)."""
  boxes, stats = track.track_boxes(
    raw, width, height, pads=pads, smooth_window=track.DEFAULT_SMOOTH_WINDOW if smooth else 1, cuts=cuts
  )
  if stats["frames_with_face"] == 0:
    raise EvaluationError("no face detected in any frame; pass a fixed --box")
  filled, _ = track.fill_missing(boxes)
  return filled, int(stats["frames_without_face"])


def face_boxes(
  frames: Sequence[np.ndarray],
  detector: Any = detectors.DEFAULT,
  pads: Sequence[int] = track.DEFAULT_PADS,
  smooth: bool = True,
) -> tuple[np.ndarray, int]:
  """detect (with scene cuts) + tracked_boxes for frames in memory."""
  if not len(frames):
    raise EvaluationError("no frames to detect faces in")
  height, width = frames[0].shape[:2]
  found, cuts = detect_with_cuts(frames, detector)
  return tracked_boxes(found, width, height, pads, smooth, cuts=cuts)
