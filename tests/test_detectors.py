"""Tests for lipsync_jax.media.detectors: the registry and the detectors."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_jax.media import detectors as fd
from lipsync_jax.media import face_detector


def test_registry_fixed_and_s3fd():
  frame = np.zeros((100, 80, 3), np.uint8)
  det = fd.get_detector("fixed", box=(10, 20, 200, 90))
  assert det.detect([frame, frame]) == [(10, 20, 80, 90)] * 2  # clipped to the 80 px width
  assert fd.get_detector("fixed", box=(90, 0, 120, 10)).detect([frame]) == [None]  # outside the frame
  with pytest.raises(ValueError, match="x1, y1, x2, y2"):
    fd.get_detector("fixed", box=(1, 2, 3))
  with pytest.raises(ValueError, match="needs its weights: pass --detector_weights"):
    fd.get_detector("s3fd")
  with pytest.raises(ValueError, match="takes no weights file"):
    fd.get_detector("haar", weights="x.pth")
  with pytest.raises(ValueError, match="unknown face detector"):
    fd.get_detector("nope")


def test_faces_array_clips_sorts_and_drops_empty_boxes():
  rows = face_detector.faces_array(
    [(-5.2, 3.7, 20.1, 30.0), (50, 50, 50, 60), (10, 10, 200, 90)], [0.5, 0.9, 0.8], width=100, height=80
  )
  assert rows.dtype == np.float32 and rows.shape == (2, 5)
  np.testing.assert_array_equal(rows[:, :4], [(10, 10, 100, 80), (0, 3, 21, 30)])  # best first; clipped
  np.testing.assert_allclose(rows[:, 4], [0.8, 0.5])
  assert face_detector.best_box(rows) == (10, 10, 100, 80) and face_detector.best_box(rows[:0]) is None


def test_haar_finds_a_rendered_face_and_not_a_blank_frame():
  synthetic = pytest.importorskip("lipsync_jax.data.synthetic")
  spec = synthetic.ClipSpec("s000/00000", speaker_index=0, clip_index=0, seconds=0.2, seed=0)
  frames, _, _, true_boxes, _ = synthetic.render_clip(spec)
  frames = list(frames())
  det = fd.get_detector("haar")
  # A 2x upscaled copy exercises the downscale-to-detect_size path (320 px max side).
  big = [np.repeat(np.repeat(frames[0], 2, axis=0), 2, axis=1)]
  boxes = det.detect(frames[:3]) + det.detect(big) + det.detect([np.full((160, 160, 3), 128, np.uint8)])
  assert boxes[-1] is None

  def iou(p, q):
    ix = max(0, min(p[2], q[2]) - max(p[0], q[0]))
    iy = max(0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = ix * iy
    return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)

  for i in range(3):
    assert boxes[i] is not None and iou(boxes[i], true_boxes[i]) > 0.6, (boxes[i], true_boxes[i])
  assert iou(np.array(boxes[3]) / 2, true_boxes[0]) > 0.6
