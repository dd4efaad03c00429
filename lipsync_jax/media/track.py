"""THE face track: raw per-frame detections -> the final box of every frame, and the crop it cuts.

Owns the one way boxes are made final, used alike by preprocessing (lipsync_jax.data.clips), inference and
evaluation, so that a training crop and an inference crop of the same frame with the same detector are
identical:

  detect (per frame: every face, (N, 5) rows x1, y1, x2, y2, score, best first)
    -> scene cuts (SceneCuts: a shot ends where the picture changes at once)
    -> pick the face that continues the track (FaceFollower: overlap with the face followed so far; the best
       face only to start a shot or after the person has been gone a while)
    -> pad_and_clip -> fill_missing (nearest detected frame of the SAME shot)
    -> smooth_boxes (the original's forward window, within the shot) -> crop_and_resize

Nothing is filled or smoothed across a cut: a shot is tracked as if it were a clip of its own. Frames of a
shot where no face was found at all get no box (None: the caller passes them through unchanged).

`FaceTrack` does this incrementally (bounded look-ahead and bounded memory, for streaming inference);
`track_boxes` is the whole-clip call and is FaceTrack fed everything then finalised at the end (the same
code path).

Boxes are (x1, y1, x2, y2) integer pixel coordinates of the source frame, x2/y2 exclusive (the slice
`frame[y1:y2, x1:x2]`), the convention of the original Wav2Lip code. Padding is per box, so padding before
or after the nearest-box fill gives the same boxes.

Within a shot (what FaceTrack did for a whole clip before cuts were detected): a frame is final once the
`smooth_window` frames after it are known (or at the end of its shot). Frames without a face get the nearest
detected box among the frames known so far (the last detection before the gap, reaching back at most
`max_wait` frames, and the detections up to the newest frame), or None with no_face='passthrough'. Frames
before the first face of a shot wait up to `max_wait` frames for it; after that they are final as None.
Fed a whole shot and finalised at its end, the result is the whole-clip rule exactly: every missing frame
takes its nearest detected frame (the earlier on a tie), then the original's smoothing.
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
# A face continues the track when it overlaps the followed face by this IoU, or its centre lies within
# this fraction of the followed face's size from the followed face's centre.
FOLLOW_MIN_IOU = 0.2
FOLLOW_MAX_CENTRE_SHIFT = 0.5
# Frames (searched, with faces but none continuing the track) before the track takes the best face anew.
FOLLOW_PATIENCE = 12


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
  i..i+window-1 (the last `window` boxes near the end), truncated to int. window <= 1 returns a copy.

  One deliberate difference: with fewer boxes than `window` the original slices `boxes[count - window:]`
  with a negative start (the last few boxes only, an accident of Python slicing); here every box is then
  the mean of all of them. Both agree whenever count >= window.
  """
  boxes = np.array(boxes, dtype=np.int64).reshape(-1, 4)  # a copy; updated in place like the original
  if window <= 1 or len(boxes) == 0:
    return boxes
  count = len(boxes)
  for i in range(count):
    chunk = boxes[max(0, count - window) :] if i + window > count else boxes[i : i + window]
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


def as_faces(detection) -> np.ndarray:
  """One frame's detection as (N, 5) float32 rows (x1, y1, x2, y2, score), best first.

  Accepts what detectors give (`detect_faces` arrays), a single box (x1, y1, x2, y2) (score 1), or None
  (nothing found or the frame was not searched: zero rows).
  """
  if detection is None:
    return np.zeros((0, 5), np.float32)
  faces = np.asarray(detection, np.float32)
  if faces.ndim == 1 and faces.shape[0] == 4:
    return np.concatenate([faces, [1.0]]).astype(np.float32)[None]
  if faces.ndim != 2 or faces.shape[1] != 5:
    raise ValueError(f"a detection is a box (4,), rows (N, 5) or None; got shape {faces.shape}")
  return faces


def box_iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
  """IoU of one (x1, y1, x2, y2) box (x2/y2 exclusive) with each row of `boxes` (N, >= 4)."""
  boxes = np.atleast_2d(np.asarray(boxes, np.float64))  # (N, 4) boxes or (N, 5) detect_faces rows
  x1 = np.maximum(box[0], boxes[:, 0])
  y1 = np.maximum(box[1], boxes[:, 1])
  x2 = np.minimum(box[2], boxes[:, 2])
  y2 = np.minimum(box[3], boxes[:, 3])
  inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
  area = (box[2] - box[0]) * (box[3] - box[1])
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return inter / np.maximum(area + areas - inter, 1e-9)


class SceneCuts:
  """Scene-cut test, one frame at a time: `update(frame)` is True when `frame` starts a new shot.

  A cut is a frame whose colour histogram AND coarse picture both change at once against the previous
  frame: half the L1 distance of the per-channel 16-bin histograms (0 same, 1 disjoint; averaged over the
  channels) >= `hist_threshold`, and the mean absolute difference of 64x48 thumbnails >= `diff_threshold`
  (in units of full scale). Measured on the Megamind clip of Debian's opencv-doc (720x528, 4 hard cuts):
  cuts score 0.13-0.19 / 0.13-0.17, other frames a median of 0.009 / 0.005 (95th percentile 0.015). Both
  tests together keep camera motion (picture changes, histogram stays) and lighting flicker (histogram
  shifts a little, picture stays) from counting as cuts. Gradual fades are not cuts (the track carries
  the face through them).
  """

  def __init__(self, hist_threshold: float = 0.08, diff_threshold: float = 0.06):
    self.hist_threshold, self.diff_threshold = float(hist_threshold), float(diff_threshold)
    self.previous: tuple[np.ndarray, np.ndarray] | None = None

  @staticmethod
  def signature(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thumb = cv2.resize(np.asarray(frame), (64, 48), interpolation=cv2.INTER_AREA)
    thumb = thumb.reshape(48, 64, -1)
    hist = np.stack(
      [np.bincount(thumb[..., c].reshape(-1) >> 4, minlength=16) for c in range(thumb.shape[2])]
    )
    return hist / thumb[..., 0].size, thumb.astype(np.float32)

  def update(self, frame: np.ndarray) -> bool:
    hist, thumb = self.signature(frame)
    previous, self.previous = self.previous, (hist, thumb)
    if previous is None:
      return False
    hist_distance = 0.5 * float(np.abs(hist - previous[0]).sum()) / hist.shape[0]
    picture_distance = float(np.abs(thumb - previous[1]).mean()) / 255.0
    return hist_distance >= self.hist_threshold and picture_distance >= self.diff_threshold


class FaceFollower:
  """Picks, per frame, the face that continues the person followed (raw, unpadded boxes).

  The first face of a shot is the best-scoring one. After that a frame's face is the candidate overlapping
  the followed face the most (IoU >= FOLLOW_MIN_IOU, or its centre within FOLLOW_MAX_CENTRE_SHIFT of the
  followed face's size), so a second person, a bigger face in the background or a false positive does not
  take the track over. When searched frames have faces but none continues the track, the frame counts as
  without a face (the track carries the last box); after `patience` such frames in a row the best face is
  taken anew (the person left; `switches` counts these). Frames not searched (None) change nothing.
  """

  def __init__(self, patience: int = FOLLOW_PATIENCE):
    self.patience = int(patience)
    self.followed: np.ndarray | None = None
    self.lost = 0
    self.switches = 0

  def reset(self) -> None:
    """A new shot: follow whoever is best in its first frame with a face."""
    self.followed, self.lost = None, 0

  def pick(self, detection) -> Box | None:
    if detection is None:
      return None
    faces = as_faces(detection)
    if len(faces) == 0:
      return None
    choice = 0
    if self.followed is not None:
      prev = self.followed
      size = max(prev[2] - prev[0], prev[3] - prev[1])
      shift = np.hypot(
        (faces[:, 0] + faces[:, 2] - prev[0] - prev[2]) / 2,
        (faces[:, 1] + faces[:, 3] - prev[1] - prev[3]) / 2,
      )
      overlap = box_iou(prev, faces)
      ok = (overlap >= FOLLOW_MIN_IOU) | (shift <= FOLLOW_MAX_CENTRE_SHIFT * size)
      if ok.any():
        choice = int(np.argmax(np.where(ok, overlap - 1e-3 * shift / max(size, 1.0), -np.inf)))
      else:
        self.lost += 1
        if self.lost <= self.patience:
          return None
        self.switches += 1
    self.followed, self.lost = faces[choice, :4].astype(np.float64), 0
    return tuple(int(v) for v in faces[choice, :4])


class _ShotTrack:
  """Fill + smoothing inside one shot, incrementally (see the module docstring). Memory is bounded: boxes
  older than the smoothing window plus `max_wait` frames are dropped."""

  def __init__(self, width: int, height: int, pads: Box, window: int, no_face: str, max_wait: int):
    self.width, self.height, self.pads = width, height, pads
    self.window, self.no_face, self.max_wait = window, no_face, max_wait
    self.padded: list[Box | None] = []  # frames offset .. offset + len - 1 of the shot
    self.offset = 0
    self.num_final = 0
    self.last_box: Box | None = None
    self.carried = 0
    self.passthrough = 0
    self.without_face = 0

  def add(self, box: Sequence[int] | None) -> None:
    self.padded.append(None if box is None else pad_and_clip(box, self.pads, self.width, self.height))

  def finalize(self, end: bool) -> list[Box | None]:
    known, start = self.offset + len(self.padded), self.num_final
    stop = known if end else known - self.window
    if stop <= start:
      return []
    at = lambda i: self.padded[i - self.offset]
    lo = max(0, min(start, known - self.window))
    # Reach back to the last detection before the context, so 'nearest' sees true distances.
    back, floor = lo - 1, max(self.offset, lo - self.max_wait)
    while back >= floor and at(back) is None:
      back -= 1
    if back >= floor:
      lo = back
    context = self.padded[lo - self.offset : known - self.offset]
    if all(b is None for b in context):
      if self.last_box is None:
        if not end and known - start < self.max_wait:
          return []  # wait for a first face a little longer
        self.without_face += stop - start
        self.passthrough += stop - start
        self.num_final = stop
        self._trim()
        return [None] * (stop - start)
      filled = np.tile(np.asarray(self.last_box, np.int64), (len(context), 1))
    else:
      filled, _ = fill_missing(context)
    smoothed = smooth_boxes(filled, self.window)
    result: list[Box | None] = []
    for i in range(start, stop):
      missing = at(i) is None
      self.without_face += missing
      if missing and self.no_face == "passthrough":
        self.passthrough += 1
        result.append(None)
      else:
        self.carried += missing
        result.append(tuple(int(v) for v in smoothed[i - lo]))
    self.last_box = tuple(int(v) for v in filled[stop - 1 - lo])
    self.num_final = stop
    self._trim()
    return result

  def _trim(self) -> None:
    keep_from = max(self.offset, self.num_final - self.window - self.max_wait - 1)
    del self.padded[: keep_from - self.offset]
    self.offset = keep_from


class FaceTrack:
  """Detections -> final boxes, incrementally (bounded look-ahead; see the module docstring).

  `add(detections, frames=None, cuts=None)` appends the next frames: per frame an (N, 5) `detect_faces`
  array, a single box, or None (not searched / nothing found); `frames` (the same frames, BGR) lets the
  track find scene cuts itself, `cuts` gives them instead (True where a frame starts a new shot); with
  neither, the whole input is one shot. `finalize(end)` returns the boxes (x1, y1, x2, y2) or None (= pass
  the frame through) of the frames that became final, in order. `stats()` counts frames with a face, frames
  without one, frames whose box was carried from a neighbour, frames passed through, scene cuts and track
  switches (the followed person was gone and another face was taken).
  """

  def __init__(
    self,
    width: int,
    height: int,
    pads: Sequence[int] = DEFAULT_PADS,
    smooth_window: int = DEFAULT_SMOOTH_WINDOW,
    no_face: str = "carry",
    max_wait: int = 250,
    scene_cuts: SceneCuts | None = None,
  ):
    if no_face not in NO_FACE_POLICIES:
      raise ValueError(f"no_face must be one of {NO_FACE_POLICIES}, got {no_face!r}")
    if len(pads) != 4:
      raise ValueError(f"pads must be (top, bottom, left, right), got {tuple(pads)!r}")
    self.width, self.height = int(width), int(height)
    self.pads: Box = tuple(int(p) for p in pads)  # type: ignore[assignment]
    self.window = max(1, int(smooth_window))
    self.no_face, self.max_wait = no_face, int(max_wait)
    self.cut_test = scene_cuts if scene_cuts is not None else SceneCuts()
    self.follower = FaceFollower()
    self.shot = self._new_shot()
    self.done: list[_ShotTrack] = []  # finished shots' counters (their boxes are in self.ready)
    self.ready: list[Box | None] = []
    self.frames_seen = 0
    self.frames_with_face = 0
    self.scene_cuts = 0

  def _new_shot(self) -> _ShotTrack:
    return _ShotTrack(self.width, self.height, self.pads, self.window, self.no_face, self.max_wait)

  def add(self, detections: Sequence, frames: Sequence[np.ndarray] | None = None, cuts=None) -> None:
    """Appends the detections of the next frames (see the class docstring)."""
    if frames is not None and len(frames) != len(detections):
      raise ValueError(f"{len(detections)} detections but {len(frames)} frames")
    if cuts is not None and len(cuts) != len(detections):
      raise ValueError(f"{len(detections)} detections but {len(cuts)} cut flags")
    for i, detection in enumerate(detections):
      if cuts is not None:
        cut = bool(cuts[i])
      else:
        cut = frames is not None and self.cut_test.update(frames[i])
      if cut and self.frames_seen:
        self.scene_cuts += 1
        self.ready.extend(self.shot.finalize(end=True))
        self.done.append(self.shot)
        self.shot = self._new_shot()
        self.follower.reset()
      self.frames_seen += 1
      box = self.follower.pick(detection)
      self.frames_with_face += box is not None
      self.shot.add(box)

  def finalize(self, end: bool) -> list[Box | None]:
    """The boxes of the frames that became final since the last call (all remaining ones when `end`)."""
    result, self.ready = self.ready + self.shot.finalize(end), []
    return result

  def stats(self) -> dict:
    shots = [*self.done, self.shot]
    return dict(
      frames_with_face=self.frames_with_face,
      frames_without_face=sum(s.without_face for s in shots),
      carried_frames=sum(s.carried for s in shots),
      passthrough_frames=sum(s.passthrough for s in shots),
      scene_cuts=self.scene_cuts,
      track_switches=self.follower.switches,
    )

  # Counters by name, as before the shot split.
  @property
  def frames_without_face(self) -> int:
    return self.stats()["frames_without_face"]

  @property
  def passthrough_frames(self) -> int:
    return self.stats()["passthrough_frames"]


def track_boxes(
  detections: Sequence,
  width: int,
  height: int,
  pads: Sequence[int] = DEFAULT_PADS,
  smooth_window: int = DEFAULT_SMOOTH_WINDOW,
  no_face: str = "carry",
  frames: Sequence[np.ndarray] | None = None,
  cuts=None,
) -> tuple[list[Box | None], dict]:
  """The whole clip at once: FaceTrack fed every detection, finalised with end=True.

  `detections`: per frame a `detect_faces` (N, 5) array, a box or None; `frames` or `cuts` enable scene
  cuts (see FaceTrack). Returns (one box (x1, y1, x2, y2) or None per frame, FaceTrack.stats()). With no
  face in any frame every box is None.
  """
  face_track = FaceTrack(
    width, height, pads=pads, smooth_window=smooth_window, no_face=no_face, max_wait=max(len(detections), 1)
  )
  face_track.add(detections, frames=frames, cuts=cuts)
  boxes = face_track.finalize(end=True)
  return boxes, face_track.stats()
