"""Video and container I/O on PyAV (its bundled FFmpeg; no ffmpeg binary needed).

Owns: `probe` (fps, frame count, size, audio presence, duration), streaming frame decoding (`iter_frames`,
`read_frames`; frames are (H, W, 3) uint8 **BGR**, like OpenCV; `iter_decoded`: the PyAV frames before that
conversion; `iter_frames(path, fps=25.0)` resamples by presentation timestamp with the one rule of
lipsync_jax.media.fps), damage-tolerant decoding (`DecodeReport`, below), audio extraction from any container
(`read_audio` -> 16 kHz mono float32 via PyAV's AudioResampler) and `VideoWriter`, which encodes H.264
(yuv420p) frame by frame and muxes an AAC audio track when it is closed. Errors are `VideoError`
(a ValueError) naming the file and what went wrong.

Damaged media (what ffmpeg tolerates, we tolerate): decoding goes packet by packet (`_decode`). A packet
the decoder rejects is skipped and counted, a frame the decoder flags corrupt (concealed) is kept and
counted, a demuxer error mid-file (a truncated or cut file) stops decoding and keeps what came before, and
a decoder error at the final flush is counted. Audio keeps its timing: a span lost to damage (rejected
packets, or data the demuxer dropped: a timestamp jump of more than `MIN_AUDIO_GAP`) is filled with
silence by presentation timestamp, so every later sample stays at its time (lip-sync is audio/video sync).
Video frames lost to damage are skipped at the native rate; at a fixed rate (`iter_frames(fps=25.0)`) the
fps rule fills them from the nearest decoded frame, and a lost start of the stream shows the first
decodable frame from the stream's start time, so later frames stay at their time. The damage met is
counted in a `DecodeReport` (pass one to fill it) and logged as ONE warning per stream per file
(logger `lipsync_jax.media.video`). A file with no decodable frame / sample left raises `VideoError`.

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
import logging
import os
from collections.abc import Iterator

import av
import cv2
import numpy as np

from lipsync_jax.media import fps as fps_rule

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16000
# Audio timestamp jumps up to this are jitter (container timestamps are rounded, e.g. to 1 ms in webm);
# larger ones are data lost to damage, filled with silence. A quarter of a 25 fps frame.
MIN_AUDIO_GAP = fractions.Fraction(1, 100)
# Audio timestamps going back by up to this are damage (a packet decoded too long) and are cut; a larger
# step back is a discontinuity of the timestamps (not of the audio) and is played through.
MAX_AUDIO_OVERLAP = fractions.Fraction(1)
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


@dataclasses.dataclass
class DecodeReport:
  """The damage one decoding pass over one stream of a file met; the decode functions fill it.

  `damage` is the one number callers count (skipped + concealed packets, timestamp gaps, truncation).
  """

  path: str = ""
  stream: str = ""  # 'video' | 'audio'
  packets: int = 0  # packets with data handed to the decoder
  damaged_packets: int = 0  # packets the decoder rejected: skipped, as ffmpeg does
  corrupt_frames: int = 0  # frames the decoder delivered flagged corrupt (concealed): kept
  gaps: int = 0  # audio: timestamp jumps (data the demuxer dropped) filled with silence
  frames_lost: int = 0  # video, damaged streams only: packets that gave no frame (an estimate)
  samples_lost: int = 0  # audio: samples (at the output rate) filled with silence where data was lost
  truncated: bool = False  # the demuxer failed mid-file: decoding stopped there, what came before is kept
  first_error: str | None = None
  quiet: bool = False  # set by the caller: no log warning for this pass (e.g. a second pass over a file)
  _warned: bool = dataclasses.field(default=False, repr=False)

  @property
  def damage(self) -> int:
    return self.damaged_packets + self.corrupt_frames + self.gaps + int(self.truncated)

  def note(self, message: str) -> None:
    if self.first_error is None:
      self.first_error = message

  def as_dict(self) -> dict:
    skip = ("quiet", "_warned")
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

  def warn(self) -> None:
    """Logs the damage as one warning (once per report; nothing for an undamaged stream or quiet=True)."""
    if not self.damage or self.quiet or self._warned:
      return
    self._warned = True
    lost = (
      f"{self.frames_lost} frames lost"
      if self.stream == "video"
      else f"{self.samples_lost} samples filled with silence"
      if self.samples_lost
      else "no time lost"
    )
    log.warning(
      "%s: damaged %s stream decoded as ffmpeg does: %d of %d packets skipped, %d frames concealed, %d gaps, "
      "%s%s; first error: %s",
      self.path,
      self.stream,
      self.damaged_packets,
      self.packets,
      self.corrupt_frames,
      self.gaps,
      lost,
      ", truncated" if self.truncated else "",
      self.first_error,
    )


def _seconds(pts, time_base) -> fractions.Fraction | None:
  if pts is None or time_base is None:
    return None
  return pts * fractions.Fraction(time_base)


@dataclasses.dataclass
class _Lost:
  """Packets the decoder rejected since the previous decoded frame."""

  start: fractions.Fraction | None = None  # earliest presentation time among them (None: unknown)
  seconds: fractions.Fraction = fractions.Fraction(0)  # their summed durations (0 where unknown)


def _decode(container, stream, report: DecodeReport) -> Iterator[tuple[av.frame.Frame, _Lost | None]]:
  """(frame, packets lost just before it or None) of `stream`, decoded packet by packet as ffmpeg does.

  Hand-written rather than `container.decode(stream)`, which stops at the first error: a rejected packet
  (av.FFmpegError from the decoder: InvalidDataError and the rest) is counted and skipped, a demuxer
  error ends the stream (truncated file; the decoder is still flushed), an error at the flush is counted.
  """
  codec = stream.codec_context
  lost: _Lost | None = None
  packets = container.demux(stream)
  flushing = False
  while True:
    if not flushing:
      try:
        packet = next(packets, None)
      except av.FFmpegError as error:
        report.truncated = True
        report.note(f"demuxer stopped: {error}")
        packet = None
      if packet is None:
        flushing = True
      elif not packet.size:
        continue  # PyAV's end-of-stream marker; we flush once ourselves below
    try:
      if flushing:
        frames = codec.decode(None)
      else:
        report.packets += 1
        frames = codec.decode(packet)
    except av.FFmpegError as error:
      report.damaged_packets += 1
      if flushing:
        report.note(f"at the decoder flush: {error}")
        return
      when = _seconds(packet.pts, packet.time_base)
      report.note(f"packet at {float(when) if when is not None else '?'} s: {error}")
      lost = lost or _Lost()
      if when is not None and (lost.start is None or when < lost.start):
        lost.start = when
      if packet.duration and packet.time_base is not None:
        lost.seconds += packet.duration * fractions.Fraction(packet.time_base)
      continue
    for frame in frames:
      if frame.time_base is None:  # frames drained at the flush come without one
        frame.time_base = stream.time_base
      if frame.is_corrupt:
        report.corrupt_frames += 1
        when = _seconds(frame.pts, frame.time_base)
        report.note(f"frame at {float(when) if when is not None else '?'} s decoded with errors (concealed)")
      yield frame, lost
      lost = None
    if flushing:
      return


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
        for packet in container.demux(stream):
          num_frames += bool(packet.size)
      except av.FFmpegError as error:  # damaged / truncated: the packets before the error are what decodes
        if not num_frames:
          raise VideoError(f"cannot demux {os.fspath(path)!r}: {error}") from error
    if not duration and fps:
      duration = num_frames / fps
    return VideoInfo(
      fps, num_frames, int(stream.codec_context.width), int(stream.codec_context.height), has_audio, duration
    )


def _timed_frames(
  path, report: DecodeReport | None = None, fill_start: bool = False
) -> Iterator[tuple[fractions.Fraction, av.VideoFrame]]:
  """(presentation time in seconds, decoded frame) of the first video stream, in display order.

  A frame without a timestamp is placed one average frame interval after the previous one. Damage is
  skipped and counted in `report` (see the module docstring). fill_start: when packets before the first
  decodable frame were lost, that frame is also given at the stream's start time first, so a resampler
  shows it from there and later frames keep their time.
  """
  report = report if report is not None else DecodeReport()
  report.path, report.stream = os.fspath(path), "video"
  container = _open(path)
  frames = 0
  try:
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    interval = 1 / fractions.Fraction(stream.average_rate or stream.guessed_rate or 25)
    start = _seconds(stream.start_time, stream.time_base)
    last = None
    for frame, lost in _decode(container, stream, report):
      t = _seconds(frame.pts, frame.time_base)
      if t is None:
        t = fractions.Fraction(0) if last is None else last + interval
      if last is None and fill_start and lost is not None:
        lead = start if start is not None else lost.start
        if lead is not None and lead < t:
          yield lead, frame
      last = t
      frames += 1
      yield t, frame
    if stream.frames and 0 < report.packets < stream.frames and not report.truncated:  # ended early
      report.truncated = True
      report.note(f"the stream ends after {report.packets} of the {stream.frames} packets its header lists")
    if not frames and report.damage:
      raise VideoError(
        f"no decodable video frame in {os.fspath(path)!r}: {report.damaged_packets} of {report.packets} "
        f"packets damaged{', truncated' if report.truncated else ''} (first error: {report.first_error})"
      )
  finally:
    container.close()
    if report.damage:
      report.frames_lost = max(0, report.packets - frames)
    report.warn()


def iter_decoded(
  path, fps: float | None = None, report: DecodeReport | None = None
) -> Iterator[av.VideoFrame]:
  """`iter_frames` before the BGR conversion: the decoded PyAV frames, for callers that convert themselves.

  At a given fps a source frame shown by several output frames is yielded that many times (the same
  object): do not modify them. The container closes when the iterator is exhausted or closed.
  """
  timed = _timed_frames(path, report, fill_start=fps is not None)
  try:
    yield from ((frame for _, frame in timed) if fps is None else fps_rule.resample(timed, fps))
  finally:
    timed.close()  # closes the container now when the caller stops early


def iter_frames(path, fps: float | None = None, report: DecodeReport | None = None) -> Iterator[np.ndarray]:
  """Yields the frames of the first video stream one at a time as (H, W, 3) uint8 BGR arrays.

  fps=None: the stream's own frames. fps given (e.g. 25.0): resampled to that rate by presentation
  timestamp with THE rule of lipsync_jax.media.fps (nearest source frame to each output time k / fps, the
  earlier on a tie), so variable-frame-rate input works. Every yielded array is its own (a repeated source
  frame is converted again), so callers may write into the frames they get.

  Damaged input decodes as ffmpeg does (module docstring): frames lost to damage are skipped at the
  native rate and filled from the nearest decoded frame at a given fps; `report` (a DecodeReport) is
  filled with what was met. No decodable frame in a damaged stream raises VideoError.
  """
  frames = iter_decoded(path, fps, report)
  try:
    for frame in frames:
      yield frame.to_ndarray(format="bgr24")
  finally:
    frames.close()


def read_frames(path, report: DecodeReport | None = None) -> tuple[np.ndarray, float]:
  """All frames as (N, H, W, 3) uint8 BGR and the stream's fps. Loads the whole clip: prefer iter_frames."""
  fps = probe(path).fps
  frames = list(iter_frames(path, report=report))
  if not frames:
    raise VideoError(f"{os.fspath(path)!r} decoded to zero video frames")
  return np.stack(frames), fps


class _Resampled:
  """Resampled audio chunks and their sample count; `flush` ends a continuous run (before a gap)."""

  def __init__(self, sr: int):
    self.sr, self.chunks, self.count, self.filled = sr, [], 0, 0
    self._resampler = None

  def _take(self, frames) -> None:
    for out in frames:
      samples = out.to_ndarray().reshape(-1)
      self.chunks.append(samples)
      self.count += samples.size

  def add(self, frame: av.AudioFrame) -> None:
    if self._resampler is None:
      self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sr)
    frame.pts = None  # let the resampler count samples; avoids timestamp-gap complaints
    self._take(self._resampler.resample(frame))

  def flush(self) -> None:
    if self._resampler is not None:
      self._take(self._resampler.resample(None))
      self._resampler = None

  def silence(self, samples: int) -> None:
    if samples > 0:
      self.chunks.append(np.zeros((samples,), np.float32))
      self.count += samples
      self.filled += samples

  def truncate(self, samples: int) -> None:
    samples = max(samples, 0)
    while self.count > samples:
      last = self.chunks.pop()
      self.count -= last.size
      if self.count < samples:
        self.chunks.append(last[: samples - self.count])
        self.count = samples


def read_audio(path, sr: int = DEFAULT_SAMPLE_RATE, report: DecodeReport | None = None) -> np.ndarray:
  """The first audio stream of any container (wav, mp3, mp4, ...) as mono float32 at `sr` Hz.

  Trailing encoder padding (AAC decodes whole 1024-sample frames) is cut to the stream's recorded duration,
  so a wav written with `VideoWriter.close(audio=wav)` reads back with its original length.

  Damaged input decodes as ffmpeg does (module docstring) and keeps its timing: spans lost to damage
  become silence placed by presentation timestamp, so later samples stay at their time. `report` (a
  DecodeReport) is filled with what was met. No decodable sample in a damaged stream raises VideoError.
  """
  report = report if report is not None else DecodeReport()
  report.path, report.stream = os.fspath(path), "audio"
  out = _Resampled(sr)
  try:
    with _open(path) as container:
      if not container.streams.audio:
        raise VideoError(f"{os.fspath(path)!r} has no audio stream")
      stream = container.streams.audio[0]
      stream_seconds = _seconds(stream.duration, stream.time_base) or 0
      start = _seconds(stream.start_time, stream.time_base)
      origin = end = None  # time of output sample 0; end of what the resampler was fed
      for frame, lost in _decode(container, stream, report):
        t = _seconds(frame.pts, frame.time_base)
        if origin is None:
          origin = t if t is not None else fractions.Fraction(0)
          if lost is not None:  # lost before the first decodable frame: keep that frame at its time
            lead = start if start is not None else lost.start
            if t is None:
              lead = origin - lost.seconds
            if lead is not None and lead < origin:
              origin = lead
          end = origin
        if t is None:
          t = end + (lost.seconds if lost is not None else 0)
        jump = t - end
        if abs(jump) > MIN_AUDIO_GAP:
          out.flush()
          if jump > 0:  # lost data: silence up to this frame's time
            out.silence(int(round((t - origin) * sr)) - out.count)
          elif -jump <= MAX_AUDIO_OVERLAP:  # a damaged packet decoded too long: cut back to this frame's time
            out.truncate(int(round((t - origin) * sr)))
          else:  # a timestamp discontinuity (e.g. a reset), not damage: continue seamlessly
            origin += jump
          if -jump <= MAX_AUDIO_OVERLAP and lost is None:  # no rejected packet explains it
            report.gaps += 1
            report.note(f"audio timestamps jump by {float(jump):+.3f} s at {float(t):.3f} s (damaged data)")
          end = t
        out.add(frame)
        end += fractions.Fraction(frame.samples, frame.sample_rate)
      out.flush()
      report.samples_lost = out.filled
    if not out.count and report.damage:
      raise VideoError(
        f"no decodable audio in {os.fspath(path)!r}: {report.damaged_packets} of {report.packets} packets "
        f"damaged{', truncated' if report.truncated else ''} (first error: {report.first_error})"
      )
  except av.FFmpegError as error:  # not a packet's damage (those are skipped): e.g. the resampler
    raise VideoError(f"cannot decode audio of {os.fspath(path)!r}: {error}") from error
  finally:
    report.warn()
  if not out.chunks:
    return np.zeros((0,), np.float32)
  wav = np.concatenate(out.chunks)
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
