"""The FACE input of inference and the background threads around it.

Owns:
  * `FaceFrames(path, static, fps, resize_factor, rotate, crop, name)`: a video (decoded at its own frame
    rate) or a still image (a local file: `lipsync_jax.fs.local_copy` of a remote one, `name` the user's
    path for messages), with the original inference's resize_factor / rotate / crop applied to every frame.
  * `background(iterator_fn, maxsize, name)`: runs an iterator in a daemon thread (decoding overlaps the
    rest); `BackgroundWriter`: VideoWriter.write in a thread (encoding overlaps generation).
  * `StageTimer`: busy seconds per stage, each stage timed in the thread that runs it.
  * `InferenceError`: bad input to inference (missing / unreadable file, no face anywhere, audio too short,
    bad option); the message names the flag and what to do.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from lipsync_jax.media import video

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ENCODE_QUEUE = 32  # frames buffered for the encode thread


class InferenceError(ValueError):
  """Bad input to inference (missing/unreadable file, no face anywhere, audio too short, bad option)."""


class StageTimer:
  """Accumulated busy seconds per stage (each stage timed in the thread that runs it)."""

  def __init__(self) -> None:
    self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
    self._lock = threading.Lock()

  @contextlib.contextmanager
  def __call__(self, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
      yield
    finally:
      with self._lock:
        self.seconds[stage] += time.perf_counter() - start


_DONE = object()


def background(iterator_fn: Callable[[], Iterator[Any]], maxsize: int, name: str) -> Iterator[Any]:
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


class BackgroundWriter:
  """VideoWriter.write in a thread (encoding overlaps generation); errors surface on write/close."""

  def __init__(self, writer: video.VideoWriter, timer: StageTimer, maxsize: int = ENCODE_QUEUE) -> None:
    self.writer, self.timer = writer, timer
    self.frames: queue.Queue = queue.Queue(maxsize=maxsize)
    self.error: BaseException | None = None
    self.thread = threading.Thread(target=self._run, name="encode", daemon=True)
    self.thread.start()

  def _run(self) -> None:
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

  def write(self, frame: np.ndarray) -> None:
    if self.error is not None:
      raise self.error
    self.frames.put(frame)

  def finish(self) -> None:
    self.frames.put(_DONE)
    self.thread.join()
    if self.error is not None:
      raise self.error


class FaceFrames:
  """The FACE input: a video or a still image, with the original's resize_factor / rotate / crop applied."""

  def __init__(
    self,
    path: str,
    static: bool = False,
    fps: float = 25.0,
    resize_factor: int = 1,
    rotate: bool = False,
    crop: Sequence[int] = (0, -1, 0, -1),
    name: str | None = None,
  ) -> None:
    path = os.fspath(path)
    name = name or path  # what messages call it: the user's path when `path` is a local copy of it
    if not os.path.isfile(path):
      raise InferenceError(f"--face {name!r} does not exist; pass a video or an image")
    self.path, self.resize_factor, self.rotate, self.crop = path, int(resize_factor), bool(rotate), crop
    self.name = name
    if self.resize_factor < 1:
      raise InferenceError(f"--resize_factor must be >= 1, got {resize_factor}")
    self.is_image = path.lower().endswith(IMAGE_EXTENSIONS)
    self.static = static or self.is_image
    if self.is_image:
      image = cv2.imread(path, cv2.IMREAD_COLOR)
      if image is None:
        raise InferenceError(f"--face {name!r}: cannot read the image (corrupt or unsupported format)")
      self._image = self.process(image)
      self.fps = float(fps)
    else:
      info = video.probe(path)
      if not getattr(info, "has_video", True) or info.width == 0:
        raise InferenceError(f"--face {name!r} has no video stream")
      self.fps = float(info.fps) if info.fps > 0 else float(fps)
      self._image = None
    self.passes = 0  # decoding passes over the video: only the first warns about damage
    first = self._image if self._image is not None else next(iter(self._decode(quiet=True)), None)
    if first is None:
      raise InferenceError(f"--face {name!r}: no decodable frame")
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

  def _decode(self, quiet: bool = False) -> Iterator[np.ndarray]:
    report = video.DecodeReport(quiet=quiet or self.passes > 0)
    self.passes += not quiet
    for frame in video.iter_frames(self.path, report=report):
      yield self.process(frame)
      if self.static:
        return

  def frames(self, timer: StageTimer | None = None) -> Iterator[np.ndarray]:
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
