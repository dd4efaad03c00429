"""One video -> one training record: the per-clip work of preprocessing, shared by the Beam job and the
demo corpus builder.

Owns: the preprocessing settings (`PreprocessConfig`, declared once: each field carries its command-line
help and choices as field metadata, and `add_flags` / `flag_values` turn any such dataclass into argparse
flags), which clips a corpus has (`list_tasks`: a glob, LRS2-style filelists, or
data_root/{train,val,test}.txt; `dedupe`; local or gs:// through lipsync_jax.fs), and the pure per-clip
function (`process_clip`, `process_to_record`), no Beam; a gs:// video is decoded from a local copy:

  probe -> 16 kHz mono audio -> mel (lipsync_jax.media.audio, exact original hparams) -> frames at 25 fps
  (lipsync_jax.media.video.iter_frames(fps=25.0): THE fps rule of lipsync_jax.media.fps, by presentation
  timestamp) -> every face per frame (lipsync_jax.media.detectors) -> THE face track
  (lipsync_jax.media.track.track_boxes: scene cuts, the face that continues the track, then within each
  shot nearest-box fill, pads, 5-frame smoothing) -> crop, resize to
  img_size (track.crop_and_resize) -> JPEG (or raw) -> one tf.train.Example (lipsync_jax.data.records).

Frame rate: the original requires 25 fps. With fps_policy='resample' (default) other rates are converted by
timestamps (lipsync_jax.media.fps); fps_policy='reject' skips such clips.

Damaged media is kept: corrupt packets are skipped as ffmpeg skips them, audio keeps its timing (lost spans
become silence), truncated files give what is there (lipsync_jax.media.video); the per-clip stats count
them (`damaged_packets`, and `damage`: per stream what was met) and dataset_info.json totals them.

A clip that cannot be used raises `SkipClip` with one reason of SKIP_REASONS:
  unreadable (cannot open, or nothing decodable), no_video, no_audio, fps (reject policy), too_few_frames
  (< min_frames at 25 fps), no_face (more than max_no_face_fraction of the frames searched without a face),
  audio_nan, audio_silent, audio_too_short, duplicate (listed twice), error (anything unexpected; the
  message is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from lipsync_jax import fs, windows
from lipsync_jax.data import records
from lipsync_jax.media import audio, detectors, face_detector, track, video

KNOWN_SPLITS = ("train", "val", "test", "pretrain")
LRS2_FILELISTS = ("train", "val", "test")
SKIP_REASONS = (
  "unreadable",
  "no_video",
  "no_audio",
  "fps",
  "too_few_frames",
  "no_face",
  "audio_nan",
  "audio_silent",
  "audio_too_short",
  "duplicate",
  "error",
)
_SPLIT_NAME = re.compile(r"^[a-z]+$")
_GLOB_CHARS = re.compile(r"[*?\[]")


def option(default: Any, help: str, **metadata) -> Any:
  """A dataclass field whose metadata makes its command-line flag (`add_flags`).

  metadata: help, choices (a sequence, or a callable returning one), metavar, flag=False (no flag).
  """
  return dataclasses.field(default=default, metadata=dict(metadata, help=help))


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
  """Adds one `--<field>` flag per field of dataclass `cls` (type, default, help, choices from the field).

  bool -> store_true; tuple -> nargs=len(default) of the element type; int / float / str -> that type.
  """
  for field in dataclasses.fields(cls):
    meta = field.metadata
    if meta.get("flag", True) is False:
      continue
    kwargs: dict[str, Any] = dict(help=meta.get("help"))
    choices = meta.get("choices")
    if choices is not None:
      kwargs["choices"] = list(choices() if callable(choices) else choices)
    if "metavar" in meta:
      kwargs["metavar"] = meta["metavar"]
    default = field.default
    if isinstance(default, bool):
      kwargs.update(action="store_true", default=default)
    elif isinstance(default, tuple):
      kwargs.update(type=type(default[0]), nargs=len(default), default=list(default))
    else:
      kwargs.update(type=type(default), default=default)
    parser.add_argument(f"--{field.name}", **kwargs)


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
  """{field: value} of the flags `add_flags(parser, cls)` added, read from parsed `args`."""
  return {
    f.name: getattr(args, f.name)
    for f in dataclasses.fields(cls)
    if f.metadata.get("flag", True) is not False and hasattr(args, f.name)
  }


def _coerce(value: Any, default: Any) -> Any:
  """`value` as the type of the field's default (flags and JSON give lists and ints for tuples and floats)."""
  if isinstance(default, bool):
    return bool(value)
  if isinstance(default, tuple):
    return tuple(type(default[0])(v) for v in value) if default else tuple(value)
  if isinstance(default, (int, float, str)):
    return type(default)(value)
  return value


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """How each clip is turned into a record. Everything here ends up in dataset_info.json."""

  img_size: int = option(96, "face crop size in pixels (square; even, >= 16)")
  detector: str = option(
    detectors.DEFAULT,
    "face detector (lipsync_jax.media.detectors)",
    choices=lambda: sorted(detectors.DETECTORS),
  )
  detector_weights: str = option("", "weights file of a detector that needs one (s3fd: the public s3fd.pth)")
  # ((key, value), ...) so the config stays hashable/picklable; the CLI sets it with --fixed_box.
  detector_kwargs: tuple = option((), "detector arguments", flag=False)
  pads: tuple = option(
    track.DEFAULT_PADS,
    "pixels added around each detected box (as at inference)",
    metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
  )
  smooth_window: int = option(track.DEFAULT_SMOOTH_WINDOW, "boxes averaged over this many frames (1 = off)")
  frame_format: str = option("jpeg", "how frames are stored in the records", choices=records.FRAME_FORMATS)
  jpeg_quality: int = option(95, "JPEG quality of the stored frames (--frame_format jpeg)")
  fps_policy: str = option(
    "resample", "clips not at 25 fps: resample by timestamp, or skip them", choices=("resample", "reject")
  )
  min_frames: int = option(windows.MEL_STEPS, "skip clips with fewer frames at 25 fps")
  max_no_face_fraction: float = option(0.25, "skip clips with more of their searched frames without a face")
  detect_every: int = option(
    1, "run the detector on every k-th frame only (faster; boxes are smoothed anyway)"
  )
  max_decoded_mib: int = option(
    512, "clips whose decoded frames exceed this are decoded twice instead of held in memory"
  )

  def __post_init__(self):
    kwargs = self.detector_kwargs
    if isinstance(kwargs, dict):
      kwargs = kwargs.items()
    object.__setattr__(
      self,
      "detector_kwargs",
      tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in kwargs)),
    )
    for field in dataclasses.fields(self):
      if field.name != "detector_kwargs":
        object.__setattr__(self, field.name, _coerce(getattr(self, field.name), field.default))
    if self.frame_format not in records.FRAME_FORMATS:
      raise ValueError(f"frame_format must be one of {records.FRAME_FORMATS}, got {self.frame_format!r}")
    if self.fps_policy not in ("resample", "reject"):
      raise ValueError(f"fps_policy must be 'resample' or 'reject', got {self.fps_policy!r}")
    if self.img_size < 16 or self.img_size % 2:
      raise ValueError(f"img_size must be an even number >= 16, got {self.img_size}")
    if self.detector not in detectors.DETECTORS:
      raise ValueError(f"unknown detector {self.detector!r}; choose one of {sorted(detectors.DETECTORS)}")
    if len(self.pads) != 4:
      raise ValueError(f"pads must be (top, bottom, left, right), got {self.pads!r}")
    if self.detect_every < 1:
      raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
    if not 0.0 <= self.max_no_face_fraction <= 1.0:
      raise ValueError(f"max_no_face_fraction must be in [0, 1], got {self.max_no_face_fraction}")

  def make_detector(self) -> face_detector.FaceDetector:
    return detectors.get_detector(
      self.detector, weights=self.detector_weights or None, **dict(self.detector_kwargs)
    )

  def as_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out["detector_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.detector_kwargs}
    out["pads"] = list(self.pads)
    return out


@dataclasses.dataclass(frozen=True)
class ClipTask:
  split: str
  clip_id: str
  path: str


# Frames per detector call when frames are streamed (batched detectors such as s3fd run whole batches).
DETECT_BATCH = 16


class SkipClip(Exception):
  """A clip that cannot be used; `reason` is one of SKIP_REASONS."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


# ---------------------------------------------------------------------------------------------------------
# Which clips: a glob, filelists, or data_root/{train,val,test}.txt.
# ---------------------------------------------------------------------------------------------------------


def _check_split(split: str, where: str) -> str:
  if not _SPLIT_NAME.match(split):
    raise ValueError(
      f"split name {split!r} (from {where}) must be lowercase letters only, e.g. train/val/test"
    )
  return split


def _glob_base(pattern: str) -> str:
  """The fixed leading directories of a glob pattern ('gs://b/videos/**/*.mp4' -> 'gs://b/videos')."""
  sep = "/" if fs.is_remote(pattern) else os.sep
  parts = pattern.split(sep)
  fixed = []
  for part in parts:
    if _GLOB_CHARS.search(part):
      break
    fixed.append(part)
  base = sep.join(fixed)
  return base if fixed and len(fixed) < len(parts) else pattern.rsplit(sep, 1)[0] if sep in pattern else ""


def _relative(path: str, base: str) -> str:
  if not base:
    return path
  if fs.is_remote(path):  # URLs: plain prefix arithmetic (os.path would collapse the '//')
    return path[len(base.rstrip("/")) + 1 :] if path.startswith(base.rstrip("/") + "/") else path
  return os.path.relpath(path, base)


def tasks_from_glob(pattern: str, split: str | None = None) -> list[ClipTask]:
  """Videos matching `pattern` ('DIR/**/*.mp4', or gs://bucket/DIR/**/*.mp4: lipsync_jax.fs.glob). clip_id
  = path below the glob's fixed prefix, without the extension. split = `split` if given, else the first
  directory named train/val/test/pretrain in that relative path, else 'train'."""
  base = _glob_base(pattern)
  # Local matches are checked to be files; a remote listing returns objects (a "directory" that matched
  # would fail to decode and be skipped as unreadable), and one request per path would be slow.
  paths = [p for p in fs.glob(pattern) if fs.is_remote(p) or os.path.isfile(p)]
  tasks = []
  for path in paths:
    rel = _relative(path, base)
    clip_id = os.path.splitext(rel)[0].replace(os.sep, "/")
    clip_split = split
    if clip_split is None:
      dirs = clip_id.split("/")[:-1]
      clip_split = next((d for d in dirs if d in KNOWN_SPLITS), "train")
    tasks.append(ClipTask(_check_split(clip_split, "--split or the path"), clip_id, path))
  return tasks


def tasks_from_filelist(filelist: str, data_root: str, ext: str = ".mp4") -> list[ClipTask]:
  """LRS2 layout: each line 'speaker/clip' (extra tokens ignored) -> data_root/speaker/clip.mp4;
  split = the filelist's stem (train.txt -> 'train'). Either may be local or gs:// (lipsync_jax.fs)."""
  split = _check_split(os.path.splitext(os.path.basename(filelist))[0], f"filelist {filelist}")
  tasks = []
  with fs.open(filelist) as f:
    for line in f:
      fields = line.split()
      if not fields:
        continue
      clip_id = fields[0]
      tasks.append(ClipTask(split, clip_id, os.path.join(data_root, *clip_id.split("/")) + ext))
  return tasks


def list_tasks(
  input_glob: str | None = None,
  filelist: str | Sequence[str] | None = None,
  data_root: str | None = None,
  split: str | None = None,
) -> list[ClipTask]:
  """All clips to process, from a glob, one or more filelists, or data_root/{train,val,test}.txt."""
  if input_glob:
    if filelist:
      raise ValueError("give either --input (a glob) or --filelist/--data_root, not both")
    return tasks_from_glob(input_glob, split)
  if data_root is None:
    if filelist:
      raise ValueError(f"--filelist {filelist} needs --data_root: the folder its 'speaker/clip' lines are in")
    raise ValueError("nothing to preprocess: pass --input 'DIR/**/*.mp4' or --data_root (with --filelist)")
  if isinstance(filelist, str):
    filelist = [filelist]
  if not filelist:
    filelist = [
      os.path.join(data_root, f"{name}.txt")
      for name in LRS2_FILELISTS
      if fs.isfile(os.path.join(data_root, f"{name}.txt"))
    ]
    if not filelist:
      raise ValueError(
        f"no filelist: {data_root} has none of {[n + '.txt' for n in LRS2_FILELISTS]}; "
        "pass --filelist or --input"
      )
  tasks = []
  for name in filelist:
    if not fs.isfile(name):
      raise ValueError(f"filelist {name!r} not found")
    tasks.extend(tasks_from_filelist(name, data_root))
  return tasks


def dedupe(tasks: Sequence[ClipTask]) -> tuple[list[ClipTask], list[dict]]:
  """(unique tasks, skip reports of the repeated (split, clip_id) entries)."""
  seen, unique, duplicates = set(), [], []
  for task in tasks:
    key = (task.split, task.clip_id)
    if key in seen:
      duplicates.append(
        dict(
          status="skipped",
          clip_id=task.clip_id,
          split=task.split,
          source=task.path,
          reason="duplicate",
          detail="clip_id listed twice in this split",
        )
      )
      continue
    seen.add(key)
    unique.append(task)
  return unique, duplicates


# ---------------------------------------------------------------------------------------------------------
# The per-clip work.
# ---------------------------------------------------------------------------------------------------------


def _read_mel(task: ClipTask, path: str, report: video.DecodeReport | None = None) -> tuple[np.ndarray, int]:
  try:
    wav = video.read_audio(path, sr=audio.AUDIO_HPARAMS.sample_rate, report=report)
  except video.VideoError as e:
    raise SkipClip("no_audio" if "no audio stream" in str(e) else "unreadable", str(e)) from e
  if not np.all(np.isfinite(wav)):
    raise SkipClip("audio_nan", f"{int(np.sum(~np.isfinite(wav)))} of {wav.size} samples are NaN/inf")
  if wav.size < audio.min_samples():
    raise SkipClip("audio_too_short", f"{wav.size} samples; need >= {audio.min_samples()}")
  peak = float(np.max(np.abs(wav)))
  if peak <= audio.SILENCE_PEAK:
    raise SkipClip("audio_silent", f"peak amplitude {peak:.2e} <= {audio.SILENCE_PEAK}")
  try:
    mel = audio.melspectrogram(wav, source=task.path, allow_silent=False)
  except audio.AudioError as e:
    raise SkipClip("error", str(e)) from e
  return mel, wav.size


def _damage_entry(report: video.DecodeReport) -> dict:
  """A DecodeReport as a JSON-able report entry (the path is the report's 'source' already)."""
  return {k: v for k, v in report.as_dict().items() if k not in ("path", "stream")}


def process_clip(
  task: ClipTask, config: PreprocessConfig, detector: face_detector.FaceDetector | None = None
) -> tuple[records.Clip, dict]:
  """One video -> (records.Clip, stats). Raises SkipClip with a reason for unusable input.

  A remote video (gs://...) is decoded from a local copy (lipsync_jax.fs.local_copy: the decoders need a
  file; the copy is deleted afterwards); the record's `source` stays the path given."""
  with contextlib.ExitStack() as stack:
    try:
      path = stack.enter_context(fs.local_copy(task.path))
    except OSError as e:  # a missing or unreadable object: skipped as unreadable, as a bad local file is
      raise SkipClip("unreadable", f"could not read {task.path}: {type(e).__name__}: {e}") from e
    return _process_local_clip(task, path, config, detector or config.make_detector())


def _process_local_clip(
  task: ClipTask, path: str, config: PreprocessConfig, detector: face_detector.FaceDetector
) -> tuple[records.Clip, dict]:
  """process_clip on the local file `path` holding task's video."""
  try:
    info = video.probe(path)
  except video.VideoError as e:
    raise SkipClip("unreadable", str(e)) from e
  if not info.has_video:
    raise SkipClip("no_video", "the file has no video stream")
  if not info.has_audio:
    raise SkipClip("no_audio", "the file has no audio stream")
  if not info.fps or info.fps <= 0:
    raise SkipClip("unreadable", f"video stream reports fps={info.fps}")
  resampled = abs(info.fps - windows.FPS) >= 1e-3
  if resampled and config.fps_policy == "reject":
    raise SkipClip(
      "fps", f"{info.fps:.3f} fps; the original requires {windows.FPS} (use fps_policy=resample)"
    )

  # Damaged packets are skipped (the clip is kept) and counted into these; see lipsync_jax.media.video.
  audio_damage, video_damage = video.DecodeReport(), video.DecodeReport()
  # Cheap checks first: no face detection for clips we drop.
  mel, num_samples = _read_mel(task, path, audio_damage)

  def frames_at_25(report: video.DecodeReport):
    try:
      yield from video.iter_frames(path, fps=float(windows.FPS), report=report)
    except video.VideoError as e:
      raise SkipClip("unreadable", str(e)) from e

  every = config.detect_every
  scene_cuts = track.SceneCuts()

  def too_few(num_frames: int) -> SkipClip:
    return SkipClip(
      "too_few_frames", f"{num_frames} frames at {windows.FPS} fps; need >= {config.min_frames}"
    )

  decoded_bytes = max(info.num_frames, 1) * info.width * info.height * 3 * max(1.0, windows.FPS / info.fps)
  hold_frames = decoded_bytes <= config.max_decoded_mib * 2**20
  if hold_frames:  # one decode; frames stay in memory between detection and cropping
    frames = list(frames_at_25(video_damage))
    num_frames = len(frames)
    if num_frames < config.min_frames:
      raise too_few(num_frames)
    chosen = [i for i in range(num_frames) if i % every == 0 or i == num_frames - 1]  # every k-th, the last
    found = detector.detect_faces([frames[i] for i in chosen])
    cuts = [scene_cuts.update(frame) for frame in frames]
  else:  # large frames: detect while streaming, decode again to crop (memory stays one batch of frames)
    frames = None
    chosen, found, cuts, batch, last = [], [], [], [], None
    num_frames = 0
    for i, frame in enumerate(frames_at_25(video_damage)):
      num_frames, last = i + 1, frame
      cuts.append(scene_cuts.update(frame))
      if i % every == 0:
        chosen.append(i)
        batch.append(frame)
        if len(batch) == DETECT_BATCH:
          found.extend(detector.detect_faces(batch))
          batch = []
    if num_frames < config.min_frames:
      raise too_few(num_frames)
    if chosen and chosen[-1] != num_frames - 1:
      chosen.append(num_frames - 1)
      batch.append(last)
    if batch:
      found.extend(detector.detect_faces(batch))
    del last, batch

  missing = sum(len(faces) == 0 for faces in found)
  if missing > config.max_no_face_fraction * len(found) or missing == len(found):
    raise SkipClip(
      "no_face",
      f"no face in {missing} of {len(found)} frames searched "
      f"(max_no_face_fraction={config.max_no_face_fraction})",
    )
  detections: list = [None] * num_frames
  for i, faces in zip(chosen, found):
    detections[i] = faces
  tracked, track_stats = track.track_boxes(
    detections, info.width, info.height, pads=config.pads, smooth_window=config.smooth_window, cuts=cuts
  )
  faceless = sum(box is None for box in tracked)
  if faceless:  # never filled across a scene cut: a shot without any face has no crops to train on
    raise SkipClip(
      "no_face",
      f"{faceless} of {num_frames} frames lie in shots without a face "
      f"({track_stats['scene_cuts']} scene cuts); trim the clip to its shots with faces",
    )
  boxes = np.array(tracked, np.int64).reshape(-1, 4)

  crops = np.empty((num_frames, config.img_size, config.img_size, 3), np.uint8)
  source = frames if hold_frames else frames_at_25(video.DecodeReport(quiet=True))  # counted once
  count = 0
  for i, frame in enumerate(source):
    if i >= num_frames:
      break
    crops[i] = track.crop_and_resize(frame, boxes[i], config.img_size)
    count += 1
  if count != num_frames:
    raise SkipClip("unreadable", f"second decode gave {count} frames, first gave {num_frames}")

  clip = records.Clip(
    clip_id=task.clip_id,
    split=task.split,
    frames=crops,
    mel=mel,
    boxes=boxes,
    fps=float(windows.FPS),
    source=task.path,
    sample_rate=audio.AUDIO_HPARAMS.sample_rate,
  )
  stats = dict(
    clip_id=task.clip_id,
    split=task.split,
    source=task.path,
    num_frames=num_frames,
    mel_steps=int(mel.shape[1]),
    no_face_frames=int(missing),
    frames_searched=len(found),
    scene_cuts=track_stats["scene_cuts"],
    track_switches=track_stats["track_switches"],
    source_fps=float(info.fps),
    resampled=bool(resampled),
    audio_seconds=num_samples / audio.AUDIO_HPARAMS.sample_rate,
    damaged_packets=audio_damage.damage + video_damage.damage,
  )
  damage = {r.stream: _damage_entry(r) for r in (audio_damage, video_damage) if r.damage}
  if damage:
    stats["damage"] = damage
  return clip, stats


def process_to_record(
  task: ClipTask, config: PreprocessConfig, detector: face_detector.FaceDetector | None = None
) -> tuple[bytes | None, dict]:
  """process_clip + serialisation, never raising: (record bytes | None, report dict with 'status')."""
  try:
    clip, stats = process_clip(task, config, detector)
    record = records.serialize_clip(clip, config.frame_format, config.jpeg_quality)
    return record, dict(stats, status="written", bytes=len(record))
  except SkipClip as e:
    reason, detail = e.reason, e.detail
  except Exception as e:  # noqa: BLE001 - a batch job skips and counts, never dies on one clip
    reason = "error"
    detail = f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3).splitlines()[-3:]}"
  return None, dict(
    status="skipped", clip_id=task.clip_id, split=task.split, source=task.path, reason=reason, detail=detail
  )
