"""Tests for lipsync_jax.media.track: the box utilities, FaceTrack (streamed) and track_boxes (whole clip)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from lipsync_jax.media import track

W, H = 160, 120


def _original_smoothing(boxes, window):
  """The original Wav2Lip get_smoothened_boxes, verbatim in behaviour (in place on an int array)."""
  boxes = np.array(boxes)
  for i in range(len(boxes)):
    if i + window > len(boxes):
      chunk = boxes[len(boxes) - window :]
    else:
      chunk = boxes[i : i + window]
    boxes[i] = np.mean(chunk, axis=0)
  return boxes


def test_pad_and_clip_matches_original_arithmetic():
  # pads are (top, bottom, left, right); default (0, 10, 0, 0) grows the box 10 px downwards.
  assert track.pad_and_clip((10, 20, 50, 60), width=100, height=100) == (10, 20, 50, 70)
  assert track.pad_and_clip((10, 20, 50, 60), pads=(5, 7, 3, 4), width=100, height=100) == (7, 15, 54, 67)
  # Clipped to the frame on every side.
  assert track.pad_and_clip((2, 3, 95, 96), pads=(10, 10, 10, 10), width=100, height=98) == (0, 0, 100, 98)
  with pytest.raises(ValueError, match="width and height"):
    track.pad_and_clip((0, 0, 1, 1))


def test_smooth_boxes_equals_original_and_keeps_input():
  rng = np.random.default_rng(0)
  boxes = rng.integers(0, 200, (23, 4))
  smoothed = track.smooth_boxes(boxes, 5)
  np.testing.assert_array_equal(smoothed, _original_smoothing(boxes, 5))
  assert smoothed.dtype == np.int64
  assert not np.array_equal(smoothed, boxes)  # it did smooth something
  np.testing.assert_array_equal(track.smooth_boxes(boxes, 1), boxes)  # window 1 = off
  # Box 0 is the truncated mean of boxes 0..4.
  np.testing.assert_array_equal(smoothed[0], np.mean(boxes[:5], axis=0).astype(np.int64))


def test_fill_missing_takes_nearest_detected_box():
  a, b, c = (0, 0, 10, 10), (5, 5, 15, 15), (9, 9, 19, 19)
  filled, missing = track.fill_missing([None, a, None, None, b, None, None, None, c, None])
  assert missing == 7
  # frame 0 <- a (next), 2 <- a (dist 1), 3 <- b (dist 1), 5 <- b, 6 <- b (tie 2/2: earlier), 7 <- c, 9 <- c
  expected = [a, a, a, b, b, b, b, c, c, c]
  np.testing.assert_array_equal(filled, np.array(expected))
  filled, missing = track.fill_missing([a, b])
  assert missing == 0 and filled.tolist() == [list(a), list(b)]
  with pytest.raises(ValueError, match="no face box in any of the 3 frames"):
    track.fill_missing([None, None, None])


def test_crop_and_resize_cuts_the_box():
  frame = np.zeros((120, 160, 3), np.uint8)
  frame[30:70, 40:100] = (10, 200, 30)  # the "face" region, BGR
  crop = track.crop_and_resize(frame, (40, 30, 100, 70), 48)
  assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
  np.testing.assert_array_equal(crop[24, 24], (10, 200, 30))
  with pytest.raises(ValueError, match="empty"):
    track.crop_and_resize(frame, (50, 50, 50, 60), 48)


def test_box_from_tblr_clips_and_rejects_empty():
  assert track.box_from_tblr((20, 100, 50, 110), W, H) == (50, 20, 110, 100)
  assert track.box_from_tblr((-5, 500, -3, 400), W, H) == (0, 0, W, H)  # clipped to the frame
  with pytest.raises(ValueError, match="empty inside a 160x120 frame"):
    track.box_from_tblr((100, 20, 50, 110), W, H)
  with pytest.raises(ValueError, match="top, bottom, left, right"):
    track.box_from_tblr((1, 2, 3), W, H)


def _random_detections(seed: int, n: int, gaps=(0, 1, 17, 30, 31, 49)):
  rng = np.random.default_rng(seed)
  raw = [
    tuple(
      int(v)
      for v in (rng.integers(20, 40), rng.integers(10, 30), rng.integers(100, 120), rng.integers(80, 110))
    )
    for _ in range(n)
  ]
  for i in gaps:
    raw[i] = None
  return raw


def test_track_boxes_is_fill_pad_smooth():
  """The whole-clip rule: nearest detected box, pads, the original's smoothing."""
  raw = _random_detections(0, 50)
  pads = (3, 10, 2, 1)
  boxes, stats = track.track_boxes(raw, W, H, pads=pads, smooth_window=5)
  filled, missing = track.fill_missing(raw)
  want = track.smooth_boxes([track.pad_and_clip(b, pads, W, H) for b in filled], 5)
  np.testing.assert_array_equal(np.asarray(boxes), want)
  assert stats == dict(
    frames_with_face=44,
    frames_without_face=missing,
    carried_frames=missing,
    passthrough_frames=0,
    scene_cuts=0,
    track_switches=0,
  )
  unsmoothed, _ = track.track_boxes(raw, W, H, pads=pads, smooth_window=1)
  np.testing.assert_array_equal(np.asarray(unsmoothed), [track.pad_and_clip(b, pads, W, H) for b in filled])


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_streamed_track_equals_whole_clip(chunk):
  """Fed in chunks (inference), the boxes equal the whole-clip ones (preprocessing) when gaps are short."""
  raw = _random_detections(chunk, 50)
  want, _ = track.track_boxes(raw, W, H)
  face_track = track.FaceTrack(W, H)
  got = []
  for start in range(0, len(raw), chunk):
    face_track.add(raw[start : start + chunk])
    got += face_track.finalize(end=False)
  got += face_track.finalize(end=True)
  assert got == want
  assert face_track.frames_without_face == 6 and face_track.frames_with_face == 44


def test_passthrough_and_waiting_for_a_first_face():
  box = (40, 20, 120, 100)
  boxes, stats = track.track_boxes(
    [box, None, box], W, H, pads=(0, 0, 0, 0), smooth_window=1, no_face="passthrough"
  )
  assert boxes == [box, None, box] and stats["passthrough_frames"] == 1
  boxes, stats = track.track_boxes([None, None], W, H)
  assert boxes == [None, None]
  assert stats["frames_with_face"] == 0 and stats["frames_without_face"] == 2
  assert stats["passthrough_frames"] == 2 and stats["carried_frames"] == 0
  # Streaming: frames before the first face wait up to max_wait frames, then pass through.
  face_track = track.FaceTrack(W, H, pads=(0, 0, 0, 0), smooth_window=1, max_wait=4)
  face_track.add([None, None, None])
  assert face_track.finalize(end=False) == []  # still waiting
  face_track.add([None, None])
  assert face_track.finalize(end=False) == [None] * 4  # waited 4 frames: passed through
  face_track.add([box, box])
  assert face_track.finalize(end=False) == [box, box]  # frame 4 takes the nearest face; 6 needs look-ahead
  assert face_track.finalize(end=True) == [box]
  assert face_track.passthrough_frames == 4 and face_track.frames_without_face == 5
  with pytest.raises(ValueError, match="no_face must be one of"):
    track.FaceTrack(W, H, no_face="drop")


def _scene(seed: int, num: int, shift: int = 1) -> list[np.ndarray]:
  """`num` frames of one textured scene panning slowly (`shift` px per frame)."""
  rng = np.random.default_rng(seed)
  base = cv2.GaussianBlur(rng.integers(0, 256, (H, W + num * shift, 3), dtype=np.uint8), (7, 7), 0)
  base = cv2.add(base, np.full_like(base, 40 * seed))  # scenes differ in colour too
  return [np.ascontiguousarray(base[:, i * shift : i * shift + W]) for i in range(num)]


def test_scene_cuts_fire_at_cuts_only():
  frames = _scene(1, 20) + _scene(2, 15, shift=3) + _scene(3, 10)
  cuts = track.SceneCuts()
  fired = [i for i, f in enumerate(frames) if cuts.update(f)]
  assert fired == [20, 35]


def test_no_fill_or_smoothing_across_a_cut():
  """Shot A's face is on the left, shot B's on the right; B's first frames have no detection. Without cut
  detection shot B gets A's box (filled across, and B's face, far from the followed one, is not taken
  within the patience); with it, every frame gets its own shot's face."""
  frames = _scene(1, 12) + _scene(2, 12)
  a, b = (10, 10, 50, 60), (100, 30, 150, 90)
  raw = [a] * 12 + [None, None] + [b] * 10
  no_cuts, _ = track.track_boxes(raw, W, H, pads=(0, 0, 0, 0))
  assert no_cuts[12] == a  # the old failure: filled across the cut
  boxes, stats = track.track_boxes(raw, W, H, pads=(0, 0, 0, 0), frames=frames)
  assert boxes == [a] * 12 + [b] * 12
  assert stats["scene_cuts"] == 1 and stats["carried_frames"] == 2
  # The same with explicit cut flags, and streamed in chunks.
  flags = [i == 12 for i in range(24)]
  assert track.track_boxes(raw, W, H, pads=(0, 0, 0, 0), cuts=flags)[0] == boxes
  face_track = track.FaceTrack(W, H, pads=(0, 0, 0, 0))
  got = []
  for start in range(0, 24, 5):
    face_track.add(raw[start : start + 5], frames=frames[start : start + 5])
    got += face_track.finalize(end=False)
  assert got + face_track.finalize(end=True) == boxes


def test_a_shot_without_faces_is_passed_through_even_when_carrying():
  frames = _scene(1, 8) + _scene(2, 8)
  a = (10, 10, 50, 60)
  boxes, stats = track.track_boxes([a] * 8 + [None] * 8, W, H, pads=(0, 0, 0, 0), frames=frames)
  assert boxes == [a] * 8 + [None] * 8
  assert stats["passthrough_frames"] == 8 and stats["carried_frames"] == 0


def _faces(*rows):
  return np.array([list(r) for r in rows], np.float32).reshape(-1, 5)


def test_the_track_follows_its_person_not_the_best_face():
  """A second, higher-scoring face (another person, or a false positive) does not take the track over;
  when the followed person is gone for longer than the patience, the track takes the best face anew."""
  person, other = (20, 20, 60, 70), (100, 10, 150, 70)
  raw = [_faces((*person, 0.9))] * 5
  raw += [_faces((*other, 0.99), (person[0] + 2, person[1] + 1, person[2] + 2, person[3] + 1, 0.8))] * 5
  boxes, stats = track.track_boxes(raw, W, H, pads=(0, 0, 0, 0), smooth_window=1)
  assert all(box[0] < 30 for box in boxes)  # still on the left person
  assert stats["track_switches"] == 0
  # The person leaves: the other face alone for a short while (carried), then for longer (switch).
  patience = track.FOLLOW_PATIENCE
  raw = [_faces((*person, 0.9))] * 5 + [_faces((*other, 0.99))] * (patience + 5)
  boxes, stats = track.track_boxes(raw, W, H, pads=(0, 0, 0, 0), smooth_window=1)
  # The absence is filled by the nearest detection in time: its first half from the person, the rest from
  # the face taken after the switch.
  assert boxes[5 : 5 + patience // 2] == [person] * (patience // 2)
  assert boxes[5 + patience // 2 :] == [other] * (patience - patience // 2 + 5)
  assert stats["track_switches"] == 1 and stats["carried_frames"] == patience


def test_streaming_memory_stays_bounded():
  face_track = track.FaceTrack(W, H, max_wait=50)
  box = (20, 20, 60, 70)
  for _ in range(400):
    face_track.add([box] * 10)
    face_track.finalize(end=False)
    assert len(face_track.shot.padded) <= 10 + 50 + track.DEFAULT_SMOOTH_WINDOW + 1
  assert len(face_track.finalize(end=True)) == track.DEFAULT_SMOOTH_WINDOW


MEGAMIND = "/usr/share/doc/opencv-doc/examples/data/Megamind.avi"


@pytest.mark.skipif(not os.path.exists(MEGAMIND), reason="Debian opencv-doc (real footage) not installed")
def test_scene_cuts_on_real_footage():
  """Megamind.avi (Debian opencv-doc): a black first frame, then hard cuts at frames 98, 154 and 200 (checked
  by eye on a contact sheet); nothing else fires in 270 frames of talking, head turns and camera moves."""
  from lipsync_jax.media import video

  cuts = track.SceneCuts()
  fired = [i for i, frame in enumerate(video.iter_frames(MEGAMIND)) if cuts.update(frame)]
  assert fired == [1, 98, 154, 200]
