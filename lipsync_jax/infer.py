"""Lip-sync a video (or a still image) to an audio track with a Wav2Lip generator.

Owns the inference pipeline of spec section 8 and its CLI:

  python -m lipsync_jax.infer --face FACE --audio AUDIO --checkpoint CKPT --out OUT.mp4 [options]

FACE: a video or a still image (.jpg/.png/...). AUDIO: wav, mp3 or any container with an audio track.
CKPT: an official `.pth` (converted on the fly by `lipsync_jax.convert`), a lipsync_jax variables directory
(`lipsync_jax_meta.json`), or a training workdir (its latest generator). Programmatic API:
`lipsync(face, audio, variables, out, meta=None, **options) -> stats dict`.

Pipeline, streamed in chunks so memory stays flat for long videos:
  decode (background thread) -> resize_factor / rotate / crop -> face detection per chunk of 32 frames
  -> boxes: pad + clip, frames without a face get the nearest detected box among the frames detected so
     far (the last detection before the gap and the detections up to the end of the current chunk; or
     they are passed through unchanged with --no_face passthrough), smoothed over the original's forward
     5-frame window (`face_detection.smooth_boxes`; a frame's box is final once the 5 frames after it are
     detected, so chunk borders give exactly the whole-video result when gaps are short). A video whose
     first 250 frames have no face passes those through; no face in the whole video is an error.
  -> crop, resize to the model's img_size -> [masked | reference] -> jitted generator with ONE fixed batch
     shape (the last batch is padded; nothing recompiles) -> resize back, paste -> H.264 encode (background
     thread) -> AAC mux of the input audio at close.
Output frame i uses mel chunk i (start int(i * 80 / fps), 16 steps; the last 16 steps once past the end)
and video frame i % n (a video shorter than the audio loops; later loops reuse the stored boxes). The output
has as many frames as mel chunks, at the input's (processed) resolution and fps.

BatchNorm folding: when `lipsync_jax.models.fold_batch_norm` exists, the generator runs with BN folded into
the convolutions (identical function, fewer ops); otherwise with plain BN (noted in the stats).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Iterator, Optional, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import windows

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CHECKPOINT_FILE_EXTENSIONS = (".pth", ".pt", ".tar", ".ckpt")
_WORKDIR_WHICH = {"wav2lip": "generator", "syncnet": "expert", "disc": "disc"}
NO_FACE_POLICIES = ("carry", "passthrough")
DETECT_CHUNK = 32  # frames detected at once; boxes are final 5 frames later (smoothing look-ahead)
DECODE_PREFETCH = 16  # decoded frames buffered ahead by the decode thread
ENCODE_QUEUE = 32  # frames buffered for the encode thread

log = logging.getLogger(__name__)


class InferenceError(ValueError):
  """Bad input to inference (missing/unreadable file, no face anywhere, audio too short, bad option)."""


# ----------------------------------------------------------------------------------------------------------
# Checkpoints.
# ----------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str, kind: str = "wav2lip") -> tuple[dict, dict]:
  """(variables, meta) from an official .pth, a lipsync_jax variables dir or a training workdir."""
  from lipsync_jax import convert
  path = os.fspath(path)
  if not os.path.exists(path):
    raise InferenceError(f"checkpoint {path!r} does not exist; pass an official .pth, a lipsync_jax "
                         "variables directory or a training workdir")
  if os.path.isfile(path):
    variables = convert.load_torch_checkpoint(path, kind)
    meta = {"kind": kind, "width_multiplier": convert.infer_width_from_variables(kind, variables),
            "img_size": convert.DEFAULT_IMG_SIZE, "source": path}
  elif os.path.isfile(os.path.join(path, convert.META_FILE)):
    variables, meta = convert.load_variables(path)
    if meta.get("kind", kind) != kind:
      raise InferenceError(f"{path} holds a {meta.get('kind')!r} model; a {kind!r} model is needed here")
  else:
    from lipsync_jax.training import checkpointing
    variables, meta = checkpointing.load_model_variables(path, _WORKDIR_WHICH[kind])
  meta = dict(meta)
  if "width_multiplier" not in meta:
    meta["width_multiplier"] = convert.infer_width_from_variables(kind, variables)
  meta.setdefault("img_size", convert.DEFAULT_IMG_SIZE)
  return variables, meta


# ----------------------------------------------------------------------------------------------------------
# Mel chunks.
# ----------------------------------------------------------------------------------------------------------
def mel_chunk_starts(num_mel_steps: int, fps: float) -> list[int]:
  """Start step of every output frame's 16-step mel chunk (the original's loop, spec section 8)."""
  if num_mel_steps < windows.MEL_STEPS:
    raise InferenceError(f"audio too short: {num_mel_steps} mel steps, need {windows.MEL_STEPS} (0.2 s)")
  starts, i = [], 0
  while True:
    start = windows.mel_window_start(i, fps)
    if start + windows.MEL_STEPS > num_mel_steps:
      starts.append(num_mel_steps - windows.MEL_STEPS)
      return starts
    starts.append(start)
    i += 1


# ----------------------------------------------------------------------------------------------------------
# Timing + background threads.
# ----------------------------------------------------------------------------------------------------------
class StageTimer:
  """Accumulated busy seconds per stage (each stage timed in the thread that runs it)."""

  def __init__(self):
    self.seconds = collections.defaultdict(float)
    self._lock = threading.Lock()

  @contextlib.contextmanager
  def __call__(self, stage: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      with self._lock:
        self.seconds[stage] += time.perf_counter() - start


_DONE = object()


def _background(iterator_fn, maxsize: int, name: str):
  """Runs iterator_fn() in a daemon thread; yields its items (exceptions are re-raised here)."""
  items: queue.Queue = queue.Queue(maxsize=maxsize)
  stop = threading.Event()

  def run():
    try:
      for item in iterator_fn():
        while not stop.is_set():
          try:
            items.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      items.put(_DONE)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      items.put(e)

  thread = threading.Thread(target=run, name=name, daemon=True)
  thread.start()
  try:
    while True:
      item = items.get()
      if item is _DONE:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()


class _BackgroundWriter:
  """VideoWriter.write in a thread (encoding overlaps generation); errors surface on write/close."""

  def __init__(self, writer, timer: StageTimer, maxsize: int = ENCODE_QUEUE):
    self.writer, self.timer = writer, timer
    self.frames: queue.Queue = queue.Queue(maxsize=maxsize)
    self.error: Optional[BaseException] = None
    self.thread = threading.Thread(target=self._run, name="encode", daemon=True)
    self.thread.start()

  def _run(self):
    while True:
      frame = self.frames.get()
      if frame is _DONE:
        return
      if self.error is None:
        try:
          with self.timer("encode"):
            self.writer.write(frame)
        except BaseException as e:  # noqa: BLE001
          self.error = e

  def write(self, frame):
    if self.error is not None:
      raise self.error
    self.frames.put(frame)

  def finish(self):
    self.frames.put(_DONE)
    self.thread.join()
    if self.error is not None:
      raise self.error


# ----------------------------------------------------------------------------------------------------------
# Face frames and boxes.
# ----------------------------------------------------------------------------------------------------------
class FaceFrames:
  """The FACE input: a video or a still image, with the original's resize_factor / rotate / crop applied."""

  def __init__(self, path: str, static: bool = False, fps: float = 25.0, resize_factor: int = 1,
               rotate: bool = False, crop: Sequence[int] = (0, -1, 0, -1)):
    from lipsync_jax.media import video
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise InferenceError(f"--face {path!r} does not exist; pass a video or an image")
    self.path, self.resize_factor, self.rotate, self.crop = path, int(resize_factor), bool(rotate), crop
    if self.resize_factor < 1:
      raise InferenceError(f"--resize_factor must be >= 1, got {resize_factor}")
    self.is_image = path.lower().endswith(IMAGE_EXTENSIONS)
    self.static = static or self.is_image
    if self.is_image:
      image = cv2.imread(path, cv2.IMREAD_COLOR)
      if image is None:
        raise InferenceError(f"--face {path!r}: cannot read the image (corrupt or unsupported format)")
      self._image = self.process(image)
      self.fps = float(fps)
    else:
      info = video.probe(path)
      if not getattr(info, "has_video", True) or info.width == 0:
        raise InferenceError(f"--face {path!r} has no video stream")
      self.fps = float(info.fps) if info.fps > 0 else float(fps)
      self._image = None
    first = self._image if self._image is not None else next(iter(self._decode()), None)
    if first is None:
      raise InferenceError(f"--face {path!r}: no decodable frame")
    self.height, self.width = first.shape[:2]

  def process(self, frame: np.ndarray) -> np.ndarray:
    if self.resize_factor > 1:
      frame = cv2.resize(frame, (frame.shape[1] // self.resize_factor, frame.shape[0] // self.resize_factor))
    if self.rotate:
      frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
    y1, y2, x1, x2 = (int(v) for v in self.crop)
    y2 = frame.shape[0] if y2 == -1 else y2
    x2 = frame.shape[1] if x2 == -1 else x2
    frame = frame[y1:y2, x1:x2]
    if frame.size == 0:
      raise InferenceError(f"--crop {tuple(self.crop)} leaves an empty frame")
    return np.ascontiguousarray(frame)

  def _decode(self) -> Iterator[np.ndarray]:
    from lipsync_jax.media import video
    for frame in video.iter_frames(self.path):
      yield self.process(frame)
      if self.static:
        return

  def frames(self, timer: Optional[StageTimer] = None) -> Iterator[np.ndarray]:
    """One pass over the (processed) frames; decoding is timed as 'decode'."""
    if self._image is not None:
      yield self._image.copy()
      return
    iterator = self._decode()
    while True:
      if timer is not None:
        with timer("decode"):
          frame = next(iterator, None)
      else:
        frame = next(iterator, None)
      if frame is None:
        return
      yield frame


class BoxTracker:
  """Raw detections -> final boxes, incrementally (bounded look-ahead; see the module docstring).

  add(raw boxes of the next frames), then finalize(end_of_stream) returns the boxes (x1,y1,x2,y2) or None
  (= pass the frame through) of the frames that became final, in order.
  """

  def __init__(self, pads, width: int, height: int, smooth: bool = True, no_face: str = "carry",
               window: int = 5, max_wait: int = 250):
    if no_face not in NO_FACE_POLICIES:
      raise InferenceError(f"--no_face must be one of {NO_FACE_POLICIES}, got {no_face!r}")
    self.pads, self.width, self.height = tuple(int(p) for p in pads), width, height
    self.window = int(window) if smooth else 1
    self.no_face, self.max_wait = no_face, int(max_wait)
    self.padded: list = []
    self.num_final = 0
    self.last_box = None
    self.frames_without_face = 0
    self.passthrough_frames = 0
    self.frames_with_face = 0

  def add(self, raw_boxes):
    from lipsync_jax.media import detectors as face_detection
    for box in raw_boxes:
      if box is None:
        self.padded.append(None)
      else:
        self.frames_with_face += 1
        self.padded.append(face_detection.pad_and_clip(box, self.pads, self.width, self.height))

  def finalize(self, end: bool) -> list:
    from lipsync_jax.media import detectors as face_detection
    known, start = len(self.padded), self.num_final
    stop = known if end else known - max(self.window, 1)
    if stop <= start:
      return []
    lo = max(0, min(start, known - self.window))
    # Reach back to the last detection before the context, so 'nearest' sees true distances.
    back, floor = lo - 1, max(0, lo - self.max_wait)
    while back >= floor and self.padded[back] is None:
      back -= 1
    if back >= floor:
      lo = back
    context = self.padded[lo:known]
    if all(b is None for b in context):
      if self.last_box is None:
        if not end and known - start < self.max_wait:
          return []  # wait for a first face a little longer
        result = [None] * (stop - start)
        self.frames_without_face += stop - start
        self.passthrough_frames += stop - start
        self.num_final = stop
        return result
      filled = np.tile(np.asarray(self.last_box, np.int64), (len(context), 1))
    else:
      filled, _ = face_detection.fill_missing(context)
    smoothed = face_detection.smooth_boxes(filled, self.window) if self.window > 1 else filled
    result = []
    for i in range(start, stop):
      missing = self.padded[i] is None
      self.frames_without_face += missing
      if missing and self.no_face == "passthrough":
        self.passthrough_frames += 1
        result.append(None)
      else:
        result.append(tuple(int(v) for v in smoothed[i - lo]))
    self.last_box = tuple(int(v) for v in filled[stop - 1 - lo])
    self.num_final = stop
    return result


def _fixed_box(box, width, height):
  """The original's --box (top, bottom, left, right) -> (x1, y1, x2, y2) clipped to the frame."""
  y1, y2, x1, x2 = (int(v) for v in box)
  x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
  if x2 <= x1 or y2 <= y1:
    raise InferenceError(f"--box {tuple(box)} (top bottom left right) is empty inside a {width}x{height} "
                         "frame")
  return (x1, y1, x2, y2)


# ----------------------------------------------------------------------------------------------------------
# The generator.
# ----------------------------------------------------------------------------------------------------------
class GeneratorRunner:
  """Jitted Wav2Lip forward on uint8 face crops with ONE fixed batch shape.

  `run(mels (k,80,16), crops (k,S,S,3) uint8 BGR) -> (k,S,S,3) uint8`, k <= batch_size (padded inside).
  `trace_count` counts traces of the jitted function (1 after any number of batches).
  """

  def __init__(self, variables, meta: dict, batch_size: int, compute_dtype=jnp.float32, fold_bn: bool = True):
    from lipsync_jax import models
    self.batch_size = int(batch_size)
    self.img_size = int(meta.get("img_size", 96))
    fold = getattr(models, "fold_batch_norm", None) if fold_bn else None
    self.bn_folded = fold is not None
    if fold is not None:
      variables = fold("wav2lip", variables)
    self.model = models.Wav2Lip(width_multiplier=float(meta.get("width_multiplier", 1.0)),
                                compute_dtype=compute_dtype, fold_bn=self.bn_folded)
    self.variables = jax.device_put(variables)
    self.trace_count = 0
    # Compiled ahead of time for the one batch shape: a call with any other shape fails instead of
    # silently recompiling.
    shapes = (jax.ShapeDtypeStruct((self.batch_size, windows.NUM_MELS, windows.MEL_STEPS), jnp.float32),
              jax.ShapeDtypeStruct((self.batch_size, self.img_size, self.img_size, 3), jnp.uint8))
    self._forward = jax.jit(self._apply).lower(self.variables, *shapes).compile()

  def _apply(self, variables, mels, crops):
    self.trace_count += 1  # runs only while tracing
    faces = crops.astype(jnp.float32) / 255.0
    inputs = jnp.concatenate([windows.mask_lower_half(faces), faces], axis=-1)
    out = self.model.apply(variables, mels[..., None], inputs, train=False)
    return (jnp.clip(out.astype(jnp.float32), 0.0, 1.0) * 255.0).astype(jnp.uint8)

  def run(self, mels: np.ndarray, crops: np.ndarray) -> np.ndarray:
    k = len(crops)
    if k == 0:
      return np.zeros((0, self.img_size, self.img_size, 3), np.uint8)
    if k > self.batch_size:
      raise ValueError(f"batch of {k} > batch_size {self.batch_size}")
    if k < self.batch_size:
      mels = np.concatenate([mels, np.repeat(mels[-1:], self.batch_size - k, 0)])
      crops = np.concatenate([crops, np.repeat(crops[-1:], self.batch_size - k, 0)])
    out = self._forward(self.variables, jnp.asarray(mels, jnp.float32), jnp.asarray(crops, jnp.uint8))
    return np.asarray(out)[:k]


# ----------------------------------------------------------------------------------------------------------
# The pipeline.
# ----------------------------------------------------------------------------------------------------------
def _first_pass(source: FaceFrames, detector, tracker: Optional[BoxTracker], fixed_box, chunk: int,
                timer: StageTimer, stored_boxes: list) -> Iterator[tuple[np.ndarray, Any]]:
  """Yields (frame, box) for each source frame once; detection per chunk; boxes recorded in stored_boxes."""
  frames = _background(lambda: source.frames(timer), maxsize=DECODE_PREFETCH, name="decode")
  pending: collections.deque = collections.deque()
  batch: list = []

  def release(boxes):
    for box in boxes:
      stored_boxes.append(box)
      yield pending.popleft(), box

  def detect(batch):
    with timer("detect"):
      raw = detector.detect(batch)
    tracker.add(raw)
    pending.extend(batch)
    return tracker.finalize(end=False)

  for frame in frames:
    if fixed_box is not None:
      stored_boxes.append(fixed_box)
      yield frame, fixed_box
      continue
    batch.append(frame)
    if len(batch) == chunk:
      yield from release(detect(batch))
      batch = []
  if fixed_box is None:
    if batch:
      yield from release(detect(batch))
    yield from release(tracker.finalize(end=True))


def lipsync(face: str, audio: str, variables, out: str, meta: Optional[dict] = None, *,
            pads: Sequence[int] = (0, 10, 0, 0), nosmooth: bool = False,
            box: Sequence[int] = (-1, -1, -1, -1),
            resize_factor: int = 1, crop: Sequence[int] = (0, -1, 0, -1), rotate: bool = False,
            static: bool = False, fps: float = 25.0, batch_size: int = 128, detector: str = "haar",
            no_face: str = "carry", progress: bool = True, compute_dtype=jnp.float32, fold_bn: bool = True,
            cache_bytes: int = 512 << 20, runner: Optional[GeneratorRunner] = None) -> dict:
  """Lip-syncs FACE (video/image) to AUDIO with generator `variables`; writes `out` (mp4). Returns stats.

  Options are the original inference.py's (see the CLI help). `runner` reuses a compiled generator.
  """
  from tqdm import tqdm

  from lipsync_jax.media import audio as audio_lib
  from lipsync_jax.media import detectors as face_detection, video
  meta = dict(meta or {})
  timer = StageTimer()
  wall_start = time.perf_counter()
  if not os.path.isfile(os.fspath(audio)):
    raise InferenceError(f"--audio {audio!r} does not exist; pass a wav/mp3 or any file with an audio track")
  source = FaceFrames(face, static=static, fps=fps, resize_factor=resize_factor, rotate=rotate, crop=crop)
  with timer("audio"):
    wav = video.read_audio(audio, sr=16000)
    mel = audio_lib.melspectrogram(wav)
  starts = mel_chunk_starts(mel.shape[1], source.fps)
  num_out = len(starts)
  if runner is None:
    with timer("compile"):
      runner = GeneratorRunner(variables, meta, min(int(batch_size), num_out), compute_dtype, fold_bn)
  img_size = runner.img_size
  fixed = _fixed_box(box, source.width, source.height) if box is not None and box[0] != -1 else None
  det = None
  if fixed is None:  # a registry name, or a FaceDetector instance
    det = face_detection.get_detector(detector) if isinstance(detector, str) else detector
  tracker = None if fixed is not None else BoxTracker(pads, source.width, source.height,
                                                        smooth=not nosmooth, no_face=no_face)
  stored_boxes: list = []
  cache: Optional[list] = []
  frame_bytes = source.width * source.height * 3

  def looped_frames():
    """(frame, box) for output frames 0, 1, ...: the first pass, then loops over the stored boxes."""
    nonlocal cache
    for frame, fbox in _first_pass(source, det, tracker, fixed, DETECT_CHUNK, timer, stored_boxes):
      if cache is not None:
        if (len(cache) + 1) * frame_bytes <= cache_bytes:
          cache.append(frame.copy())  # pristine: `frame` is pasted into in place
        else:
          cache = None
      yield frame, fbox
    if not stored_boxes:
      raise InferenceError(f"--face {face!r}: no frames decoded")
    while True:
      frames = iter(cache) if cache is not None else source.frames(timer)
      for frame, fbox in zip(frames, stored_boxes):
        yield (frame.copy() if cache is not None else frame), fbox

  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  batches = 0
  bar = tqdm(total=num_out, desc="lipsync", unit="frame", disable=not progress)
  with video.VideoWriter(out, source.fps, source.width, source.height) as writer:
    encoder = _BackgroundWriter(writer, timer)
    try:
      frames_iter = looped_frames()
      for batch_start in range(0, num_out, runner.batch_size):
        items = [next(frames_iter) for _ in range(min(runner.batch_size, num_out - batch_start))]
        todo = [j for j, (_, fbox) in enumerate(items) if fbox is not None]
        if todo:
          with timer("prep"):
            crops = np.stack([face_detection.crop_and_resize(items[j][0], items[j][1], img_size)
                              for j in todo])
            mels = np.stack([mel[:, starts[batch_start + j]:starts[batch_start + j] + windows.MEL_STEPS]
                             for j in todo])
          with timer("generator"):
            generated = runner.run(mels, crops)
          batches += 1
          with timer("paste"):
            for j, pred in zip(todo, generated):
              frame, (x1, y1, x2, y2) = items[j]
              frame[y1:y2, x1:x2] = cv2.resize(pred, (x2 - x1, y2 - y1))
        for frame, _ in items:
          encoder.write(frame)
        bar.update(len(items))
      frames_iter.close()
    finally:
      encoder.finish()
      bar.close()
    if tracker is not None and tracker.frames_with_face == 0:
      raise InferenceError(f"--face {face!r}: no face detected in any frame; pass --box top bottom left "
                           "right")
    with timer("mux"):
      writer.close(audio=wav, sample_rate=16000)
  wall = time.perf_counter() - wall_start
  return {
      "out": os.fspath(out), "frames": num_out, "fps": source.fps, "width": source.width,
      "height": source.height, "source_frames": len(stored_boxes), "batches": batches,
      "batch_size": runner.batch_size, "compiles": runner.trace_count, "bn_folded": runner.bn_folded,
      "frames_without_face": tracker.frames_without_face if tracker else 0,
      "passthrough_frames": tracker.passthrough_frames if tracker else 0,
      "timings_s": dict(timer.seconds), "wall_s": wall, "frames_per_s": num_out / wall,
  }


# ----------------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m lipsync_jax.infer",
                              description="Lip-sync a face video or image to an audio track (Wav2Lip).")
  p.add_argument("--face", required=True, help="video or image containing a face")
  p.add_argument("--audio", required=True, help="wav / mp3 / any file with an audio track")
  p.add_argument("--checkpoint", required=True,
                 help="official .pth, lipsync_jax variables dir, or training workdir (latest generator)")
  p.add_argument("--out", "--outfile", dest="out", default="results/result_voice.mp4")
  p.add_argument("--static", action="store_true", help="use only the first video frame")
  p.add_argument("--fps", type=float, default=25.0, help="frame rate for a still image input")
  sides = ("TOP", "BOTTOM", "LEFT", "RIGHT")
  p.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0], metavar=sides)
  p.add_argument("--batch_size", "--wav2lip_batch_size", dest="batch_size", type=int, default=128)
  p.add_argument("--resize_factor", type=int, default=1, help="downscale the video by this factor first")
  p.add_argument("--crop", type=int, nargs=4, default=[0, -1, 0, -1], metavar=sides,
                 help="crop the (resized) video; -1 = to the edge")
  p.add_argument("--box", type=int, nargs=4, default=[-1, -1, -1, -1], metavar=sides,
                 help="constant face box instead of detection")
  p.add_argument("--rotate", action="store_true", help="rotate frames 90 degrees clockwise")
  p.add_argument("--nosmooth", action="store_true", help="do not smooth boxes over 5 frames")
  p.add_argument("--detector", default="haar", help="face detector name (lipsync_jax.media.detectors)")
  p.add_argument("--no_face", choices=NO_FACE_POLICIES, default="carry",
                 help="frames without a detected face: carry the nearest box, or pass the frame through")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="generator compute dtype (params stay float32); bfloat16 is faster on GPU/TPU and on "
                      "CPUs with AMX/AVX512-BF16")
  p.add_argument("--no_progress", action="store_true")
  return p


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  try:
    for flag, path in (("--face", args.face), ("--audio", args.audio), ("--checkpoint", args.checkpoint)):
      if not os.path.exists(path):
        raise InferenceError(f"{flag} {path!r} does not exist")
    variables, meta = load_checkpoint(args.checkpoint, "wav2lip")
    stats = lipsync(args.face, args.audio, variables, args.out, meta, pads=args.pads, nosmooth=args.nosmooth,
                    box=args.box, resize_factor=args.resize_factor, crop=args.crop, rotate=args.rotate,
                    static=args.static, fps=args.fps, batch_size=args.batch_size, detector=args.detector,
                    no_face=args.no_face, progress=not args.no_progress,
                    compute_dtype=jnp.dtype(args.dtype))
  except (ValueError, OSError, NotImplementedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {stats['out']}: {stats['frames']} frames {stats['width']}x{stats['height']} @ "
        f"{stats['fps']:g} fps, {stats['frames_without_face']} frames without a detected face "
        f"({stats['passthrough_frames']} passed through), {stats['frames_per_s']:.1f} frames/s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
