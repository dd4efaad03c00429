"""Tests for lipsync_jax.media.detectors: the box utilities, the registry and the detectors."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_jax.media import detectors as fd


def _original_smoothing(boxes, window):
  """The original Wav2Lip get_smoothened_boxes, verbatim in behaviour (in place on an int array)."""
  boxes = np.array(boxes)
  for i in range(len(boxes)):
    if i + window > len(boxes):
      chunk = boxes[len(boxes) - window:]
    else:
      chunk = boxes[i:i + window]
    boxes[i] = np.mean(chunk, axis=0)
  return boxes


def test_pad_and_clip_matches_original_arithmetic():
  # pads are (top, bottom, left, right); default (0, 10, 0, 0) grows the box 10 px downwards.
  assert fd.pad_and_clip((10, 20, 50, 60), width=100, height=100) == (10, 20, 50, 70)
  assert fd.pad_and_clip((10, 20, 50, 60), pads=(5, 7, 3, 4), width=100, height=100) == (7, 15, 54, 67)
  # Clipped to the frame on every side.
  assert fd.pad_and_clip((2, 3, 95, 96), pads=(10, 10, 10, 10), width=100, height=98) == (0, 0, 100, 98)
  with pytest.raises(ValueError, match="width and height"):
    fd.pad_and_clip((0, 0, 1, 1))


def test_smooth_boxes_equals_original_and_keeps_input():
  rng = np.random.default_rng(0)
  boxes = rng.integers(0, 200, (23, 4))
  smoothed = fd.smooth_boxes(boxes, 5)
  np.testing.assert_array_equal(smoothed, _original_smoothing(boxes, 5))
  assert smoothed.dtype == np.int64
  assert not np.array_equal(smoothed, boxes)  # it did smooth something
  np.testing.assert_array_equal(fd.smooth_boxes(boxes, 1), boxes)  # window 1 = off
  # Box 0 is the truncated mean of boxes 0..4.
  np.testing.assert_array_equal(smoothed[0], np.mean(boxes[:5], axis=0).astype(np.int64))


def test_fill_missing_takes_nearest_detected_box():
  a, b, c = (0, 0, 10, 10), (5, 5, 15, 15), (9, 9, 19, 19)
  filled, missing = fd.fill_missing([None, a, None, None, b, None, None, None, c, None])
  assert missing == 7
  # frame 0 <- a (next), 2 <- a (dist 1), 3 <- b (dist 1), 5 <- b, 6 <- b (tie 2/2: earlier), 7 <- c, 9 <- c
  expected = [a, a, a, b, b, b, b, c, c, c]
  np.testing.assert_array_equal(filled, np.array(expected))
  filled, missing = fd.fill_missing([a, b])
  assert missing == 0 and filled.tolist() == [list(a), list(b)]
  with pytest.raises(ValueError, match="no face box in any of the 3 frames"):
    fd.fill_missing([None, None, None])


def test_crop_and_resize_cuts_the_box():
  frame = np.zeros((120, 160, 3), np.uint8)
  frame[30:70, 40:100] = (10, 200, 30)  # the "face" region, BGR
  crop = fd.crop_and_resize(frame, (40, 30, 100, 70), 48)
  assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
  np.testing.assert_array_equal(crop[24, 24], (10, 200, 30))
  with pytest.raises(ValueError, match="empty"):
    fd.crop_and_resize(frame, (50, 50, 50, 60), 48)


def test_registry_fixed_and_s3fd():
  frame = np.zeros((100, 80, 3), np.uint8)
  det = fd.get_detector("fixed", box=(10, 20, 200, 90))
  assert det.detect([frame, frame]) == [(10, 20, 80, 90)] * 2  # clipped to the 80 px width
  assert fd.get_detector("fixed", box=(90, 0, 120, 10)).detect([frame]) == [None]  # outside the frame
  with pytest.raises(ValueError, match="x1, y1, x2, y2"):
    fd.get_detector("fixed", box=(1, 2, 3))
  with pytest.raises(NotImplementedError, match="s3fd"):
    fd.get_detector("s3fd")
  with pytest.raises(ValueError, match="unknown face detector"):
    fd.get_detector("mtcnn")


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
