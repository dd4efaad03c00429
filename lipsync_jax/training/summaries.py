"""TensorBoard event files through lipsync_jax.fs: the training loop's clu MetricWriter, local or gs://.

Owns `SummaryWriter(logdir)`, a `clu.metric_writers.MetricWriter` that writes TensorBoard event files with
the protos the `tensorboard` package ships (TensorFlow is not used) through the one file-system layer,
so a `gs://` workdir works with the same client, credentials and emulator as everything else. (clu's own
SummaryWriter goes through TensorFlow's GCS file system: a second GCS layer that cannot be pointed at an
emulator and does not share gcsfs's credentials or retries.)

Format: TFRecord framing (uint64 length, masked CRC-32C of it, the serialized `Event`, masked CRC-32C of
it); each file starts with the `brain.Event:2` version event. Values use the legacy summary fields that
every TensorBoard reader understands (its `EventAccumulator` directly; the data server migrates them to
the plugin formats): scalars -> `simple_value`, images -> PNG `Summary.Image` (one image: tag = key; N
images: `key/image/i`, TF1's naming), audio -> WAV `Summary.Audio`, histograms -> `HistogramProto`; texts
and raw tensors -> tensors with the text plugin / caller's metadata; hparams -> the hparams plugin's
session-start summary (`tensorboard.plugins.hparams.summary_v2.hparams_pb`). Videos are not written
(clu's own writer does not either): ignored with one warning.

Files: `events.out.tfevents.<10-digit unix time>.<host>.<pid>.<6-digit sequence>`; a file is rotated once
it passes `max_file_bytes` (default 4 MB); the time never goes backwards (nor behind the files already in
the directory) and the sequence number grows, so names sort in write order (TensorBoard reads a
directory's event files in name order and only moves forward). Local files are appended to. An object
store cannot append: for a remote logdir the current file's bytes (at most `max_file_bytes` plus one
event) stay in memory and the object is rewritten on each flush. Writes are flushed by `flush()` /
`close()` and automatically once `flush_secs` have passed since the last flush (checked on each write).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
import wave
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
from clu.metric_writers import interface
from tensorboard.compat.proto import event_pb2, summary_pb2

from lipsync_jax import fs
from lipsync_jax.data.tfrecord import frame_record

FILE_PREFIX = 'events.out.tfevents.'
FILE_VERSION = 'brain.Event:2'
DEFAULT_MAX_FILE_BYTES = 4 << 20
DEFAULT_FLUSH_SECS = 30.0
DEFAULT_HISTOGRAM_BUCKETS = 30


def event_file_name(timestamp: int, host: str, pid: int, sequence: int) -> str:
  """`events.out.tfevents.<time>.<host>.<pid>.<sequence>`: sorts by time, then sequence (fixed widths)."""
  return f'{FILE_PREFIX}{int(timestamp):010d}.{host}.{int(pid)}.{int(sequence):06d}'


def _timestamp_of(name: str) -> int | None:
  """The unix time in an event file name (ours or TensorFlow's), None when it has none."""
  field = name[len(FILE_PREFIX) :].split('.', 1)[0]
  return int(field) if field.isdigit() else None


def _png(image: np.ndarray) -> tuple[bytes, int, int, int]:
  """(H, W, C) image, C in 1/3/4, RGB(A), float in [0, 1] or uint8 -> (PNG bytes, height, width, C)."""
  import cv2  # pylint: disable=import-outside-toplevel

  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f'images must be (H, W, C) with C in 1, 3, 4 (or (N, H, W, C)); got {image.shape}')
  if image.dtype != np.uint8:
    image = (np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  channels = image.shape[-1]
  order = {1: [0], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]  # cv2 encodes BGR(A)
  bgr = image[..., order]
  ok, encoded = cv2.imencode('.png', np.ascontiguousarray(bgr))
  if not ok:
    raise ValueError(f'cannot encode an image of shape {image.shape} as PNG')
  return encoded.tobytes(), image.shape[0], image.shape[1], channels


def _wav(audio: np.ndarray, sample_rate: int) -> bytes:
  """(T, C) float samples in [-1, 1] -> 16-bit PCM WAV bytes (the stdlib's wave module)."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim == 1:
    audio = audio[:, None]
  pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype('<i2')
  buffer = io.BytesIO()
  with wave.open(buffer, 'wb') as w:
    w.setnchannels(pcm.shape[1])
    w.setsampwidth(2)
    w.setframerate(int(sample_rate))
    w.writeframes(pcm.tobytes())
  return buffer.getvalue()


def _batch(key: str, array: Any, per_item_ndim: int) -> list[np.ndarray]:
  array = np.asarray(array)
  if array.ndim == per_item_ndim:
    return [array]
  if array.ndim != per_item_ndim + 1:
    raise ValueError(
      f'{key!r}: expected {per_item_ndim} or {per_item_ndim + 1} dims, got shape {array.shape}'
    )
  return list(array)


def _tags(key: str, count: int, kind: str) -> list[str]:
  return [key] if count == 1 else [f'{key}/{kind}/{i}' for i in range(count)]


class SummaryWriter(interface.MetricWriter):
  """TensorBoard event files in `logdir` (local or remote) through lipsync_jax.fs; see the module docstring.

  Thread-safe (clu's AsyncMultiWriter calls it from its own thread). `max_file_bytes` bounds one event file
  (and, for a remote logdir, the bytes kept in memory); `flush_secs` is the longest a write waits for a
  flush.
  """

  def __init__(
    self,
    logdir: str | os.PathLike,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    flush_secs: float = DEFAULT_FLUSH_SECS,
  ) -> None:
    self.logdir = os.fspath(logdir)
    self.max_file_bytes = int(max_file_bytes)
    self.flush_secs = float(flush_secs)
    if self.max_file_bytes <= 0:
      raise ValueError(f'max_file_bytes={max_file_bytes} must be positive')
    self._remote = fs.is_remote(self.logdir)
    self._host = socket.gethostname().replace('/', '_') or 'localhost'
    self._lock = threading.Lock()
    self._sequence = 0
    self._last_timestamp = 0
    self._path: str | None = None
    self._file: IO[bytes] | None = None  # local: the open event file
    self._buffer = bytearray()  # remote: the current file's bytes
    self._size = 0
    self._dirty = False
    self._closed = False
    self._warned_videos = False
    self._last_flush = time.monotonic()
    fs.makedirs(self.logdir)
    # Names of this writer's files sort after those already there (an earlier run of the same workdir, maybe
    # on another host with a clock behind this one's, or a restart within the same second).
    names = fs.listdir(self.logdir) if fs.isdir(self.logdir) else []  # an object store has no empty dirs
    earlier = [_timestamp_of(name) for name in names if name.startswith(FILE_PREFIX)]
    self._last_timestamp = max([t + 1 for t in earlier if t is not None], default=0)
    self._open_next()

  # ------------------------------------------------------------------------------------------ files ----
  @property
  def path(self) -> str:
    """The event file now being written."""
    assert self._path is not None
    return self._path

  def _open_next(self) -> None:
    """Closes the current file (after writing it out) and starts the next one with the version event."""
    self._write_out()
    if self._file is not None:
      self._file.close()
      self._file = None
    now = time.time()
    timestamp = max(int(now), self._last_timestamp)  # never backwards, so names sort in write order
    self._last_timestamp = timestamp
    self._sequence += 1
    name = event_file_name(timestamp, self._host, os.getpid(), self._sequence)
    self._path = os.path.join(self.logdir, name)
    self._buffer = bytearray()
    self._size = 0
    if not self._remote:
      self._file = fs.open(self._path, 'wb')
    self._append(event_pb2.Event(wall_time=now, file_version=FILE_VERSION).SerializeToString())

  def _append(self, serialized_event: bytes) -> None:
    record = frame_record(serialized_event)
    if self._remote:
      self._buffer += record
    else:
      assert self._file is not None
      self._file.write(record)
    self._size += len(record)
    self._dirty = True

  def _write_out(self) -> None:
    """Makes what was written visible: flushes the local file, or rewrites the remote object."""
    if not self._dirty or self._path is None:
      return
    if self._remote:
      with fs.open(self._path, 'wb') as f:  # objects cannot be appended to: the whole file, rewritten
        f.write(bytes(self._buffer))
    else:
      assert self._file is not None
      self._file.flush()
    self._dirty = False
    self._last_flush = time.monotonic()

  def _write_event(self, step: int, summary: summary_pb2.Summary) -> None:
    event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
    with self._lock:
      if self._closed:
        raise ValueError(f'SummaryWriter({self.logdir!r}) is closed')
      self._append(event.SerializeToString())
      if self._size >= self.max_file_bytes:
        self._open_next()
      if time.monotonic() - self._last_flush >= self.flush_secs:
        self._write_out()

  # ------------------------------------------------------------------------------ MetricWriter API ----
  def write_summaries(
    self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
  ) -> None:
    from tensorboard.util import tensor_util  # pylint: disable=import-outside-toplevel

    summary = summary_pb2.Summary()
    for key, value in values.items():
      item = summary.value.add(tag=key, tensor=tensor_util.make_tensor_proto(np.asarray(value)))
      meta = (metadata or {}).get(key)
      if isinstance(meta, bytes):
        item.metadata.ParseFromString(meta)
      elif meta is not None:
        item.metadata.CopyFrom(meta)
    self._write_event(step, summary)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    summary = summary_pb2.Summary()
    for key, value in scalars.items():
      summary.value.add(tag=key, simple_value=float(np.asarray(value)))
    self._write_event(step, summary)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    summary = summary_pb2.Summary()
    for key, value in images.items():
      batch = _batch(key, value, 3)
      for tag, image in zip(_tags(key, len(batch), 'image'), batch):
        png, height, width, channels = _png(image)
        summary.value.add(
          tag=tag,
          image=summary_pb2.Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
          ),
        )
    self._write_event(step, summary)

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    del step
    if videos and not self._warned_videos:
      logging.warning('SummaryWriter: videos are not written to TensorBoard (%s)', ', '.join(videos))
      self._warned_videos = True

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    summary = summary_pb2.Summary()
    for key, value in audios.items():
      batch = _batch(key, value, 2)
      for tag, clip in zip(_tags(key, len(batch), 'audio'), batch):
        summary.value.add(
          tag=tag,
          audio=summary_pb2.Summary.Audio(
            sample_rate=float(sample_rate),
            num_channels=int(np.shape(clip)[-1]),
            length_frames=int(np.shape(clip)[0]),
            encoded_audio_string=_wav(clip, sample_rate),
            content_type='audio/wav',
          ),
        )
    self._write_event(step, summary)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    from tensorboard.util import tensor_util  # pylint: disable=import-outside-toplevel

    summary = summary_pb2.Summary()
    for key, text in texts.items():
      item = summary.value.add(tag=key, tensor=tensor_util.make_tensor_proto(np.asarray(str(text), object)))
      item.metadata.plugin_data.plugin_name = 'text'
    self._write_event(step, summary)

  def write_histograms(
    self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
  ) -> None:
    summary = summary_pb2.Summary()
    for key, value in arrays.items():
      values = np.asarray(value, np.float64).reshape(-1)
      values = values[np.isfinite(values)]
      buckets = int((num_buckets or {}).get(key, DEFAULT_HISTOGRAM_BUCKETS))
      counts, edges = np.histogram(values, bins=buckets) if values.size else (np.zeros(0), np.zeros(1))
      summary.value.add(
        tag=key,
        histo=summary_pb2.HistogramProto(
          min=float(values.min()) if values.size else 0.0,
          max=float(values.max()) if values.size else 0.0,
          num=float(values.size),
          sum=float(values.sum()),
          sum_squares=float(np.square(values).sum()),
          bucket_limit=[float(e) for e in edges[1:]],
          bucket=[float(c) for c in counts],
        ),
      )
    self._write_event(step, summary)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams import summary_v2  # pylint: disable=import-outside-toplevel

    # The plugin takes bool, int, float and str values; anything else (None, lists) is shown as its str.
    values = {k: v.item() if isinstance(v, np.generic) else v for k, v in hparams.items()}
    values = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in values.items()}
    self._write_event(0, summary_v2.hparams_pb(values))

  def flush(self) -> None:
    with self._lock:
      if not self._closed:
        self._write_out()

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    with self._lock:
      if self._closed:
        return
      self._write_out()
      if self._file is not None:
        self._file.close()
        self._file = None
      self._closed = True
