"""Lip-sync a video (or a still image) to an audio track with a Wav2Lip generator: the pipeline and its API.

Owns `lipsync(face, audio, variables, out, meta=None, **options) -> stats dict` (the options are the
original inference.py's; `python -m lipsync_jax.infer` is its CLI), the mel chunk of every output frame
(`mel_chunk_starts`), `Generator` (the Wav2Lip forward on uint8 face crops, on the shared BatchRunner) and
`ExportedGenerator` (the same on a served jax.export artifact, lipsync_jax.inference.serving).
FACE, AUDIO and OUT may be remote (gs://...; lipsync_jax.fs): inputs are read from temporary local copies, the
output is encoded to a local file and moved (uploaded) to OUT only when the whole run succeeded.

Pipeline, streamed in chunks so memory stays flat for long videos:
  decode (background thread) -> resize_factor / rotate / crop -> face detection per chunk of 32 frames
  -> THE face track (lipsync_jax.media.track.FaceTrack: scene cuts, the face that continues the track; within
     each shot pad + clip, frames without a face get the nearest detected box among the frames detected so
     far, or are passed through with no_face='passthrough'; the original's forward 5-frame smoothing; a
     frame's box is final once the 5 frames after it are detected, so chunk borders give exactly the
     whole-video result when gaps are short). Frames of a shot without any face, and a video's first 250
     frames when they have none, pass through unchanged; no face in the whole video is an error.
  -> crop, resize to the model's img_size (track.crop_and_resize, as preprocessing) -> [masked | reference]
  -> the generator in batches of batch_size, the last one padded to the smallest of a few bucketed shapes
     (lipsync_jax.inference.runner.bucket_sizes: a run compiles at most two shapes, and jax's persistent
     compilation cache, turned on by the CLI through lipsync_jax.compile_cache, serves them to every later
     run whatever the clip's length) -> resize back, paste -> H.264 encode (background thread) -> AAC mux
     of the input audio at close.
Output frame i uses mel chunk i (start int(i * 80 / fps), 16 steps; the last 16 steps once past the end)
and video frame i % n (a video shorter than the audio loops; later loops reuse the stored boxes). The output
has as many frames as mel chunks, at the input's (processed) resolution and fps.

The generator runs with BatchNorm folded into the convolutions (`lipsync_jax.models.fold_batch_norm`, inside
its jitted program: the same function, fewer ops) unless fold_bn=False.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import fs, windows
from lipsync_jax.inference import runner as runner_lib
from lipsync_jax.inference.frames import BackgroundWriter, FaceFrames, InferenceError, StageTimer, background
from lipsync_jax.media import detectors, track

DETECT_CHUNK = 32  # frames detected at once; boxes are final 5 frames later (smoothing look-ahead)
DECODE_PREFETCH = 16  # decoded frames buffered ahead by the decode thread
Box = tuple[int, int, int, int]


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


class Generator:
  """Wav2Lip forward on uint8 BGR face crops through one BatchRunner with bucketed batch shapes.

  `generator(mels (k,80,16), crops (k,S,S,3) uint8) -> (k,S,S,3) uint8`, k <= batch_size, run in the
  smallest bucket (`runner.bucket_sizes(batch_size)`, or `buckets`) that holds k rows. `compile(num_rows)`
  compiles ahead the shapes a run over num_rows rows uses (at most two: the full batch and the last batch's
  bucket); `trace_count` counts traces of the jitted function (one per batch shape used).
  """

  def __init__(
    self,
    variables,
    meta: dict,
    batch_size: int,
    compute_dtype=jnp.float32,
    fold_bn: bool = True,
    buckets: Sequence[int] | None = None,
  ):
    from lipsync_jax import models

    self.img_size = int(meta.get("img_size", 96))
    self.bn_folded = bool(fold_bn)
    # BN is folded inside the jitted program: element-wise ops on the weights, no measurable cost per batch
    # and bit-identical outputs, while folding beforehand costs ~50 eager ops (~1.4 s of small compiles on
    # 2 CPU cores) or a program of its own (~0.7 s to trace, compile and run, and another cache entry).
    self._fold = functools.partial(models.fold_batch_norm, "wav2lip") if self.bn_folded else None
    self.model = models.Wav2Lip(
      width_multiplier=float(meta.get("width_multiplier", 1.0)),
      compute_dtype=compute_dtype,
      fold_bn=self.bn_folded,
    )
    buckets = runner_lib.bucket_sizes(batch_size) if buckets is None else buckets
    self.runner = runner_lib.BatchRunner(self._apply, variables, batch_size, buckets=buckets)

  @property
  def batch_size(self) -> int:
    return self.runner.batch_size

  @property
  def trace_count(self) -> int:
    return self.runner.trace_count

  def compile(self, num_rows: int) -> list[int]:
    """Compiles the batch shapes a run over num_rows rows uses; returns them (distinct, ascending)."""
    shapes = sorted(set(self.runner.plan(num_rows)))
    for rows in shapes:
      self.runner.compile(
        jax.ShapeDtypeStruct((windows.NUM_MELS, windows.MEL_STEPS), np.float32),
        jax.ShapeDtypeStruct((self.img_size, self.img_size, 3), np.uint8),
        rows=rows,
      )
    return shapes

  def _apply(self, variables, mels: jax.Array, crops: jax.Array) -> jax.Array:
    if self._fold is not None:
      variables = self._fold(variables)
    return _uint8_forward(
      lambda mel, faces: self.model.apply(variables, mel, faces, train=False), mels, crops
    )

  def __call__(self, mels: np.ndarray, crops: np.ndarray) -> np.ndarray:
    if len(crops) == 0:
      return np.zeros((0, self.img_size, self.img_size, 3), np.uint8)
    return self.runner.run(np.asarray(mels, np.float32), np.asarray(crops, np.uint8))


def _uint8_forward(forward, mels: jax.Array, crops: jax.Array) -> jax.Array:
  """uint8 BGR crops (k,S,S,3) + mels (k,80,16) -> forward(mel (k,80,16,1), [masked | reference] in [0,1])
  -> uint8 frames (k,S,S,3): the generator's input / output layout, one place for both generators."""
  faces = crops.astype(jnp.float32) / 255.0
  inputs = jnp.concatenate([windows.mask_lower_half(faces), faces], axis=-1)
  out = forward(mels[..., None], inputs)
  return (jnp.clip(out.astype(jnp.float32), 0.0, 1.0) * 255.0).astype(jnp.uint8)


class ExportedGenerator(Generator):
  """The Generator interface on a served jax.export artifact (lipsync_jax.inference.serving.ServedModel).

  The artifact is float32 with BatchNorm already folded; a symbolic-batch artifact runs in the usual buckets,
  a fixed-batch one in its own batch size only.
  """

  # Generator's __init__ builds a Flax model from variables; here the artifact is the model.
  def __init__(self, served, batch_size: int, buckets: Sequence[int] | None = None):  # pylint: disable=super-init-not-called
    if served.meta.get("kind") != "wav2lip":
      raise InferenceError(
        f"the exported artifact holds a {served.meta.get('kind')!r} model; lip-syncing needs a wav2lip "
        "export (python -m lipsync_jax.export --kind wav2lip)"
      )
    self.img_size = served.img_size
    self.bn_folded = bool(served.meta.get("bn_folded", True))
    fixed = str(served.meta.get("batch", "symbolic")) != "symbolic"
    if fixed:  # the artifact's batch dimension is fixed: every call runs (padded) at that size
      batch_size = int(served.meta["batch"])
      buckets = (batch_size,)
    buckets = runner_lib.bucket_sizes(batch_size) if buckets is None else buckets
    call = served.exported.call
    self.runner = runner_lib.BatchRunner(
      lambda params, mels, crops: _uint8_forward(functools.partial(call, params), mels, crops),
      served.params,
      batch_size,
      buckets=buckets,
    )


def _first_pass(
  source: FaceFrames,
  detector,
  face_track: track.FaceTrack | None,
  fixed_box: Box | None,
  chunk: int,
  timer: StageTimer,
  stored_boxes: list,
) -> Iterator[tuple[np.ndarray, Any]]:
  """Yields (frame, box) for each source frame once; detection per chunk; boxes recorded in stored_boxes."""
  frames = background(lambda: source.frames(timer), maxsize=DECODE_PREFETCH, name="decode")
  pending: collections.deque = collections.deque()
  batch: list = []

  def release(boxes):
    for box in boxes:
      stored_boxes.append(box)
      yield pending.popleft(), box

  def detect(batch):
    with timer("detect"):
      raw = detector.detect_faces(batch)
    face_track.add(raw, frames=batch)
    pending.extend(batch)
    return face_track.finalize(end=False)

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
    yield from release(face_track.finalize(end=True))


def lipsync(
  face: str,
  audio: str,
  variables,
  out: str,
  meta: dict | None = None,
  *,
  pads: Sequence[int] = track.DEFAULT_PADS,
  nosmooth: bool = False,
  box: Sequence[int] | None = (-1, -1, -1, -1),
  resize_factor: int = 1,
  crop: Sequence[int] = (0, -1, 0, -1),
  rotate: bool = False,
  static: bool = False,
  fps: float = 25.0,
  batch_size: int = 128,
  detector: Any = detectors.DEFAULT,
  no_face: str = "carry",
  progress: bool = True,
  compute_dtype=jnp.float32,
  fold_bn: bool = True,
  cache_bytes: int = 512 << 20,
  generator: Generator | None = None,
) -> dict:
  """Lip-syncs FACE (video/image) to AUDIO with generator `variables`; writes `out` (mp4). Returns stats.

  Options are the original inference.py's (see the CLI help); box is (top, bottom, left, right) or -1s.
  `detector` is a registry name (lipsync_jax.media.detectors) or a FaceDetector; `generator` reuses a
  compiled Generator.
  """
  from tqdm import tqdm

  from lipsync_jax.media import video

  meta = dict(meta or {})
  timer = StageTimer()
  wall_start = time.perf_counter()
  face, audio, out = os.fspath(face), os.fspath(audio), os.fspath(out)
  if not fs.isfile(audio):
    raise InferenceError(f"--audio {audio!r} does not exist; pass a wav/mp3 or any file with an audio track")
  if not fs.isfile(face):
    raise InferenceError(f"--face {face!r} does not exist; pass a video or an image")
  if no_face not in track.NO_FACE_POLICIES:
    raise InferenceError(f"--no_face must be one of {track.NO_FACE_POLICIES}, got {no_face!r}")
  # Decoders and the encoder need local files: a remote (gs://) input is copied to a temporary file, and the
  # output is written locally, then moved (uploaded) to `out` only when everything succeeded.
  with contextlib.ExitStack() as files:
    with timer("download"):
      face_file = files.enter_context(fs.local_copy(face))
      audio_file = face_file if audio == face else files.enter_context(fs.local_copy(audio))
    out_file = files.enter_context(fs.staged_output(out))
    source = FaceFrames(
      face_file, static=static, fps=fps, resize_factor=resize_factor, rotate=rotate, crop=crop, name=face
    )
    with timer("audio"):
      wav = video.read_audio(audio_file, sr=16000)

    def melspectrogram() -> np.ndarray:
      with timer("mel"):
        from lipsync_jax.media import audio as audio_lib

        return audio_lib.melspectrogram(wav, source=os.fspath(audio))

    # The mel (its imports, scipy.signal and librosa's lazy parts, are ~1.5 s in a fresh process) runs in a
    # thread while the generator compiles (XLA's compile does not hold the GIL). The shapes compiled ahead
    # come from the mel's length as the sample count gives it; the frames themselves from the mel's own.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mel") as pool:
      mel_future = pool.submit(melspectrogram)
      with timer("compile"):
        expected_steps = 1 + len(wav) * windows.MEL_STEPS_PER_SECOND // 16000  # center=True framing
        num_out = len(mel_chunk_starts(expected_steps, source.fps))  # too short: an error before compiling
        if generator is None:
          generator = Generator(variables, meta, int(batch_size), compute_dtype, fold_bn)
        generator.compile(num_out)
      mel = mel_future.result()
    starts = mel_chunk_starts(mel.shape[1], source.fps)
    num_out = len(starts)
    img_size = generator.img_size
    fixed = None
    if box is not None and box[0] != -1:
      try:
        fixed = track.box_from_tblr(box, source.width, source.height)
      except ValueError as e:
        raise InferenceError(f"--box: {e}") from e
    det, face_track = None, None
    if fixed is None:
      det = detectors.get_detector(detector) if isinstance(detector, str) else detector
      window = 1 if nosmooth else track.DEFAULT_SMOOTH_WINDOW
      face_track = track.FaceTrack(
        source.width, source.height, pads=pads, smooth_window=window, no_face=no_face
      )
    stored_boxes: list = []
    cache: list | None = []
    frame_bytes = source.width * source.height * 3

    def looped_frames():
      """(frame, box) for output frames 0, 1, ...: the first pass, then loops over the stored boxes."""
      nonlocal cache
      for frame, fbox in _first_pass(source, det, face_track, fixed, DETECT_CHUNK, timer, stored_boxes):
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

    batches = 0
    bar = tqdm(total=num_out, desc="lipsync", unit="frame", disable=not progress)
    with video.VideoWriter(out_file, source.fps, source.width, source.height) as writer:
      encoder = BackgroundWriter(writer, timer)
      try:
        frames_iter = looped_frames()
        for batch_start in range(0, num_out, generator.batch_size):
          items = [next(frames_iter) for _ in range(min(generator.batch_size, num_out - batch_start))]
          todo = [j for j, (_, fbox) in enumerate(items) if fbox is not None]
          if todo:
            with timer("prep"):
              crops = np.stack([track.crop_and_resize(items[j][0], items[j][1], img_size) for j in todo])
              mels = np.stack(
                [mel[:, starts[batch_start + j] : starts[batch_start + j] + windows.MEL_STEPS] for j in todo]
              )
            with timer("generator"):
              generated = generator(mels, crops)
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
      if face_track is not None and face_track.frames_with_face == 0:
        raise InferenceError(
          f"--face {face!r}: no face detected in any frame; pass --box top bottom left right"
        )
      with timer("mux"):
        writer.close(audio=wav, sample_rate=16000)
    wall = time.perf_counter() - wall_start
    return {
      "out": out,
      "frames": num_out,
      "fps": source.fps,
      "width": source.width,
      "height": source.height,
      "source_frames": len(stored_boxes),
      "batches": batches,
      "batch_size": generator.batch_size,
      "compiles": generator.trace_count,
      "bn_folded": generator.bn_folded,
      # With a fixed box nothing is detected: an untouched track's counts (all zero).
      **(face_track or track.FaceTrack(source.width, source.height)).stats(),
      "timings_s": dict(timer.seconds),
      "wall_s": wall,
      "frames_per_s": num_out / wall,
    }
