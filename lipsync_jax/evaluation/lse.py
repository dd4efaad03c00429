"""LSE-D / LSE-C / AV offset with SyncNet v2 (joonson/syncnet_python, as the Wav2Lip paper evaluates).

Owns the LSE protocol (spec section 10): every frame at 25 fps (THE fps rule: lipsync_jax.media.fps)
resized to 224x224 (BGR, 0..255), audio at 16 kHz as int16-scaled samples -> python_speech_features.mfcc
defaults (13 coefficients, 10 ms step) -> (13, T). Real videos: face_crop=True detects the face and crops
it the way syncnet_python's face-track pipeline does (a 2.8x box-size square, padded with grey 110).
n = min(frames, floor(samples / 640)); windows v = 0 .. n-6 (syncnet_python iterates `range(0, n - 5)`):
lips = frames v..v+4, audio = MFCC steps 4v .. 4v+19; then the offset search of
lipsync_jax.evaluation.offsets (euclidean): LSE-D = min(mdist), LSE-C = median(mdist) - min(mdist).

Two ways to read the frames (`protocol`):
  "reference" (default): what the published numbers (Wav2Lip's scores_LSE / syncnet_python) measure. The
      reference script extracts frames with `ffmpeg -i VIDEO -threads 1 -f image2 %06d.jpg` (JPEG at the
      CLI's default quality) and reads them back with cv2.imread; that lossy round trip moves LSE-D by a
      few percent (2.0 % measured: 640x360 clip, random weights). It is done here in process, bit-exact
      (`CliJpegRoundTrip`): the CLI's output filter graph (format negotiation to mjpeg's pixel formats at
      full range, libavfilter's bicubic auto-scale) and its mjpeg encoder at the library defaults (no -q:v:
      200 kb/s per-frame rate control, qmin 2, qmax 31, one thread), then cv2.imdecode.
      tests/test_lse_reference.py runs the real CLI and compares.
  "direct": frames decoded straight to BGR, no JPEG round trip. NOT comparable to published LSE numbers.
Audio is the same for both: PyAV's resampler to 16 kHz mono, rounded to int16 as the CLI's
`-ac 1 -acodec pcm_s16le -ar 16000` + scipy.io.wavfile.read give (equal on every sample a window reads).
For 25 fps input the reference frames are the CLI's frames; other rates are first resampled to 25 fps by
the fps rule (the reference script scores the source rate as if it were 25 fps).

  SyncNetV2Features(variables, width_multiplier, batch_size)   features on the shared BatchRunner
  lse_from_arrays(frames_224, wav_16k, features) -> {lse_d, lse_c, offset, windows}   in-memory clips
  load_lse_inputs(video_path, face_crop, detector, protocol) -> (frames_224, wav_16k)
  evaluate_lse(videos, syncnet_path, ..., protocol) -> {videos, mean, failed}        the CLI's work
"""

from __future__ import annotations

import concurrent.futures
import fractions
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import av
import cv2
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import fs
from lipsync_jax.evaluation import offsets
from lipsync_jax.evaluation.faces import EvaluationError, detect_with_cuts, tracked_boxes
from lipsync_jax.inference.runner import BatchRunner
from lipsync_jax.media import detectors

LIP_SIZE = 224
FPS = 25.0
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
MFCC_STEPS_PER_FRAME = 4
MFCC_WINDOW = 20
CROP_SCALE = 0.4  # syncnet_python crop_video's crop_scale
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
NO_PADS = (0, 0, 0, 0)
PROTOCOLS = ("reference", "direct")
DEFAULT_PROTOCOL = "reference"

log = logging.getLogger(__name__)


def mfcc_features(wav_16k: np.ndarray) -> np.ndarray:
  """python_speech_features.mfcc defaults on int16-scaled 16 kHz samples (as wavfile.read gives): (13, T)."""
  import python_speech_features

  samples = np.clip(np.round(np.asarray(wav_16k, np.float64) * 32768.0), -32768, 32767)
  return np.asarray(python_speech_features.mfcc(samples, 16000), np.float64).T


def num_lse_windows(num_frames: int, num_samples: int) -> int:
  """syncnet_python: n = min(frames, floor(samples/640)); windows v in range(0, n - 5)."""
  return max(0, min(num_frames, math.floor(num_samples / SAMPLES_PER_FRAME)) - 5)


class SyncNetV2Features:
  """SyncNet v2 lip and audio features, each on one BatchRunner (fixed batch shape, last batch padded)."""

  def __init__(self, variables: Any, width_multiplier: float = 1.0, batch_size: int = 20):
    from lipsync_jax.models.syncnet_v2 import SyncNetV2

    model = SyncNetV2(width_multiplier=width_multiplier)
    self.batch_size = int(batch_size)
    self.lips = BatchRunner(lambda v, x: model.apply(v, lips=x.astype(jnp.float32)), variables, batch_size)
    self.audio = BatchRunner(lambda v, x: model.apply(v, mfcc=x), variables, batch_size)

  def features_for(
    self, frames_224: np.ndarray, mfcc: np.ndarray, num_windows: int
  ) -> tuple[np.ndarray, np.ndarray]:
    """frames (N,224,224,3) uint8 BGR, mfcc (13,T), windows v < num_windows -> (video_feats, audio_feats)."""
    if num_windows <= 0:
      raise EvaluationError("too short for LSE: need at least 6 frames (0.24 s) of video and audio")
    frames_224 = np.asarray(frames_224)
    video = self.lips.map(num_windows, lambda rows: (np.stack([frames_224[v : v + 5] for v in rows]),))
    audio = self.audio.map(
      num_windows,
      lambda rows: (
        np.stack([mfcc[:, MFCC_STEPS_PER_FRAME * v : MFCC_STEPS_PER_FRAME * v + MFCC_WINDOW] for v in rows])[
          ..., None
        ].astype(np.float32),
      ),
    )
    return video, audio


def syncnet_face_crop(
  frame: np.ndarray, box: Sequence[float], crop_scale: float = CROP_SCALE, size: int = LIP_SIZE
) -> np.ndarray:
  """syncnet_python's face-track crop (reconstructed): a 2.8*s square around the box (s = half its longer
  side), reaching 1*s above and 1.8*s below the box centre, frame padded with 110 -> size x size."""
  x1, y1, x2, y2 = (float(v) for v in box)
  half = max(x2 - x1, y2 - y1) / 2
  pad = int(half * (1 + 2 * crop_scale))
  padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(110, 110, 110))
  cy, cx = (y1 + y2) / 2 + pad, (x1 + x2) / 2 + pad
  face = padded[
    int(cy - half) : int(cy + half * (1 + 2 * crop_scale)),
    int(cx - half * (1 + crop_scale)) : int(cx + half * (1 + crop_scale)),
  ]
  return cv2.resize(face, (size, size))


def _check_protocol(protocol: str) -> None:
  if protocol not in PROTOCOLS:
    raise EvaluationError(
      f"unknown LSE protocol {protocol!r}; use 'reference' (the published numbers' frame reading, default) "
      "or 'direct' (no JPEG round trip, not comparable to published numbers)"
    )


class CliJpegRoundTrip:
  """`ffmpeg -i VIDEO -threads 1 -f image2 DIR/%06d.jpg` then `cv2.imread`, one frame at a time, in process.

  Hand-written on PyAV rather than running the ffmpeg binary: PyAV ships the same FFmpeg libraries, so the
  JPEGs are byte-identical to the CLI's (all but the encoder-version comment segment; measured and tested
  in tests/test_lse_reference.py), with no binary to install, no temporary directory of JPEGs and no
  process per video.

  It mirrors what fftools sets up when no option says otherwise: each decoded frame enters a filter graph
  ending in `format=pix_fmts=<mjpeg's pixel formats>:color_ranges=pc` (libavfilter negotiates the format
  and auto-inserts its bicubic scale filter, e.g. limited-range yuv420p -> full-range yuv420p); the mjpeg
  encoder keeps the library defaults the CLI leaves alone without -q:v / -b:v (bit_rate 200k: a qscale per
  frame from rate control over the sequence, qmin 2, qmax 31), one thread (-threads 1), time base 1 / fps.
  The rate control makes each JPEG depend on the frames before it: feed one video's frames in order to one
  instance. A frame whose size or format changes mid-stream is scaled to the first frame's size, as the
  encoder that is already open in the CLI needs (not compared with the CLI).
  """

  def __init__(self, fps: float = FPS):
    self.rate = fractions.Fraction(fps).limit_denominator(1001)
    self.frames = 0
    self._key: tuple | None = None
    self._graph: av.filter.Graph | None = None
    self._encoder: av.VideoCodecContext | None = None

  def _configure(self, frame: av.VideoFrame, key: tuple) -> None:
    graph = av.filter.Graph()
    nodes = [
      graph.add(
        "buffer",
        video_size=f"{frame.width}x{frame.height}",
        pix_fmt=frame.format.name,
        time_base=str(1 / self.rate),
        pixel_aspect="0/1",
        colorspace=str(int(frame.colorspace)),
        range=str(int(frame.color_range)),
      )
    ]
    size = None if self._encoder is None else (self._encoder.width, self._encoder.height)
    if size is not None and size != (frame.width, frame.height):
      nodes.append(graph.add("scale", f"w={size[0]}:h={size[1]}:flags=bicubic"))
    formats = "|".join(f.name for f in av.codec.Codec("mjpeg", "w").video_formats)
    nodes.append(graph.add("format", f"pix_fmts={formats}:color_ranges=pc"))
    nodes.append(graph.add("buffersink"))
    for a, b in zip(nodes, nodes[1:]):
      a.link_to(b)
    graph.configure()
    self._graph, self._key = graph, key

  def _open_encoder(self, frame: av.VideoFrame) -> None:
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = frame.format.name
    encoder.color_range = frame.color_range
    encoder.time_base = 1 / self.rate
    encoder.framerate = self.rate
    encoder.thread_count = 1
    self._encoder = encoder

  def jpeg(self, frame: av.VideoFrame) -> bytes:
    """The JPEG file the CLI writes for the next decoded frame of the video."""
    key = (frame.width, frame.height, frame.format.name, int(frame.colorspace), int(frame.color_range))
    if key != self._key:
      self._configure(frame, key)
    self._graph.push(frame)
    out = self._graph.pull()
    if self._encoder is None:
      self._open_encoder(out)
    out.pts, out.time_base = self.frames, 1 / self.rate
    packets = self._encoder.encode(out)
    if len(packets) != 1:  # mjpeg is intra-only with no delay on one thread: one packet per frame
      raise RuntimeError(f"mjpeg encoder gave {len(packets)} packets for frame {self.frames}")
    self.frames += 1
    return bytes(packets[0])

  def __call__(self, frame: av.VideoFrame) -> np.ndarray:
    """The next decoded frame -> the (H, W, 3) uint8 BGR image cv2.imread gives for the CLI's JPEG of it."""
    return cv2.imdecode(np.frombuffer(self.jpeg(frame), np.uint8), cv2.IMREAD_COLOR)

  def bgr(self, image: np.ndarray) -> np.ndarray:
    """The round trip of a BGR image (even sides) given as the limited-range yuv420p a video stores."""
    yuv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2YUV_I420)
    return self(av.VideoFrame.from_ndarray(yuv, format="yuv420p"))


def decoded_frames(video_path: str, fps: float = FPS) -> Iterator[av.VideoFrame]:
  """video.iter_frames(video_path, fps) before its BGR conversion: the decoded PyAV frames (the stream's own
  pixel format), which the CLI's JPEG encoder sees. A repeated source frame is the same object."""
  from lipsync_jax.media import video

  return video.iter_decoded(video_path, fps=fps)


def load_lse_inputs(
  video_path: str,
  face_crop: bool = False,
  detector: Any = detectors.DEFAULT,
  protocol: str = DEFAULT_PROTOCOL,
) -> tuple[np.ndarray, np.ndarray]:
  """Frames as SyncNet v2 sees them (224x224 at 25 fps) and the 16 kHz audio of a video file.

  face_crop=False: whole frames resized (generated face videos, the LRS2 protocol of the Wav2Lip paper).
  face_crop=True: faces tracked and cropped the way syncnet_python's pipeline crops face tracks (for real
  videos with a single speaker). protocol="reference" (default): frames through the reference script's
  JPEG round trip (CliJpegRoundTrip) before the resize, as the published numbers; with face_crop the 224
  crops go through it, as syncnet_python's scoring step re-reads its cropped face-track video (its XVID
  encode of that video is not reproduced). protocol="direct": no round trip, not comparable to published
  numbers. `video_path` may be remote (gs://...): it is read from a temporary local copy.
  """
  _check_protocol(protocol)
  video_path = os.fspath(video_path)
  if not fs.isfile(video_path):
    raise EvaluationError(f"video {video_path!r} not found")
  with fs.local_copy(video_path) as local:  # decoders read local files (a gs:// video: a temporary copy)
    return _load_local_lse_inputs(local, video_path, face_crop, detector, protocol)


def _load_local_lse_inputs(
  local: str, video_path: str, face_crop: bool, detector: Any, protocol: str
) -> tuple[np.ndarray, np.ndarray]:
  """load_lse_inputs on the local file `local`; messages name `video_path` (the user's path)."""
  from lipsync_jax.media import video

  info = video.probe(local)
  if not info.has_audio:
    raise EvaluationError(f"video {video_path!r} has no audio track; LSE needs the speech audio")
  if abs(info.fps - FPS) > 0.01:
    log.warning("%s: %.3f fps, resampling to 25 fps (the metric assumes 25)", video_path, info.fps)
  if face_crop:
    # Pass 1 detects (streamed), pass 2 crops: a long video is never held at full resolution. THE face
    # track, but with no pads: syncnet_python crops around the raw detector boxes (its own 2.8x square,
    # syncnet_face_crop), not around Wav2Lip's padded ones; fill + 5-frame smoothing as everywhere.
    raw, cuts = detect_with_cuts(video.iter_frames(local, fps=FPS), detector)
    try:
      boxes, _ = tracked_boxes(raw, info.width, info.height, pads=NO_PADS, cuts=cuts)
    except EvaluationError as e:
      raise EvaluationError(f"video {video_path!r}: {e} (--face_crop)") from e
    crops = (syncnet_face_crop(frame, box) for frame, box in zip(video.iter_frames(local, fps=FPS), boxes))
    if protocol == "reference":
      crops = map(CliJpegRoundTrip(FPS).bgr, crops)
    frames = list(crops)
  elif protocol == "reference":
    # Decoding + JPEG encoding on this thread, JPEG decoding + resize on a worker (OpenCV releases the GIL):
    # measured 30 % faster than one after the other (640x360 and 1280x720 clips, 2 busy cores).
    jpeg = CliJpegRoundTrip(FPS)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      futures = [pool.submit(_imread_224, jpeg.jpeg(frame)) for frame in decoded_frames(local, FPS)]
      frames = [future.result() for future in futures]
  else:
    frames = [cv2.resize(f, (LIP_SIZE, LIP_SIZE)) for f in video.iter_frames(local, fps=FPS)]
  if not frames:
    raise EvaluationError(f"video {video_path!r} has no decodable video frames")
  wav = video.read_audio(local, sr=16000)
  return np.stack(frames), wav


def _imread_224(jpeg: bytes) -> np.ndarray:
  """The reference script's `cv2.resize(cv2.imread(jpg), (224, 224))`, on the file's bytes."""
  return cv2.resize(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), (LIP_SIZE, LIP_SIZE))


def lse_from_arrays(frames_224: np.ndarray, wav_16k: np.ndarray, features: SyncNetV2Features) -> dict:
  """LSE-D, LSE-C and AV offset of one clip given as 25 fps 224x224 BGR frames and 16 kHz audio."""
  mfcc = mfcc_features(wav_16k)
  video_feats, audio_feats = features.features_for(
    frames_224, mfcc, num_lse_windows(len(frames_224), len(wav_16k))
  )
  summary = offsets.summarize_offsets(offsets.offset_distances(video_feats, audio_feats), offsets.VSHIFT)
  return {
    "lse_d": summary["min_dist"],
    "lse_c": summary["confidence"],
    "offset": summary["offset"],
    "windows": int(len(video_feats)),
  }


def lse_scores(
  video_path: str,
  features: SyncNetV2Features,
  face_crop: bool = False,
  detector: Any = detectors.DEFAULT,
  protocol: str = DEFAULT_PROTOCOL,
) -> dict:
  """One video file's LSE-D, LSE-C and AV offset (protocol: see load_lse_inputs)."""
  frames, wav = load_lse_inputs(video_path, face_crop, detector, protocol)
  return {"video": video_path, **lse_from_arrays(frames, wav, features)}


def collect_videos(items: Sequence[str]) -> list[str]:
  """Video files named directly, and those found (recursively) under named directories."""
  paths = []
  for item in items:
    if fs.isdir(item):
      found = [p for p in fs.glob(os.path.join(item, "**", "*")) if p.lower().endswith(VIDEO_EXTENSIONS)]
      if not found:
        raise EvaluationError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {item!r}")
      paths.extend(found)
    else:
      paths.append(item)
  return paths


def load_features(syncnet_path: str, batch_size: int = 20) -> SyncNetV2Features:
  """SyncNet v2 features from a `syncnet_v2.model` file (lipsync_jax.weights, kind 'syncnet_v2')."""
  from lipsync_jax import weights

  if not fs.exists(syncnet_path):
    raise EvaluationError(
      f"SyncNet v2 weights {syncnet_path!r} not found; download syncnet_v2.model "
      "(joonson/syncnet_python) and pass its path with --syncnet"
    )
  variables, meta = weights.load(syncnet_path, "syncnet_v2")
  return SyncNetV2Features(jax.tree.map(np.asarray, variables), meta["width_multiplier"], batch_size)


def evaluate_lse(
  videos: Sequence[str],
  syncnet_path: str,
  batch_size: int = 20,
  progress: bool = True,
  face_crop: bool = False,
  detector: Any = detectors.DEFAULT,
  protocol: str = DEFAULT_PROTOCOL,
) -> dict:
  """Score every video; unreadable ones are skipped and listed. Returns {'videos', 'mean', 'failed',
  'protocol'}. protocol="reference" reads frames as the published numbers do; "direct" is not comparable."""
  from tqdm import tqdm

  _check_protocol(protocol)
  features = load_features(syncnet_path, batch_size)
  rows, failed = [], []
  for path in tqdm(collect_videos(videos), desc="LSE", disable=not progress, unit="video"):
    try:
      rows.append(lse_scores(path, features, face_crop, detector, protocol))
    except (ValueError, OSError) as e:  # VideoError / AudioError / EvaluationError are ValueErrors
      failed.append({"video": path, "error": str(e)})
      log.warning("skipping %s: %s", path, e)
  mean = {k: float(np.mean([r[k] for r in rows])) for k in ("lse_d", "lse_c", "offset")} if rows else {}
  return {"videos": rows, "mean": mean, "failed": failed, "protocol": protocol}


def format_table(result: dict) -> str:
  lines = [f"{'video':<48} {'LSE-D':>8} {'LSE-C':>8} {'offset':>7}"]
  for r in result["videos"]:
    name = os.path.basename(r["video"])[-48:]
    lines.append(f"{name:<48} {r['lse_d']:8.3f} {r['lse_c']:8.3f} {r['offset']:7d}")
  if result["mean"]:
    m = result["mean"]
    lines.append(
      f"{'mean (' + str(len(result['videos'])) + ' videos)':<48} {m['lse_d']:8.3f} "
      f"{m['lse_c']:8.3f} {m['offset']:7.2f}"
    )
  for f in result["failed"]:
    lines.append(f"FAILED {f['video']}: {f['error']}")
  if result.get("protocol") == "direct":
    lines.append("protocol direct: no JPEG round trip, NOT comparable to published LSE numbers")
  return "\n".join(lines)
