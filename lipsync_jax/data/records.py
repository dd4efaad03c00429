"""The TFRecord example schema: one writer and one parser, shared by preprocessing and the input pipeline.

Owns: how one preprocessed clip is stored as a `tf.train.Example` (serialised with the TF-free proto that
tensorflow-datasets ships, so reading needs no TensorFlow), a record's summary for the shard index
(`summarize`: clip_id, num_frames, mel_steps, fps), and the shard naming scheme.

One example per clip, features:
  clip_id      bytes   e.g. "speaker/00001"
  split        bytes   "train" | "val" | "test"
  source       bytes   path of the source video
  fps          float   frame rate of the frames (25 for training data)
  num_frames   int64   N
  img_size     int64   S (frames are S x S face crops)
  frame_format bytes   "jpeg" (one JPEG per frame) or "raw" (S*S*3 uint8 bytes per frame)
  frames       bytes[] N entries, BGR
  boxes        int64[] N*4, face box (x1, y1, x2, y2) per frame in source-video pixels
  sample_rate  int64   16000
  mel          bytes   float32 little-endian, shape (80, T), exactly lipsync_jax.media.audio.melspectrogram
  mel_steps    int64   T
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

import cv2
import numpy as np
from tensorflow_datasets.proto import tf_example_generated_pb2 as tf_example_pb2

from lipsync_jax import windows

FRAME_FORMATS = ("jpeg", "raw")
SHARD_PATTERN = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


@dataclasses.dataclass
class Clip:
  """One preprocessed clip, in memory. `frames` is (N, S, S, 3) uint8 BGR, `mel` (80, T) float32."""

  clip_id: str
  split: str
  frames: np.ndarray
  mel: np.ndarray
  boxes: np.ndarray  # (N, 4) int
  fps: float = windows.FPS
  source: str = ""
  sample_rate: int = 16000


def encode_frames(frames: np.ndarray, frame_format: str = "jpeg", jpeg_quality: int = 95) -> list[bytes]:
  if frame_format == "jpeg":
    out = []
    for frame in frames:
      ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
      if not ok:
        raise ValueError("OpenCV could not JPEG-encode a frame")
      out.append(buf.tobytes())
    return out
  if frame_format == "raw":
    return [np.ascontiguousarray(f, dtype=np.uint8).tobytes() for f in frames]
  raise ValueError(f"frame_format must be one of {FRAME_FORMATS}, got {frame_format!r}")


def serialize_clip(clip: Clip, frame_format: str = "jpeg", jpeg_quality: int = 95) -> bytes:
  """Clip -> serialised tf.train.Example bytes."""
  frames = np.asarray(clip.frames)
  if frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.shape[3] != 3:
    raise ValueError(f"clip {clip.clip_id}: frames must be (N, S, S, 3), got {frames.shape}")
  mel = np.asarray(clip.mel, dtype="<f4")
  if mel.ndim != 2 or mel.shape[0] != windows.NUM_MELS:
    raise ValueError(f"clip {clip.clip_id}: mel must be (80, T), got {mel.shape}")
  boxes = np.asarray(clip.boxes, dtype=np.int64).reshape(len(frames), 4)

  example = tf_example_pb2.Example()
  feature = example.features.feature

  def put_bytes(key, values):
    feature[key].bytes_list.value.extend(values)

  def put_int(key, values):
    feature[key].int64_list.value.extend(int(v) for v in values)

  put_bytes("clip_id", [clip.clip_id.encode()])
  put_bytes("split", [clip.split.encode()])
  put_bytes("source", [clip.source.encode()])
  feature["fps"].float_list.value.append(float(clip.fps))
  put_int("num_frames", [len(frames)])
  put_int("img_size", [frames.shape[1]])
  put_bytes("frame_format", [frame_format.encode()])
  put_bytes("frames", encode_frames(frames, frame_format, jpeg_quality))
  put_int("boxes", boxes.reshape(-1))
  put_int("sample_rate", [clip.sample_rate])
  put_bytes("mel", [mel.tobytes()])
  put_int("mel_steps", [mel.shape[1]])
  return example.SerializeToString(deterministic=True)  # map entries sorted by key: same clip, same bytes


class EncodedClip:
  """A parsed example whose frames stay encoded until asked for (decode only the frames a sample uses)."""

  def __init__(self, features: dict):
    self.clip_id: str = features["clip_id"]
    self.split: str = features["split"]
    self.source: str = features["source"]
    self.fps: float = features["fps"]
    self.num_frames: int = features["num_frames"]
    self.img_size: int = features["img_size"]
    self.frame_format: str = features["frame_format"]
    self.encoded_frames: list[bytes] = features["frames"]
    self.boxes: np.ndarray = features["boxes"]
    self.sample_rate: int = features["sample_rate"]
    self.mel: np.ndarray = features["mel"]

  def frame(self, index: int) -> np.ndarray:
    """Decoded frame `index`: (S, S, 3) uint8 BGR."""
    data = self.encoded_frames[index]
    size = self.img_size
    if self.frame_format == "raw":
      return np.frombuffer(data, dtype=np.uint8).reshape(size, size, 3)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape != (size, size, 3):
      raise ValueError(f"clip {self.clip_id}: frame {index} is not a valid {size}x{size} JPEG")
    return image

  def frames(self, indices) -> np.ndarray:
    """Decoded frames at `indices`: (len(indices), S, S, 3) uint8 BGR."""
    return np.stack([self.frame(int(i)) for i in indices])

  def to_clip(self) -> Clip:
    return Clip(
      self.clip_id,
      self.split,
      self.frames(range(self.num_frames)),
      self.mel,
      self.boxes,
      self.fps,
      self.source,
      self.sample_rate,
    )


def _features(serialized: bytes, required: tuple[str, ...]):
  """The feature map of a serialised tf.train.Example holding `required` (ValueError if corrupt or foreign)."""
  example = tf_example_pb2.Example()
  try:
    example.ParseFromString(serialized)
  except Exception as e:  # protobuf raises DecodeError, a subclass of Exception
    raise ValueError(f"record is not a tf.train.Example: {e}") from e
  feature = example.features.feature
  missing = [k for k in required if k not in feature]
  if missing:
    raise ValueError(f"record is not a lipsync_jax clip: missing features {missing}")
  return feature


def parse_example(serialized: bytes) -> EncodedClip:
  """Serialised tf.train.Example bytes -> EncodedClip. Raises ValueError on a corrupt or foreign record."""
  feature = _features(serialized, ("clip_id", "num_frames", "img_size", "frames", "mel", "mel_steps"))

  def one_bytes(key, default=b""):
    values = feature[key].bytes_list.value if key in feature else []
    return values[0] if values else default

  def one_int(key, default=0):
    values = feature[key].int64_list.value if key in feature else []
    return int(values[0]) if values else default

  num_frames = one_int("num_frames")
  mel_steps = one_int("mel_steps")
  mel = np.frombuffer(one_bytes("mel"), dtype="<f4")
  if mel.size != windows.NUM_MELS * mel_steps:
    raise ValueError(
      f"clip {one_bytes('clip_id').decode()}: mel has {mel.size} values, expected 80 x {mel_steps}"
    )
  frames = list(feature["frames"].bytes_list.value)
  if len(frames) != num_frames:
    raise ValueError(
      f"clip {one_bytes('clip_id').decode()}: {len(frames)} frames stored, num_frames says {num_frames}"
    )
  boxes = np.asarray(feature["boxes"].int64_list.value, dtype=np.int64) if "boxes" in feature else None
  boxes = boxes.reshape(-1, 4) if boxes is not None and boxes.size else np.zeros((num_frames, 4), np.int64)
  fps_values = feature["fps"].float_list.value if "fps" in feature else []
  return EncodedClip(
    dict(
      clip_id=one_bytes("clip_id").decode(),
      split=one_bytes("split").decode(),
      source=one_bytes("source").decode(),
      fps=float(fps_values[0]) if fps_values else float(windows.FPS),
      num_frames=num_frames,
      img_size=one_int("img_size"),
      frame_format=one_bytes("frame_format", b"jpeg").decode(),
      frames=frames,
      boxes=boxes,
      sample_rate=one_int("sample_rate", 16000),
      mel=mel.reshape(windows.NUM_MELS, mel_steps),
    )
  )


class RecordSummary(NamedTuple):
  """What the shard index keeps of one record (lipsync_jax.data.shard_index)."""

  clip_id: str
  num_frames: int
  mel_steps: int
  fps: float


def summarize(serialized: bytes) -> RecordSummary:
  """The index fields of a serialised clip, without decoding its frames or mel (ValueError if foreign)."""
  feature = _features(serialized, ("clip_id", "num_frames", "mel_steps"))
  fps_values = feature["fps"].float_list.value if "fps" in feature else []
  return RecordSummary(
    clip_id=feature["clip_id"].bytes_list.value[0].decode(),
    num_frames=int(feature["num_frames"].int64_list.value[0]),
    mel_steps=int(feature["mel_steps"].int64_list.value[0]),
    fps=float(fps_values[0]) if fps_values else float(windows.FPS),
  )
