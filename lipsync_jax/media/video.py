"""Video and container I/O on PyAV (its bundled FFmpeg; no ffmpeg binary needed).

Owns: `probe` (fps, frame count, size, audio presence, duration), streaming frame decoding (`iter_frames`,
`read_frames`; frames are (H, W, 3) uint8 **BGR**, like OpenCV; `iter_frames(path, fps=25.0)` resamples by
presentation timestamp with the one rule of lipsync_jax.media.fps), audio extraction from any container
(`read_audio` -> 16 kHz mono float32 via PyAV's AudioResampler) and `VideoWriter`, which encodes H.264
(yuv420p) frame by frame and muxes an AAC audio track when it is closed. Errors are `VideoError`
(a ValueError) naming the file and what went wrong.

VideoWriter design: the header of an MP4 must list every stream before the first packet, but the audio
only arrives at `close(audio=...)`. Frames are therefore encoded straight into a temporary video-only file
next to the target; `close` then remuxes those packets (no re-encode) interleaved with the AAC packets into
a second temporary file and renames it over the target. Memory stays flat in the number of frames, and the
target path never holds a half-written file. yuv420p needs even dimensions: odd widths/heights are padded
by one replicated edge column/row (`VideoWriter.frame_size` tells the encoded size). Frames are converted to
yuv420p with OpenCV (deterministic), so identical frames give a bit-identical file.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from collections.abc import Iterator

import av
import cv2
import numpy as np

from lipsync_jax.media import fps as fps_rule

DEFAULT_SAMPLE_RATE = 16000
_H264_ENCODERS = ("libx264", "h264")  # whichever the bundled FFmpeg has, in order of preference
_FORMAT_BY_EXTENSION = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


class VideoError(ValueError):
  """A media file that cannot be opened/decoded, lacks the needed stream, or bad writer input."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  fps: float  # average frame rate of the video stream (0.0 when there is none)
  num_frames: int  # frames in the video stream (counted from packets if the container doesn't say)
  width: int
  height: int
  has_audio: bool
  duration: float  # seconds (container duration; frames / fps as a fallback)
  has_video: bool = True


def _open(path, mode: str = "r", **kwargs):
  path = os.fspath(path)
  if mode == "r" and not os.path.isfile(path):
    raise VideoError(f"media file not found: {path!r}")
  try:
    return av.open(path, mode, **kwargs)
  except (av.FFmpegError, OSError, ValueError) as error:
    raise VideoError(f"cannot open {path!r} with PyAV/FFmpeg: {error}") from error


def _video_stream(container, path):
  if not container.streams.video:
    raise VideoError(f"{os.fspath(path)!r} has no video stream")
  return container.streams.video[0]


def probe(path) -> VideoInfo:
  """Reads stream metadata of a media file (audio-only files give has_video=False and zero video fields)."""
  with _open(path) as container:
    has_audio = bool(container.streams.audio)
    duration = float(container.duration / av.time_base) if container.duration else 0.0
    if not container.streams.video:
      return VideoInfo(0.0, 0, 0, 0, has_audio, duration, has_video=False)
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:  # container does not record it (e.g. some mkv/avi): count packets, no decoding
      try:
        num_frames = sum(1 for packet in container.demux(stream) if packet.size)
      except av.FFmpegError as error:
        raise VideoError(f"cannot demux {os.fspath(path)!r}: {error}") from error
    if not duration and fps:
      duration = num_frames / fps
    return VideoInfo(
      fps, num_frames, int(stream.codec_context.width), int(stream.codec_context.height), has_audio, duration
    )


def _timed_frames(path) -> Iterator[tuple[fractions.Fraction, av.VideoFrame]]:
  """(presentation time in seconds, decoded frame) of the first video stream, in display order.

  A frame without a timestamp is placed one average frame interval after the previous one.
  """
  container = _open(path)
  try:
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    interval = 1 / fractions.Fraction(stream.average_rate or stream.guessed_rate or 25)
    last = None
    try:
      for frame in container.decode(stream):
        if frame.pts is not None and frame.time_base is not None:
          last = frame.pts * frame.time_base
        else:
          last = fractions.Fraction(0) if last is None else last + interval
        yield last, frame
    except av.FFmpegError as error:
      raise VideoError(f"cannot decode video of {os.fspath(path)!r}: {error}") from error
  finally:
    container.close()


def iter_frames(path, fps: float | None = None) -> Iterator[np.ndarray]:
  """Yields the frames of the first video stream one at a time as (H, W, 3) uint8 BGR arrays.

  fps=None: the stream's own frames. fps given (e.g. 25.0): resampled to that rate by presentation
  timestamp with THE rule of lipsync_jax.media.fps (nearest source frame to each output time k / fps, the
  earlier on a tie), so variable-frame-rate input works. Every yielded array is its own (a repeated source
  frame is converted again), so callers may write into the frames they get.
  """
  timed = _timed_frames(path)
  frames = (frame for _, frame in timed) if fps is None else fps_rule.resample(timed, fps)
  try:
    for frame in frames:
      yield frame.to_ndarray(format="bgr24")
  finally:
    timed.close()  # closes the container now when the caller stops early


def read_frames(path) -> tuple[np.ndarray, float]:
  """All frames as (N, H, W, 3) uint8 BGR and the stream's fps. Loads the whole clip: prefer iter_frames."""
  fps = probe(path).fps
  frames = list(iter_frames(path))
  if not frames:
    raise VideoError(f"{os.fspath(path)!r} decoded to zero video frames")
  return np.stack(frames), fps


def read_audio(path, sr: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
  """The first audio stream of any container (wav, mp3, mp4, ...) as mono float32 at `sr` Hz.

  Trailing encoder padding (AAC decodes whole 1024-sample frames) is cut to the stream's recorded duration,
  so a wav written with `VideoWriter.close(audio=wav)` reads back with its original length.
  """
  with _open(path) as container:
    if not container.streams.audio:
      raise VideoError(f"{os.fspath(path)!r} has no audio stream")
    stream = container.streams.audio[0]
    stream_seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
    chunks = []
    try:
      for frame in container.decode(stream):
        frame.pts = None  # let the resampler count samples; avoids timestamp-gap complaints
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
      chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as error:
      raise VideoError(f"cannot decode audio of {os.fspath(path)!r}: {error}") from error
  if not chunks:
    return np.zeros((0,), np.float32)
  wav = np.concatenate(chunks)
  if stream_seconds:  # decoders emit whole AAC frames: drop the encoder's end padding
    wav = wav[: int(round(stream_seconds * sr))]
  return np.ascontiguousarray(wav, dtype=np.float32)


def h264_encoder_name() -> str:
  """The H.264 encoder the bundled FFmpeg offers ('libx264' preferred, else 'h264')."""
  for name in _H264_ENCODERS:
    if name in av.codecs_available:
      try:
        av.codec.Codec(name, "w")
        return name
      except (av.FFmpegError, ValueError):
        continue
  raise VideoError(f"PyAV's FFmpeg has no H.264 encoder (tried {_H264_ENCODERS})")


class VideoWriter:
  """Streams BGR frames into an H.264 (yuv420p) video; `close(audio=...)` muxes an AAC track.

    with VideoWriter("out.mp4", fps=25, width=160, height=160) as writer:
      for frame in frames:
        writer.write(frame)          # (height, width, 3) uint8 BGR
      writer.close(audio=wav)        # optional; float32 mono in [-1, 1] at sample_rate

  Leaving the `with` block without `close` closes without audio; an exception inside it removes the
  partial output. `crf` sets x264 quality (lower = better; 18 is visually near-lossless), `threads=0`
  lets the encoder choose.
  """

  def __init__(
    self,
    path,
    fps: float,
    width: int,
    height: int,
    crf: int = 18,
    preset: str = "veryfast",
    threads: int = 0,
    audio_bitrate: int = 64000,
  ):
    if width <= 0 or height <= 0:
      raise VideoError(f"VideoWriter({os.fspath(path)!r}): bad frame size {width}x{height}")
    if not fps or fps <= 0:
      raise VideoError(f"VideoWriter({os.fspath(path)!r}): bad fps {fps}")
    self.path = os.fspath(path)
    self.width, self.height = int(width), int(height)
    self.frame_size = (self.width + self.width % 2, self.height + self.height % 2)  # (W, H) encoded
    self.rate = fractions.Fraction(fps).limit_denominator(1001)
    self.audio_bitrate = int(audio_bitrate)
    self.num_frames = 0
    self._closed = False
    self._format = _FORMAT_BY_EXTENSION.get(os.path.splitext(self.path)[1].lower(), "mp4")
    self._video_tmp = self.path + ".video-tmp"
    self._container = _open(self._video_tmp, "w", format=self._format)
    try:
      codec = h264_encoder_name()
      options = {}
      if codec == "libx264":
        # mbtree off: with it, x264's output varied between runs for identical input (measured); without
        # it the same frames give the same bits. Costs a little compression, none of the quality at a crf.
        options = {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
      self._stream = self._container.add_stream(codec, rate=self.rate, options=options)
      self._stream.width, self._stream.height = self.frame_size
      self._stream.pix_fmt = "yuv420p"
      self._stream.time_base = 1 / self.rate
      if threads:
        self._stream.codec_context.thread_count = int(threads)
    except Exception:
      self._abort()
      raise

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      self._abort()
    elif not self._closed:
      self.close()

  def write(self, frame_bgr: np.ndarray) -> None:
    """Encodes one (height, width, 3) uint8 BGR frame."""
    if self._closed:
      raise VideoError(f"VideoWriter({self.path!r}) is closed")
    frame_bgr = np.asarray(frame_bgr)
    if frame_bgr.shape != (self.height, self.width, 3) or frame_bgr.dtype != np.uint8:
      raise VideoError(
        f"VideoWriter({self.path!r}): expected a ({self.height}, {self.width}, 3) uint8 BGR "
        f"frame, got {frame_bgr.shape} {frame_bgr.dtype}"
      )
    pad_w, pad_h = self.frame_size[0] - self.width, self.frame_size[1] - self.height
    if pad_w or pad_h:
      frame_bgr = np.pad(frame_bgr, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    # BGR -> yuv420p (BT.601, limited range, as decoders assume) with OpenCV rather than swscale: swscale's
    # SIMD paths read past the end of the NumPy buffer, which made the encoded bits vary from run to run.
    yuv = cv2.cvtColor(np.ascontiguousarray(frame_bgr), cv2.COLOR_BGR2YUV_I420)
    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    frame.pts = self.num_frames
    self._container.mux(self._stream.encode(frame))
    self.num_frames += 1

  def close(self, audio: np.ndarray | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
    """Flushes the video and writes the final file, with `audio` (float32 mono) as an AAC track if given."""
    if self._closed:
      return
    self._closed = True
    try:
      self._container.mux(self._stream.encode(None))
      self._container.close()
      if self.num_frames == 0:
        raise VideoError(f"VideoWriter({self.path!r}): no frames were written")
      if audio is None:
        os.replace(self._video_tmp, self.path)
        return
      audio = np.asarray(audio, dtype=np.float32).reshape(-1)
      if not np.all(np.isfinite(audio)):
        raise VideoError(f"VideoWriter({self.path!r}): audio contains NaN/inf")
      final_tmp = self.path + ".mux-tmp"
      try:
        self._mux_with_audio(final_tmp, audio, int(sample_rate))
        os.replace(final_tmp, self.path)
      finally:
        if os.path.exists(final_tmp):
          os.remove(final_tmp)
    except Exception:
      self._abort()
      raise
    finally:
      if os.path.exists(self._video_tmp):
        os.remove(self._video_tmp)

  def _mux_with_audio(self, out_path: str, audio: np.ndarray, sample_rate: int) -> None:
    with _open(self._video_tmp) as source, _open(out_path, "w", format=self._format) as out:
      in_video = source.streams.video[0]
      out_video = out.add_stream_from_template(in_video)
      out_audio = out.add_stream("aac", rate=sample_rate, layout="mono")
      out_audio.bit_rate = self.audio_bitrate
      video_packets = (p for p in source.demux(in_video) if p.dts is not None)
      audio_packets = self._aac_packets(out_audio, audio, sample_rate)
      # Interleave by time so the muxer never buffers a whole stream.
      video_next, audio_next = next(video_packets, None), next(audio_packets, None)
      while video_next is not None or audio_next is not None:
        take_video = audio_next is None or (
          video_next is not None
          and video_next.dts * video_next.time_base <= audio_next.dts * audio_next.time_base
        )
        if take_video:
          video_next.stream = out_video
          out.mux(video_next)
          video_next = next(video_packets, None)
        else:
          out.mux(audio_next)
          audio_next = next(audio_packets, None)

  @staticmethod
  def _aac_packets(stream, audio: np.ndarray, sample_rate: int):
    chunk = 1024  # AAC frame size
    for start in range(0, audio.size, chunk):
      frame = av.AudioFrame.from_ndarray(audio[None, start : start + chunk], format="fltp", layout="mono")
      frame.sample_rate = sample_rate
      frame.pts = start
      frame.time_base = fractions.Fraction(1, sample_rate)
      yield from stream.encode(frame)
    yield from stream.encode(None)

  def _abort(self) -> None:
    self._closed = True
    try:
      self._container.close()
    except Exception:  # noqa: BLE001 - best effort cleanup of a failed write
      pass
    for leftover in (self._video_tmp, self.path + ".mux-tmp"):
      if os.path.exists(leftover):
        os.remove(leftover)
