"""Preprocessing on Apache Beam: talking-face videos -> face crops + mels -> TFRecord shards.

Owns: the offline preprocessing job (`run`, the CLI), its per-clip work (`process_clip`, a pure function the
Beam DoFn wraps), the output-directory protocol and `dataset_info.json`.

  python -m data_pipelines.preprocess --input 'DIR/**/*.mp4' --out SHARDS [--img_size 96]
  python -m data_pipelines.preprocess --data_root LRS2/main --out SHARDS     # finds {train,val,test}.txt
  python -m data_pipelines.preprocess --filelist LRS2/train.txt --data_root LRS2/main --out SHARDS
  ... --out gs://B/shards --runner DataflowRunner --project P --region R --temp_location gs://B/tmp \
      --extra_packages dist/lipsync_jax-0.1.0-py3-none-any.whl   # workers need lipsync_jax installed

Per clip (one `tf.train.Example` from lipsync_jax.data.records):
  probe -> 16 kHz mono audio -> mel (lipsync_jax.media.audio, exact original hparams) -> decode frames at 25 fps
  -> detect a face per frame (lipsync_jax.media.detectors) -> fill frames without a face from the nearest
  detected frame -> pad (top, bottom, left, right) and clip -> smooth over 5 frames -> crop, resize to
  img_size -> JPEG (or raw) -> serialise.

Frame rate: the original requires 25 fps. With `fps_policy='resample'` (default) other rates are converted
by timestamps: output frame k (time k/25) takes the source frame nearest to it (frames dropped or repeated,
audio untouched, so sync is kept to within half a source frame). `fps_policy='reject'` skips such clips.

Bad input never stops the run: each clip that cannot be used is skipped with one reason —
  unreadable (cannot open/decode), no_video, no_audio, fps (reject policy), too_few_frames (< min_frames at
  25 fps), no_face (more than max_no_face_fraction of the frames without a face), audio_nan, audio_silent,
  audio_too_short, error (anything unexpected; the message is kept) —
counted in Beam counters (namespace 'preprocess') and listed in dataset_info.json.

Output directory protocol (safe to rerun into the same directory; a failed run leaves it as it was):
  1. Beam writes shards `{split}-{i:05d}-of-{n:05d}.tfrecord` into OUT/_staging-<run id>/ (its own
     temp-file-then-rename finalisation) plus a per-clip report (JSON lines).
  2. Only after the pipeline succeeded: the shards are moved into OUT (same names are replaced), shards of
     the rewritten splits left from older runs are deleted, and dataset_info.json is written atomically
     (temp file + rename). Splits not in this run keep their shards and info entries (so train and val can
     be preprocessed by separate runs), unless their settings (img_size, frame format, audio hparams)
     differ, which is refused up front unless `overwrite=True` (then everything old is replaced).

TFRecord files are standard (length, masked CRC-32C of the length, data, masked CRC-32C of the data; Beam
computes CRC-32C with google-crc32c, python-snappy or crcmod — `apache-beam[tfrecord]` installs crcmod);
they read with tf.data, grain.experimental.TFRecordIterDataset and lipsync_jax.data.records.parse_example.

Shards: `num_shards` per split if given, else ceil(clips / clips_per_shard). Records are spread over the
shards by Beam (round robin from a random start), so which shard holds a clip may differ between runs; the
set of records does not.

DirectRunner defaults for a small machine: `direct_running_mode='multi_processing'` with
`direct_num_workers` = the cores this process may use (face detection and JPEG coding are CPU bound;
processes avoid the GIL; measured on the demo corpus: multi_processing x2 had the shortest wall time, see
the project notes). Beam's DirectRunner keeps the records of a grouped write in memory (about 0.13 MB per
second of video at 96 px, JPEG q95): corpora that outgrow one machine's memory should use a distributed
runner (the same code; pass --runner and its options through).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import traceback
import uuid
from typing import Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np

from lipsync_jax.media import audio
from lipsync_jax.media import detectors as face_detection
from lipsync_jax.data import records
from lipsync_jax.media import video
from lipsync_jax import windows

LOG = logging.getLogger("data_pipelines.preprocess")

INFO_FILE = "dataset_info.json"
INFO_FORMAT_VERSION = 1
KNOWN_SPLITS = ("train", "val", "test", "pretrain")
LRS2_FILELISTS = ("train", "val", "test")
SKIP_REASONS = ("unreadable", "no_video", "no_audio", "fps", "too_few_frames", "no_face", "audio_nan",
                "audio_silent", "audio_too_short", "duplicate", "error")
_SPLIT_NAME = re.compile(r"^[a-z]+$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_STAGING_PREFIX = "_staging-"
_REPORT_TAG = "report"
COUNTER_NAMESPACE = "preprocess"


# ---------------------------------------------------------------------------------------------------------
# Settings and the per-clip work (pure Python; no Beam).
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """How each clip is turned into a record. Everything here ends up in dataset_info.json."""

  img_size: int = 96
  detector: str = "haar"
  detector_kwargs: tuple = ()  # ((key, value), ...) so the config stays hashable/picklable
  pads: tuple = face_detection.DEFAULT_PADS  # (top, bottom, left, right), as the original inference
  smooth_window: int = face_detection.DEFAULT_SMOOTH_WINDOW  # <= 1 disables smoothing
  frame_format: str = "jpeg"
  jpeg_quality: int = 95
  fps_policy: str = "resample"  # 'resample' | 'reject'
  min_frames: int = windows.MEL_STEPS  # 16: a clip needs > 3 * SYNC_T frames
  max_no_face_fraction: float = 0.25
  detect_every: int = 1  # > 1: detect on every k-th frame (and the last); the rest take the nearest box
  max_decoded_mib: int = 512  # clips whose decoded frames exceed this are decoded twice instead of held

  def __post_init__(self):
    if self.frame_format not in records.FRAME_FORMATS:
      raise ValueError(f"frame_format must be one of {records.FRAME_FORMATS}, got {self.frame_format!r}")
    if self.fps_policy not in ("resample", "reject"):
      raise ValueError(f"fps_policy must be 'resample' or 'reject', got {self.fps_policy!r}")
    if self.img_size < 16 or self.img_size % 2:
      raise ValueError(f"img_size must be an even number >= 16, got {self.img_size}")
    if self.detector not in face_detection.DETECTORS:
      raise ValueError(f"unknown detector {self.detector!r}; "
                       f"choose one of {sorted(face_detection.DETECTORS)}")
    if len(self.pads) != 4:
      raise ValueError(f"pads must be (top, bottom, left, right), got {self.pads!r}")
    if self.detect_every < 1:
      raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
    if not 0.0 <= self.max_no_face_fraction <= 1.0:
      raise ValueError(f"max_no_face_fraction must be in [0, 1], got {self.max_no_face_fraction}")

  def make_detector(self) -> face_detection.FaceDetector:
    return face_detection.get_detector(self.detector, **dict(self.detector_kwargs))

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


class SkipClip(Exception):
  """A clip that cannot be used; `reason` is one of SKIP_REASONS."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


def resample_to_fps(frames: Iterator[np.ndarray], source_fps: float,
                    target_fps: float = windows.FPS) -> Iterator[np.ndarray]:
  """Streams frames at `target_fps`: output k (time k/target) is the source frame nearest to that time."""
  if abs(source_fps - target_fps) < 1e-3:
    yield from frames
    return
  ratio = source_fps / target_fps
  k = 0
  for i, frame in enumerate(frames):
    while math.floor(k * ratio + 0.5) == i:
      yield frame
      k += 1


def _read_mel(task: ClipTask) -> tuple[np.ndarray, int]:
  try:
    wav = video.read_audio(task.path, sr=audio.AUDIO_HPARAMS.sample_rate)
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


def process_clip(task: ClipTask, config: PreprocessConfig,
                 detector: Optional[face_detection.FaceDetector] = None) -> tuple[records.Clip, dict]:
  """One video -> (records.Clip, stats). Raises SkipClip with a reason for unusable input."""
  detector = detector or config.make_detector()
  try:
    info = video.probe(task.path)
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
    raise SkipClip("fps", f"{info.fps:.3f} fps; the original requires {windows.FPS} "
                          "(use fps_policy=resample)")

  mel, num_samples = _read_mel(task)  # cheap checks first: no face detection for clips we drop anyway

  def frames_at_25():
    try:
      yield from resample_to_fps(video.iter_frames(task.path), info.fps)
    except video.VideoError as e:
      raise SkipClip("unreadable", str(e)) from e

  every = config.detect_every

  def detect_at(i, num):  # frames detection runs on: every k-th and the last
    return i % every == 0 or i == num - 1

  decoded_bytes = max(info.num_frames, 1) * info.width * info.height * 3 * max(1.0, windows.FPS / info.fps)
  hold_frames = decoded_bytes <= config.max_decoded_mib * 2**20
  if hold_frames:  # one decode; frames stay in memory between detection and cropping
    frames = list(frames_at_25())
    num_frames = len(frames)
    if num_frames < config.min_frames:
      raise SkipClip("too_few_frames", f"{num_frames} frames at {windows.FPS} fps; "
                                       f"need >= {config.min_frames}")
    chosen = [i for i in range(num_frames) if detect_at(i, num_frames)]
    found = detector.detect([frames[i] for i in chosen])
  else:  # large frames: detect while streaming, decode again to crop (memory stays one frame)
    frames = None
    chosen, found, last = [], [], None
    num_frames = 0
    for i, frame in enumerate(frames_at_25()):
      num_frames, last = i + 1, frame
      if i % every == 0:
        chosen.append(i)
        found.extend(detector.detect([frame]))
    if num_frames < config.min_frames:
      raise SkipClip("too_few_frames", f"{num_frames} frames at {windows.FPS} fps; "
                                       f"need >= {config.min_frames}")
    if chosen and chosen[-1] != num_frames - 1:
      chosen.append(num_frames - 1)
      found.extend(detector.detect([last]))
    del last

  missing = sum(box is None for box in found)
  if missing > config.max_no_face_fraction * len(found) or missing == len(found):
    raise SkipClip("no_face", f"no face in {missing} of {len(found)} frames searched "
                              f"(max_no_face_fraction={config.max_no_face_fraction})")
  detections = [None] * num_frames
  for i, box in zip(chosen, found):
    detections[i] = box
  boxes, _ = face_detection.fill_missing(detections)
  boxes = np.array([face_detection.pad_and_clip(b, config.pads, info.width, info.height) for b in boxes],
                   np.int64).reshape(-1, 4)
  boxes = face_detection.smooth_boxes(boxes, config.smooth_window)

  crops = np.empty((num_frames, config.img_size, config.img_size, 3), np.uint8)
  source = frames if hold_frames else frames_at_25()
  count = 0
  for i, frame in enumerate(source):
    if i >= num_frames:
      break
    crops[i] = face_detection.crop_and_resize(frame, boxes[i], config.img_size)
    count += 1
  if count != num_frames:
    raise SkipClip("unreadable", f"second decode gave {count} frames, first gave {num_frames}")

  clip = records.Clip(clip_id=task.clip_id, split=task.split, frames=crops, mel=mel, boxes=boxes,
                      fps=float(windows.FPS), source=task.path,
                      sample_rate=audio.AUDIO_HPARAMS.sample_rate)
  stats = dict(clip_id=task.clip_id, split=task.split, source=task.path, num_frames=num_frames,
               mel_steps=int(mel.shape[1]), no_face_frames=int(missing), frames_searched=len(found),
               source_fps=float(info.fps),
               resampled=bool(resampled), audio_seconds=num_samples / audio.AUDIO_HPARAMS.sample_rate)
  return clip, stats


def process_to_record(task: ClipTask, config: PreprocessConfig,
                      detector: Optional[face_detection.FaceDetector] = None) -> tuple[Optional[bytes], dict]:
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
  return None, dict(status="skipped", clip_id=task.clip_id, split=task.split, source=task.path,
                    reason=reason, detail=detail)


# ---------------------------------------------------------------------------------------------------------
# Listing the input.
# ---------------------------------------------------------------------------------------------------------


def _check_split(split: str, where: str) -> str:
  if not _SPLIT_NAME.match(split):
    raise ValueError(f"split name {split!r} (from {where}) must be lowercase letters only, "
                     "e.g. train/val/test")
  return split


def _glob_base(pattern: str) -> str:
  parts = pattern.split(os.sep)
  fixed = []
  for part in parts:
    if _GLOB_CHARS.search(part):
      break
    fixed.append(part)
  base = os.sep.join(fixed)
  return base if fixed and len(fixed) < len(parts) else os.path.dirname(pattern)


def tasks_from_glob(pattern: str, split: Optional[str] = None) -> list[ClipTask]:
  """Videos matching `pattern` ('DIR/**/*.mp4'). clip_id = path below the glob's fixed prefix, without the
  extension. split = `split` if given, else the first directory named train/val/test/pretrain in that
  relative path, else 'train'."""
  base = _glob_base(pattern)
  paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
  tasks = []
  for path in paths:
    rel = os.path.relpath(path, base) if base else path
    clip_id = os.path.splitext(rel)[0].replace(os.sep, "/")
    clip_split = split
    if clip_split is None:
      dirs = clip_id.split("/")[:-1]
      clip_split = next((d for d in dirs if d in KNOWN_SPLITS), "train")
    tasks.append(ClipTask(_check_split(clip_split, "--split or the path"), clip_id, path))
  return tasks


def tasks_from_filelist(filelist: str, data_root: str, ext: str = ".mp4") -> list[ClipTask]:
  """LRS2 layout: each line 'speaker/clip' (extra tokens ignored) -> data_root/speaker/clip.mp4;
  split = the filelist's stem (train.txt -> 'train')."""
  split = _check_split(os.path.splitext(os.path.basename(filelist))[0], f"filelist {filelist}")
  tasks = []
  with open(filelist) as f:
    for line in f:
      fields = line.split()
      if not fields:
        continue
      clip_id = fields[0]
      tasks.append(ClipTask(split, clip_id, os.path.join(data_root, *clip_id.split("/")) + ext))
  return tasks


def list_tasks(input_glob: Optional[str] = None, filelist=None, data_root: Optional[str] = None,
               split: Optional[str] = None) -> list[ClipTask]:
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
    filelist = [os.path.join(data_root, f"{name}.txt") for name in LRS2_FILELISTS
                if os.path.isfile(os.path.join(data_root, f"{name}.txt"))]
    if not filelist:
      raise ValueError(f"no filelist: {data_root} has none of {[n + '.txt' for n in LRS2_FILELISTS]}; "
                       "pass --filelist or --input")
  tasks = []
  for name in filelist:
    if not os.path.isfile(name):
      raise ValueError(f"filelist {name!r} not found")
    tasks.extend(tasks_from_filelist(name, data_root))
  return tasks


def _dedupe(tasks: list[ClipTask]) -> tuple[list[ClipTask], list[dict]]:
  seen, unique, duplicates = set(), [], []
  for task in tasks:
    key = (task.split, task.clip_id)
    if key in seen:
      duplicates.append(dict(status="skipped", clip_id=task.clip_id, split=task.split, source=task.path,
                             reason="duplicate", detail="clip_id listed twice in this split"))
      continue
    seen.add(key)
    unique.append(task)
  return unique, duplicates


# ---------------------------------------------------------------------------------------------------------
# The Beam pipeline.
# ---------------------------------------------------------------------------------------------------------


class _Progress:
  """Clips done / total with rate, per process (tqdm on a terminal, throttled log lines otherwise)."""

  def __init__(self, total: int, every_s: float = 10.0):
    self.total, self.every_s = total, every_s
    self.done, self.start, self.last_log = 0, time.time(), 0.0
    self.bar = None
    if sys.stderr.isatty():
      from tqdm import tqdm
      self.bar = tqdm(total=total, desc=f"preprocess (pid {os.getpid()})", unit="clip")

  def step(self, status: str):
    self.done += 1
    if self.bar is not None:
      self.bar.update(1)
      return
    now = time.time()
    if now - self.last_log >= self.every_s or self.done == self.total:
      self.last_log = now
      rate = self.done / max(now - self.start, 1e-9)
      LOG.info("preprocess: %d of %d clips done in this worker (pid %d), %.2f clips/s, last %s",
               self.done, self.total, os.getpid(), rate, status)


class ProcessClipFn(beam.DoFn):
  """ClipTask -> tagged outputs: 'records_<split>' (serialised example) and 'report' (one JSON line)."""

  def __init__(self, config: PreprocessConfig, total: int):
    super().__init__()
    self.config, self.total = config, total

  def setup(self):
    self.detector = self.config.make_detector()
    self.progress = _Progress(self.total)
    self.written = Metrics.counter(COUNTER_NAMESPACE, "clips_written")
    self.frames = Metrics.counter(COUNTER_NAMESPACE, "frames_written")
    self.millis = Metrics.distribution(COUNTER_NAMESPACE, "ms_per_clip")

  def process(self, element: tuple):
    task = ClipTask(*element)
    start = time.time()
    record, report = process_to_record(task, self.config, self.detector)
    self.millis.update(int(1000 * (time.time() - start)))
    if record is not None:
      self.written.inc()
      self.frames.inc(report["num_frames"])
      yield beam.pvalue.TaggedOutput(f"records_{task.split}", record)
      status = "written"
    else:
      Metrics.counter(COUNTER_NAMESPACE, f"skipped_{report['reason']}").inc()
      status = f"skipped ({report['reason']})"
    self.progress.step(f"{task.clip_id}: {status}")
    yield beam.pvalue.TaggedOutput(_REPORT_TAG, json.dumps(report, sort_keys=True))


def build_pipeline(pipeline, tasks: Sequence[ClipTask], staging_dir: str, config: PreprocessConfig,
                   shards_per_split: dict[str, int]):
  """Adds the preprocessing transforms to `pipeline` (records to staging_dir/{split}-*.tfrecord)."""

  splits = sorted(shards_per_split)
  tags = [f"records_{s}" for s in splits] + [_REPORT_TAG]
  outputs = (pipeline
             | "ListClips" >> beam.Create([dataclasses.astuple(t) for t in tasks])
             | "SpreadClips" >> beam.Reshuffle()
             | "ProcessClip" >> beam.ParDo(ProcessClipFn(config, len(tasks))).with_outputs(*tags))
  for split in splits:
    _ = (outputs[f"records_{split}"]
         | f"Write_{split}" >> beam.io.WriteToTFRecord(
             FileSystems.join(staging_dir, split), file_name_suffix=".tfrecord",
             num_shards=shards_per_split[split], shard_name_template="-SSSSS-of-NNNNN"))
  _ = (outputs[_REPORT_TAG]
       | "WriteReport" >> beam.io.WriteToText(FileSystems.join(staging_dir, "report"),
                                              file_name_suffix=".jsonl"))
  return outputs


def _pipeline_options(runner: str, pipeline_args: Sequence[str], direct_num_workers: int,
                      direct_running_mode: str):
  kwargs = dict(runner=runner)
  if runner in ("DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner"):
    kwargs.update(direct_num_workers=direct_num_workers, direct_running_mode=direct_running_mode)
  return PipelineOptions(list(pipeline_args or []), **kwargs)


# ---------------------------------------------------------------------------------------------------------
# The output directory: compatibility check, commit, dataset_info.json.
# ---------------------------------------------------------------------------------------------------------


def _fs():
  return FileSystems


def _exists(path: str) -> bool:
  return _fs().exists(path)


def _read_text(path: str) -> str:
  with _fs().open(path) as f:
    return f.read().decode()


def _write_text_atomically(path: str, text: str) -> None:
  """Local: temp file + os.replace. Object stores (gs://, s3://): one object write (atomic there)."""
  if "://" not in path:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    return
  with _fs().create(path) as f:
    f.write(text.encode())


def _list_shards(directory: str) -> list[str]:
  """Names (not paths) of the shard files in `directory` that follow records.SHARD_PATTERN."""
  pattern = _fs().join(directory, "*.tfrecord")
  names = [os.path.basename(m.path) for r in _fs().match([pattern]) for m in r.metadata_list]
  return sorted(n for n in names if records.SHARD_PATTERN.match(n))


def read_dataset_info(out_dir: str) -> Optional[dict]:
  path = _fs().join(out_dir, INFO_FILE)
  if not _exists(path):
    return None
  return json.loads(_read_text(path))


_COMPAT_KEYS = ("img_size", "frame_format", "fps", "audio")


def _settings(config: PreprocessConfig) -> dict:
  return dict(img_size=config.img_size, frame_format=config.frame_format, fps=float(windows.FPS),
              audio=audio.AUDIO_HPARAMS.as_dict())


def _check_compatible(previous: Optional[dict], config: PreprocessConfig, out_dir: str, overwrite: bool):
  if previous is None or overwrite:
    return
  ours = json.loads(json.dumps(_settings(config)))
  diffs = [k for k in _COMPAT_KEYS if previous.get(k) != ours[k]]
  if diffs:
    raise ValueError(
        f"{out_dir} already holds a dataset made with different {diffs} "
        f"({ {k: previous.get(k) for k in diffs} } vs { {k: ours[k] for k in diffs} }); "
        "write to another --out, or pass --overwrite to replace it")


def _commit(staging_dir: str, out_dir: str, written_splits: Sequence[str], new_shards: list[str],
            overwrite: bool) -> list[str]:
  """Moves the new shards into out_dir, deletes stale shards of the rewritten splits; returns deleted."""
  fs = _fs()
  sources = [fs.join(staging_dir, name) for name in new_shards]
  targets = [fs.join(out_dir, name) for name in new_shards]
  if sources:
    fs.rename(sources, targets)  # local: os.rename, replaces same-named old shards
  new = set(new_shards)
  stale = [n for n in _list_shards(out_dir) if n not in new and (
      overwrite or records.SHARD_PATTERN.match(n).group("split") in written_splits)]
  if stale:
    fs.delete([fs.join(out_dir, n) for n in stale])
  return stale


def _remove_tree(path: str) -> None:
  """Deletes a staging folder (best effort: a leftover is harmless and reported by the next run)."""
  try:
    if "://" not in path:
      shutil.rmtree(path, ignore_errors=True)
      return
    fs = _fs()
    files = [m.path for r in fs.match([fs.join(path, "**")]) for m in r.metadata_list]
    if files:
      fs.delete(files)
  except Exception as e:  # noqa: BLE001 - cleanup must not hide the run's own result or error
    LOG.warning("could not remove the staging folder %s: %s", path, e)


def _read_reports(staging_dir: str) -> list[dict]:
  fs = _fs()
  reports = []
  for result in fs.match([fs.join(staging_dir, "report*.jsonl")]):
    for meta in result.metadata_list:
      reports.extend(json.loads(line) for line in _read_text(meta.path).splitlines() if line.strip())
  return reports


def _build_info(config: PreprocessConfig, reports: list[dict], shards_per_split: dict[str, int],
                previous: Optional[dict], overwrite: bool, run_meta: dict) -> dict:
  splits = {}
  for split, count in sorted(shards_per_split.items()):
    written = [r for r in reports if r["split"] == split and r["status"] == "written"]
    splits[split] = dict(
        num_clips=len(written), num_frames=int(sum(r["num_frames"] for r in written)),
        num_skipped=sum(r["split"] == split and r["status"] == "skipped" for r in reports),
        num_shards=count, shards=[records.shard_name(split, i, count) for i in range(count)])
  skipped = sorted((r for r in reports if r["status"] == "skipped"), key=lambda r: (r["split"], r["clip_id"]))
  carried = {}
  if previous is not None and not overwrite:  # splits this run did not touch keep their entries
    carried = {s: v for s, v in previous.get("splits", {}).items() if s not in splits}
    splits.update(carried)
    skipped += [r for r in previous.get("skipped", []) if r.get("split") in carried]
  by_reason = {}
  for r in skipped:
    by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
  info = dict(
      format_version=INFO_FORMAT_VERSION,
      created_by="data_pipelines.preprocess",
      **_settings(config),
      mel_steps_per_second=windows.MEL_STEPS_PER_SECOND,
      num_mels=windows.NUM_MELS,
      jpeg_quality=config.jpeg_quality if config.frame_format == "jpeg" else None,
      preprocess=config.as_dict(),
      splits=dict(sorted(splits.items())),
      num_clips=sum(s["num_clips"] for s in splits.values()),
      num_skipped=len(skipped),
      skipped_by_reason=dict(sorted(by_reason.items())),
      skipped=[{k: r.get(k) for k in ("split", "clip_id", "source", "reason", "detail")} for r in skipped],
      carried_over_splits=sorted(carried),
      last_run=run_meta,
  )
  return info


# ---------------------------------------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------------------------------------


def run(out_dir: str, input_glob: Optional[str] = None, filelist=None, data_root: Optional[str] = None,
        img_size: int = 96, detector: str = "haar", runner: str = "DirectRunner", *,
        split: Optional[str] = None, detector_kwargs: Optional[dict] = None,
        pads: Sequence[int] = face_detection.DEFAULT_PADS,
        smooth_window: int = face_detection.DEFAULT_SMOOTH_WINDOW, frame_format: str = "jpeg",
        jpeg_quality: int = 95, fps_policy: str = "resample", min_frames: int = windows.MEL_STEPS,
        max_no_face_fraction: float = 0.25, detect_every: int = 1, num_shards: int = 0,
        clips_per_shard: int = 128,
        limit: int = 0, overwrite: bool = False, direct_num_workers: int = 0,
        direct_running_mode: str = "multi_processing", pipeline_args: Sequence[str] = ()) -> dict:
  """Preprocesses videos into TFRecord shards + dataset_info.json in `out_dir`; returns the info dict.

  Input: `input_glob` ('DIR/**/*.mp4'; `split` or the path gives the split), or `filelist` (one path or a
  list; split = file stem) with `data_root`, or `data_root` alone (its train/val/test.txt).
  `detector_kwargs` e.g. {'box': (x1, y1, x2, y2)} for detector='fixed'. `num_shards` per split (0: one
  shard per `clips_per_shard` clips). `limit` > 0 processes only the first `limit` clips (quick tries).
  `direct_num_workers` 0 = the cores this process may use. `pipeline_args` go to Beam's PipelineOptions
  unchanged.
  """
  config = PreprocessConfig(
      img_size=int(img_size), detector=detector,
      detector_kwargs=tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                   for k, v in (detector_kwargs or {}).items())),
      pads=tuple(int(p) for p in pads), smooth_window=int(smooth_window), frame_format=frame_format,
      jpeg_quality=int(jpeg_quality), fps_policy=fps_policy, min_frames=int(min_frames),
      max_no_face_fraction=float(max_no_face_fraction), detect_every=int(detect_every))
  config.make_detector()  # fail fast on a bad detector / missing box, before listing or starting Beam

  tasks, duplicates = _dedupe(list_tasks(input_glob, filelist, data_root, split))
  if limit:
    tasks = tasks[:int(limit)]
  if not tasks:
    raise ValueError(f"no input videos found (input={input_glob!r}, filelist={filelist!r}, "
                     f"data_root={data_root!r})")
  fs = _fs()
  if "://" not in out_dir:
    os.makedirs(out_dir, exist_ok=True)
  previous = read_dataset_info(out_dir)
  _check_compatible(previous, config, out_dir, overwrite)
  leftovers = [m.path for r in fs.match([fs.join(out_dir, _STAGING_PREFIX + "*")]) for m in r.metadata_list]
  if leftovers:
    LOG.warning("found staging folders of earlier unfinished runs in %s (safe to delete if no other run "
                "is writing there): %s", out_dir, leftovers)

  per_split = {}
  for task in tasks:
    per_split[task.split] = per_split.get(task.split, 0) + 1
  shards_per_split = {s: int(num_shards) if num_shards else max(1, math.ceil(n / clips_per_shard))
                      for s, n in per_split.items()}
  workers = int(direct_num_workers) or _usable_cores()
  LOG.info("preprocess: %d clips %s -> %s (runner %s%s)", len(tasks), per_split, out_dir, runner,
           f", {workers} {direct_running_mode} workers" if runner == "DirectRunner" else "")

  staging_dir = fs.join(out_dir, f"{_STAGING_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}")
  start = time.time()
  try:
    options = _pipeline_options(runner, pipeline_args, workers, direct_running_mode)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, tasks, staging_dir, config, shards_per_split)
    result = pipeline.run()
    state = result.wait_until_finish()
    if state not in (None, beam.runners.runner.PipelineState.DONE):
      raise RuntimeError(f"the Beam pipeline ended in state {state}; {out_dir} was left unchanged")
    elapsed = time.time() - start
    reports = _read_reports(staging_dir) + duplicates
    new_shards = sorted(records.shard_name(s, i, n) for s, n in shards_per_split.items() for i in range(n))
    missing = [n for n in new_shards if not _exists(fs.join(staging_dir, n))]
    if missing:
      raise RuntimeError(f"the pipeline finished but did not write {missing}; {out_dir} was left unchanged")
    num_workers = workers if runner == "DirectRunner" else None
    run_meta = dict(runner=runner, num_inputs=len(tasks), seconds=round(elapsed, 2),
                    counters=_counters(result),
                    clips_per_second=round(len(tasks) / elapsed, 3), direct_num_workers=num_workers,
                    direct_running_mode=direct_running_mode if num_workers else None,
                    finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    info = _build_info(config, reports, shards_per_split, previous, overwrite, run_meta)
    stale = _commit(staging_dir, out_dir, sorted(shards_per_split), new_shards, overwrite)
    if stale:
      LOG.info("preprocess: removed %d shards of an earlier run: %s", len(stale), stale)
    _write_text_atomically(fs.join(out_dir, INFO_FILE), json.dumps(info, indent=1) + "\n")
  finally:
    _remove_tree(staging_dir)
  LOG.info("preprocess: %d clips written, %d skipped %s in %.1f s (%.2f clips/s%s)", info["num_clips"],
           info["num_skipped"], info["skipped_by_reason"], elapsed, len(tasks) / elapsed,
           f", {len(tasks) / elapsed / workers:.2f} per worker" if num_workers else "")
  return info


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0)) or 1
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def _counters(result) -> dict:
  """The 'preprocess' Beam counters of a finished pipeline (empty where the runner does not report them)."""
  try:
    found = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))["counters"]
  except Exception:  # noqa: BLE001 - metrics are informative only; some runners do not support queries
    return {}
  out = {}
  for counter in found:
    value = counter.committed if counter.committed is not None else counter.attempted
    out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
  return dict(sorted(out.items()))


def _parse_box(text: str) -> tuple:
  values = [int(v) for v in text.replace(",", " ").split()]
  if len(values) != 4:
    raise argparse.ArgumentTypeError(f"--fixed_box needs 4 integers x1,y1,x2,y2, got {text!r}")
  return tuple(values)


def main(argv: Optional[Sequence[str]] = None) -> dict:
  parser = argparse.ArgumentParser(
      prog="python -m data_pipelines.preprocess", description=__doc__.split("\n\n")[0],
      epilog="Unrecognised flags (e.g. --project, --region, --temp_location) go to Apache Beam.")
  src = parser.add_argument_group("input (one of)")
  src.add_argument("--input", help="glob of videos, e.g. 'DIR/**/*.mp4' (quote it)")
  src.add_argument("--filelist", nargs="+", help="LRS2-style filelist(s); split = file stem")
  src.add_argument("--data_root", help="root the filelist lines are relative to (alone: uses its "
                                       "train/val/test.txt)")
  src.add_argument("--split", help="split for --input (default: from the path, else train)")
  parser.add_argument("--out", required=True, help="output directory for shards and dataset_info.json")
  parser.add_argument("--img_size", type=int, default=96)
  parser.add_argument("--detector", default="haar", choices=sorted(face_detection.DETECTORS))
  parser.add_argument("--fixed_box", type=_parse_box, help="x1,y1,x2,y2 for --detector fixed")
  parser.add_argument("--pads", type=int, nargs=4, default=list(face_detection.DEFAULT_PADS),
                      metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
  parser.add_argument("--smooth_window", type=int, default=face_detection.DEFAULT_SMOOTH_WINDOW,
                      help="boxes averaged over this many frames (1 = off)")
  parser.add_argument("--frame_format", default="jpeg", choices=records.FRAME_FORMATS)
  parser.add_argument("--jpeg_quality", type=int, default=95)
  parser.add_argument("--fps_policy", default="resample", choices=("resample", "reject"))
  parser.add_argument("--min_frames", type=int, default=windows.MEL_STEPS)
  parser.add_argument("--max_no_face_fraction", type=float, default=0.25)
  parser.add_argument("--detect_every", type=int, default=1,
                      help="run the detector on every k-th frame only (faster; boxes are smoothed anyway)")
  parser.add_argument("--num_shards", type=int, default=0, help="shards per split (0: from clips_per_shard)")
  parser.add_argument("--clips_per_shard", type=int, default=128)
  parser.add_argument("--limit", type=int, default=0, help="process only the first N clips")
  parser.add_argument("--overwrite", action="store_true", help="replace a dataset with other settings")
  parser.add_argument("--runner", default="DirectRunner")
  parser.add_argument("--direct_num_workers", type=int, default=0, help="DirectRunner workers (0: cores)")
  parser.add_argument("--direct_running_mode", default="multi_processing",
                      choices=("in_memory", "multi_threading", "multi_processing"))
  args, beam_args = parser.parse_known_args(argv)
  detector_kwargs = {}
  if args.detector == "fixed":
    if args.fixed_box is None:
      parser.error("--detector fixed needs --fixed_box x1,y1,x2,y2")
    detector_kwargs["box"] = args.fixed_box
  info = run(args.out, input_glob=args.input, filelist=args.filelist, data_root=args.data_root,
             img_size=args.img_size, detector=args.detector, runner=args.runner, split=args.split,
             detector_kwargs=detector_kwargs, pads=args.pads, smooth_window=args.smooth_window,
             frame_format=args.frame_format, jpeg_quality=args.jpeg_quality, fps_policy=args.fps_policy,
             min_frames=args.min_frames, max_no_face_fraction=args.max_no_face_fraction,
             detect_every=args.detect_every,
             num_shards=args.num_shards, clips_per_shard=args.clips_per_shard, limit=args.limit,
             overwrite=args.overwrite, direct_num_workers=args.direct_num_workers,
             direct_running_mode=args.direct_running_mode, pipeline_args=beam_args)
  summary = {k: info[k] for k in ("num_clips", "num_skipped", "skipped_by_reason", "last_run")}
  summary["splits"] = {s: v["num_clips"] for s, v in info["splits"].items()}
  print(json.dumps(summary, indent=1))
  return info


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
  logging.getLogger("apache_beam").setLevel(logging.WARNING)  # keep Beam's per-worker chatter out
  # Run through the importable module so Beam workers (other processes) resolve its classes by name.
  from data_pipelines import preprocess as _module
  _module.main()
