"""Evaluation: LSE-D / LSE-C with SyncNet v2, sync scoring with our own expert, mouth PSNR / SSIM.

Owns the metric definitions of spec section 10 (joonson/syncnet_python as used by the Wav2Lip paper), the
conversion of the public `syncnet_v2.model` weights, and three CLIs:

  python -m lipsync_jax.evaluate lse   --videos DIR_OR_FILES... --syncnet syncnet_v2.model [--json out.json]
                                       [--face_crop]
  python -m lipsync_jax.evaluate sync  --video V --expert CKPT [--plot out.png] [--json out.json]
  python -m lipsync_jax.evaluate recon --generated V1 --reference V2 [--json out.json]

LSE protocol (generated mp4s scored directly, as the Wav2Lip LRS2 evaluation does): every frame resized to
224x224 (BGR, 0..255), audio at 16 kHz as int16-scaled samples -> python_speech_features.mfcc defaults
(13 coefficients, 10 ms step) -> (13, T). Real videos: --face_crop detects the face and crops it the
way syncnet_python's face-track pipeline does (a 2.8x box-size square, padded with grey 110).
n = min(frames, floor(samples / 640)); windows v = 0 .. n-6
(syncnet_python iterates `range(0, n - 5)`, i.e. n-5 windows): lips = frames v..v+4, audio = MFCC steps
4v .. 4v+19. For offsets j = 0..30 (vshift 15) the distance of window v is
`||video_v - audio_pad[v + j] + 1e-6||_2` (torch.nn.functional.pairwise_distance, eps 1e-6; audio
features zero-padded by 15 rows on both ends); mdist = mean over v; LSE-D = min(mdist),
LSE-C = median(mdist) - min(mdist), AV offset = 15 - argmin(mdist).
Sign: offset k means video frame v matches audio window v - k best (the audio leads the video by k frames).

`sync` applies the same offset math to our expert's embeddings with the cosine distance 1 - cos, except
that each offset's mean runs over the real (unpadded) window pairs only (zero padding biases short clips
towards offset 0); its confidence is median(mdist) - min(mdist) = max cos - median cos, and the
per-window sync probability is cos(audio_v, face_v) at offset 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import os
import sys
from typing import Iterable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

VSHIFT = 15
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance default
LIP_SIZE = 224
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
MFCC_STEPS_PER_FRAME = 4
MFCC_WINDOW = 20
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
  """A video / checkpoint that cannot be evaluated; the message names it and what to do."""


# ----------------------------------------------------------------------------------------------------------
# Offset / distance math (pure NumPy; shared by LSE and expert sync scoring).
# ----------------------------------------------------------------------------------------------------------
def offset_distances(video_feats, audio_feats, vshift: int = VSHIFT, metric: str = "euclidean"):
  """(num_windows, 2*vshift+1) distances; column j pairs video v with zero-padded audio row v + j."""
  video_feats = np.asarray(video_feats, np.float64)
  audio_feats = np.asarray(audio_feats, np.float64)
  if video_feats.shape != audio_feats.shape or video_feats.ndim != 2:
    raise ValueError(f"video/audio features must be equal (N, D); got {video_feats.shape} "
                     f"{audio_feats.shape}")
  n, _ = video_feats.shape
  padded = np.pad(audio_feats, ((vshift, vshift), (0, 0)))
  index = np.arange(n)[:, None] + np.arange(2 * vshift + 1)[None, :]
  shifted = padded[index]  # (n, 2v+1, D)
  if metric == "euclidean":
    return np.linalg.norm(video_feats[:, None, :] - shifted + PAIRWISE_EPS, axis=-1)
  if metric == "cosine":
    vn = np.linalg.norm(video_feats, axis=-1)[:, None]
    an = np.linalg.norm(shifted, axis=-1)
    dots = np.einsum("nd,nkd->nk", video_feats, shifted)
    cos = np.where(an > 0, dots / np.maximum(vn * an, 1e-12), 0.0)
    return 1.0 - cos
  raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")


def summarize_offsets(dists, vshift: int = VSHIFT) -> dict:
  """Spec section 10: min / median of the mean distance over windows, offset = vshift - argmin."""
  mdist = np.asarray(dists, np.float64).mean(axis=0)
  min_index = int(np.argmin(mdist))
  min_dist = float(mdist[min_index])
  return {"min_dist": min_dist, "confidence": float(np.median(mdist) - min_dist),
          "offset": int(vshift - min_index), "mean_dist_per_offset": mdist.tolist()}


# ----------------------------------------------------------------------------------------------------------
# SyncNet v2 weights.
# ----------------------------------------------------------------------------------------------------------
def _strip_prefix(state: dict) -> dict:
  return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def syncnet_v2_variables_from_state_dict(state: dict) -> dict:
  """PyTorch `S` state dict (name -> array) -> SyncNetV2 variables. Raises naming missing/unknown keys."""
  from lipsync_jax.models import syncnet_v2 as sv2
  state = {k: np.asarray(v) for k, v in _strip_prefix(state).items()}
  params, stats, used = {}, {}, set()

  def take(key):
    if key not in state:
      raise EvaluationError(f"SyncNet v2 weights: missing key {key!r}; is this a syncnet_v2.model file?")
    used.add(key)
    return state[key].astype(np.float32)

  def bn(prefix, name):
    params[name] = {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}
    stats[name] = {"mean": take(f"{prefix}.running_mean"), "var": take(f"{prefix}.running_var")}
    used.add(f"{prefix}.num_batches_tracked")

  for branch, layers in (("netcnnaud", sv2.AUDIO_CNN), ("netcnnlip", sv2.LIP_CNN)):
    for kind, index, _ in layers:
      prefix, name = f"{branch}.{index}", f"{branch}_{index}"
      if kind == "conv":
        weight = take(f"{prefix}.weight")  # (O, I, *k)
        kernel = np.transpose(weight, tuple(range(2, weight.ndim)) + (1, 0))
        params[name] = {"kernel": kernel, "bias": take(f"{prefix}.bias")}
      elif kind == "bn":
        bn(prefix, name)
  for branch in ("netfcaud", "netfclip"):
    for index in (0, 3):
      params[f"{branch}_{index}"] = {"kernel": take(f"{branch}.{index}.weight").T,
                                     "bias": take(f"{branch}.{index}.bias")}
    bn(f"{branch}.1", f"{branch}_1")
  unknown = sorted(set(state) - used)
  if unknown:
    raise EvaluationError(f"SyncNet v2 weights: unexpected keys {unknown[:5]}... ({len(unknown)}); "
                          "expected the syncnet_python S state dict")
  return {"params": params, "batch_stats": stats}


def load_syncnet_v2(path: str) -> tuple[dict, float]:
  """Load a syncnet_v2.model-format file (torch.save(state_dict), weights_only) -> (variables, width)."""
  import torch
  if not os.path.isfile(path):
    raise EvaluationError(f"SyncNet v2 weights {path!r} not found; download syncnet_v2.model "
                          "(joonson/syncnet_python) and pass its path with --syncnet")
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 - any unpickling failure is the same user error
    raise EvaluationError(f"SyncNet v2 weights {path!r} cannot be read safely (weights_only): {e}") from e
  if isinstance(state, dict) and "state_dict" in state:
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise EvaluationError(f"SyncNet v2 weights {path!r}: expected a state dict, got {type(state).__name__}")
  state = {k: v.numpy() for k, v in state.items() if hasattr(v, "numpy")}
  variables = syncnet_v2_variables_from_state_dict(state)
  width = variables["params"]["netcnnaud_0"]["kernel"].shape[-1] / 64
  return variables, float(width)


# ----------------------------------------------------------------------------------------------------------
# LSE-D / LSE-C.
# ----------------------------------------------------------------------------------------------------------
def mfcc_features(wav_16k) -> np.ndarray:
  """python_speech_features.mfcc defaults on int16-scaled 16 kHz samples (as wavfile.read gives): (13, T)."""
  import python_speech_features
  samples = np.clip(np.round(np.asarray(wav_16k, np.float64) * 32768.0), -32768, 32767)
  return np.asarray(python_speech_features.mfcc(samples, 16000), np.float64).T


def num_lse_windows(num_frames: int, num_samples: int) -> int:
  """syncnet_python: n = min(frames, floor(samples/640)); windows v in range(0, n - 5)."""
  return max(0, min(num_frames, math.floor(num_samples / SAMPLES_PER_FRAME)) - 5)


class SyncNetV2Scorer:
  """Jitted SyncNet v2 feature extractor with fixed batch shapes (pads the last batch)."""

  def __init__(self, variables, width_multiplier: float = 1.0, batch_size: int = 20):
    from lipsync_jax.models.syncnet_v2 import SyncNetV2
    self.variables = variables
    self.batch_size = batch_size
    model = SyncNetV2(width_multiplier=width_multiplier)
    self._lips = jax.jit(lambda v, x: model.apply(v, lips=x))
    self._audio = jax.jit(lambda v, x: model.apply(v, mfcc=x))

  def _batched(self, fn, inputs):
    out = []
    for start in range(0, len(inputs), self.batch_size):
      chunk = inputs[start:start + self.batch_size]
      k = len(chunk)
      if k < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - k,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(fn(self.variables, jnp.asarray(chunk, jnp.float32)))[:k])
    return np.concatenate(out) if out else np.zeros((0, 1024), np.float32)

  def features_for(self, frames_224, mfcc, num_windows: int):
    """frames (N,224,224,3) BGR, mfcc (13,T), windows v < num_windows -> (video_feats, audio_feats)."""
    if num_windows <= 0:
      raise EvaluationError("too short for LSE: need at least 6 frames (0.24 s) of video and audio")
    video_out, audio_out = [], []
    for start in range(0, num_windows, self.batch_size):
      stop = min(num_windows, start + self.batch_size)
      lips = np.stack([frames_224[v:v + 5] for v in range(start, stop)])  # (b,5,224,224,3)
      mf = np.stack([mfcc[:, 4 * v:4 * v + MFCC_WINDOW] for v in range(start, stop)])[..., None]
      video_out.append(self._batched(self._lips, lips))
      audio_out.append(self._batched(self._audio, mf))
    return np.concatenate(video_out), np.concatenate(audio_out)


def _resample_indices(num_frames: int, fps: float, target_fps: float = 25.0) -> np.ndarray:
  duration = num_frames / fps
  count = int(math.floor(duration * target_fps + 1e-6))
  return np.minimum((np.arange(count) * fps / target_fps + 1e-6).astype(int), num_frames - 1)


CROP_SCALE = 0.4  # syncnet_python crop_video's crop_scale


def syncnet_face_crop(frame, box, crop_scale: float = CROP_SCALE, size: int = LIP_SIZE):
  """syncnet_python's face-track crop (reconstructed): a 2.8*s square around the box (s = half its longer
  side), reaching 1*s above and 1.8*s below the box centre, frame padded with 110 -> size x size."""
  x1, y1, x2, y2 = (float(v) for v in box)
  half = max(x2 - x1, y2 - y1) / 2
  pad = int(half * (1 + 2 * crop_scale))
  padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(110, 110, 110))
  cy, cx = (y1 + y2) / 2 + pad, (x1 + x2) / 2 + pad
  face = padded[int(cy - half):int(cy + half * (1 + 2 * crop_scale)),
                int(cx - half * (1 + crop_scale)):int(cx + half * (1 + crop_scale))]
  return cv2.resize(face, (size, size))


def load_lse_inputs(video_path: str, face_crop: bool = False,
                    detector: str = "haar") -> tuple[np.ndarray, np.ndarray]:
  """Frames as SyncNet v2 sees them (224x224; resampled to 25 fps if needed) and the 16 kHz audio.

  face_crop=False: whole frames resized (generated face videos, the LRS2 protocol of the Wav2Lip paper).
  face_crop=True: faces detected (lipsync_jax.media.detectors, boxes filled + smoothed) and cropped the way
  syncnet_python's pipeline crops face tracks (for real videos with a single speaker).
  """
  from lipsync_jax.media import video
  if not os.path.isfile(video_path):
    raise EvaluationError(f"video {video_path!r} not found")
  info = video.probe(video_path)
  if not info.has_audio:
    raise EvaluationError(f"video {video_path!r} has no audio track; LSE needs the speech audio")
  if face_crop:
    from lipsync_jax.media import detectors as face_detection
    det = face_detection.get_detector(detector)
    raw = [det.detect_one(f) for f in video.iter_frames(video_path)]  # pass 1: boxes only
    if all(b is None for b in raw):
      raise EvaluationError(f"video {video_path!r}: no face detected for --face_crop")
    boxes = face_detection.smooth_boxes(face_detection.fill_missing(raw)[0], 5)
    frames = np.stack([syncnet_face_crop(f, b) for f, b in zip(video.iter_frames(video_path), boxes)])
  else:
    frames = np.stack([cv2.resize(f, (LIP_SIZE, LIP_SIZE)) for f in video.iter_frames(video_path)])
  if abs(info.fps - 25.0) > 0.01:
    log.warning("%s: %.3f fps, resampling to 25 fps (the metric assumes 25)", video_path, info.fps)
    frames = frames[_resample_indices(len(frames), info.fps)]
  wav = video.read_audio(video_path, sr=16000)
  return frames, wav


def lse_scores(video_path: str, scorer: SyncNetV2Scorer, face_crop: bool = False,
               detector: str = "haar") -> dict:
  """One video's LSE-D, LSE-C and AV offset (spec section 10)."""
  frames, wav = load_lse_inputs(video_path, face_crop, detector)
  mfcc = mfcc_features(wav)
  video_feats, audio_feats = scorer.features_for(frames, mfcc, num_lse_windows(len(frames), len(wav)))
  summary = summarize_offsets(offset_distances(video_feats, audio_feats), VSHIFT)
  return {"video": video_path, "lse_d": summary["min_dist"], "lse_c": summary["confidence"],
          "offset": summary["offset"], "windows": int(len(video_feats))}


def collect_videos(items: Sequence[str]) -> list[str]:
  paths = []
  for item in items:
    if os.path.isdir(item):
      found = sorted(p for p in glob.glob(os.path.join(item, "**", "*"), recursive=True)
                     if p.lower().endswith(VIDEO_EXTENSIONS))
      if not found:
        raise EvaluationError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {item!r}")
      paths.extend(found)
    else:
      paths.append(item)
  return paths


def evaluate_lse(videos: Sequence[str], syncnet_path: str, batch_size: int = 20, progress: bool = True,
                 face_crop: bool = False, detector: str = "haar"):
  """Score every video; unreadable ones are skipped and listed. Returns {'videos', 'mean', 'failed'}."""
  from tqdm import tqdm
  variables, width = load_syncnet_v2(syncnet_path)
  scorer = SyncNetV2Scorer(variables, width, batch_size)
  rows, failed = [], []
  for path in tqdm(collect_videos(videos), desc="LSE", disable=not progress, unit="video"):
    try:
      rows.append(lse_scores(path, scorer, face_crop, detector))
    except (ValueError, OSError) as e:  # VideoError / AudioError / EvaluationError are ValueErrors
      failed.append({"video": path, "error": str(e)})
      log.warning("skipping %s: %s", path, e)
  mean = ({k: float(np.mean([r[k] for r in rows])) for k in ("lse_d", "lse_c", "offset")}
          if rows else {})
  return {"videos": rows, "mean": mean, "failed": failed}


def format_table(result: dict) -> str:
  lines = [f"{'video':<48} {'LSE-D':>8} {'LSE-C':>8} {'offset':>7}"]
  for r in result["videos"]:
    name = os.path.basename(r["video"])[-48:]
    lines.append(f"{name:<48} {r['lse_d']:8.3f} {r['lse_c']:8.3f} {r['offset']:7d}")
  if result["mean"]:
    m = result["mean"]
    lines.append(f"{'mean (' + str(len(result['videos'])) + ' videos)':<48} {m['lse_d']:8.3f} "
                 f"{m['lse_c']:8.3f} {m['offset']:7.2f}")
  for f in result["failed"]:
    lines.append(f"FAILED {f['video']}: {f['error']}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Sync scoring with our own expert.
# ----------------------------------------------------------------------------------------------------------
def sync_from_embeddings(face_emb, audio_emb, vshift: int = VSHIFT) -> dict:
  """Per-window sync probability cos(a_v, f_v), best AV offset and confidence via the cosine offset curve."""
  face_emb = np.asarray(face_emb, np.float64)
  audio_emb = np.asarray(audio_emb, np.float64)
  dists = offset_distances(face_emb, audio_emb, vshift, metric="cosine")
  # Unlike LSE, average only over real (unpadded) pairs: zero padding would bias every clip towards
  # offset 0 by (|o| / n), which hides true offsets in short clips.
  n = len(face_emb)
  partner = np.arange(n)[:, None] + np.arange(-vshift, vshift + 1)[None, :]
  valid = (partner >= 0) & (partner < n)
  mean = np.where(valid.any(0), np.where(valid, dists, 0).sum(0) / np.maximum(valid.sum(0), 1), 1.0)
  summary = summarize_offsets(mean[None, :], vshift)
  prob = 1.0 - dists[:, vshift]
  return {"sync_prob": prob.tolist(), "mean_sync_prob": float(prob.mean()), "offset": summary["offset"],
          "confidence": summary["confidence"],
          "sync_per_offset": (1.0 - np.asarray(summary["mean_dist_per_offset"])).tolist(),
          "offsets": list(range(-vshift, vshift + 1)),
          "windows": int(len(face_emb))}


def expert_embeddings(face_crops, mel, variables, meta: dict, fps: float = 25.0, batch_size: int = 64):
  """Face crops (N,S,S,3) BGR uint8 + mel (80,T) -> (face_emb, audio_emb) for windows v = 0..n-5."""
  from lipsync_jax import windows
  from lipsync_jax.models import SyncNet
  model = SyncNet(width_multiplier=float(meta.get("width_multiplier", 1.0)))
  num = len(face_crops) - windows.SYNC_T + 1
  while num > 0 and windows.mel_window(mel, num - 1, fps) is None:
    num -= 1
  if num <= 0:
    raise EvaluationError("video too short for sync scoring: need 5 frames with matching audio")
  batch_size = min(batch_size, num)
  apply = jax.jit(lambda v, m, f: model.apply(v, m, f, train=False))
  face_out, audio_out = [], []
  for start in range(0, num, batch_size):
    idx = list(range(start, min(num, start + batch_size)))
    k = len(idx)
    idx = idx + [idx[-1]] * (batch_size - k)  # fixed batch shape
    faces = np.stack([windows.stack_on_channels(windows.lower_half(face_crops[v:v + 5])) for v in idx])
    mels = np.stack([windows.mel_window(mel, v, fps) for v in idx])[..., None]
    audio_emb, face_emb = apply(variables, jnp.asarray(mels, jnp.float32),
                                jnp.asarray(faces, jnp.float32) / 255.0)
    audio_out.append(np.asarray(audio_emb)[:k])
    face_out.append(np.asarray(face_emb)[:k])
  return np.concatenate(face_out), np.concatenate(audio_out)


def detect_face_boxes(frames, detector: str = "haar", pads=(0, 10, 0, 0), smooth: bool = True):
  """Boxes (N,4) int (x1,y1,x2,y2) for frames via lipsync_jax.media.detectors, gaps filled, smoothed."""
  from lipsync_jax.media import detectors as face_detection
  det = face_detection.get_detector(detector)
  height, width = frames[0].shape[:2]
  raw = det.detect(list(frames))
  padded = [None if b is None else face_detection.pad_and_clip(b, pads, width, height) for b in raw]
  if all(b is None for b in padded):
    raise EvaluationError("no face detected in any frame; pass a fixed --box")
  filled, missing = face_detection.fill_missing(padded)
  boxes = np.asarray(filled, np.float64)
  if smooth:
    boxes = np.asarray(face_detection.smooth_boxes(boxes, window=5), np.float64)
  return boxes.astype(int), int(missing)


def sync_video(video_path: str, expert_path: str, detector: str = "haar", box=None, batch_size: int = 64):
  """Our expert's sync scores for one video (faces detected, cropped to the expert's img_size)."""
  from lipsync_jax.media import audio, detectors as face_detection, video
  from lipsync_jax import infer
  variables, meta = infer.load_checkpoint(expert_path, "syncnet")
  img_size = int(meta.get("img_size", 96))
  if not os.path.isfile(video_path):
    raise EvaluationError(f"video {video_path!r} not found")
  info = video.probe(video_path)
  frames = list(video.iter_frames(video_path))
  if box is not None:
    boxes, missing = np.tile(np.asarray(box, int), (len(frames), 1)), 0
  else:
    boxes, missing = detect_face_boxes(frames, detector)
  crops = np.stack([face_detection.crop_and_resize(f, tuple(b), img_size) for f, b in zip(frames, boxes)])
  mel = audio.melspectrogram(video.read_audio(video_path, sr=16000))
  face_emb, audio_emb = expert_embeddings(crops, mel, variables, meta, info.fps, batch_size)
  result = sync_from_embeddings(face_emb, audio_emb)
  result.update(video=video_path, frames_without_face=missing, fps=info.fps)
  return result


def plot_sync(result: dict, out_png: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
  fps = result.get("fps", 25.0)
  t = np.arange(len(result["sync_prob"])) / fps
  ax1.plot(t, result["sync_prob"])
  ax1.set(xlabel="window start (s)", ylabel="sync probability (cos)", ylim=(0, 1),
          title=f"per-window sync (mean {result['mean_sync_prob']:.3f})")
  ax2.plot(result["offsets"], result["sync_per_offset"], marker=".")
  ax2.axvline(result["offset"], color="r", ls="--")
  ax2.set(xlabel="AV offset (frames)", ylabel="mean cos",
          title=f"offset {result['offset']}, confidence {result['confidence']:.3f}")
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# Reconstruction metrics.
# ----------------------------------------------------------------------------------------------------------
def mouth_region(frame, box):
  x1, y1, x2, y2 = [int(v) for v in box]
  return frame[y1 + (y2 - y1) // 2:y2, x1:x2]


def mouth_psnr_ssim(generated: Iterable, reference: Iterable, boxes) -> dict:
  """Mean PSNR / SSIM (scikit-image, data_range 255, colour) of the lower half of each face box."""
  from skimage.metrics import peak_signal_noise_ratio, structural_similarity
  psnrs, ssims = [], []
  for gen, ref, box in zip(generated, reference, boxes):
    g, r = mouth_region(np.asarray(gen), box), mouth_region(np.asarray(ref), box)
    if g.shape != r.shape or min(g.shape[:2]) < 3:
      raise EvaluationError(f"mouth regions differ or are too small: {g.shape} vs {r.shape}")
    mse = np.mean((g.astype(np.float64) - r.astype(np.float64)) ** 2)
    psnrs.append(float("inf") if mse == 0 else peak_signal_noise_ratio(r, g, data_range=255))
    side = min(g.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    ssims.append(structural_similarity(r, g, data_range=255, channel_axis=-1, win_size=win))
  if not psnrs:
    raise EvaluationError("no frames to compare")
  return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "frames": len(psnrs)}


def recon_videos(generated_path: str, reference_path: str, detector: str = "haar", box=None) -> dict:
  from lipsync_jax.media import video
  for p in (generated_path, reference_path):
    if not os.path.isfile(p):
      raise EvaluationError(f"video {p!r} not found")
  gen = list(video.iter_frames(generated_path))
  ref = list(video.iter_frames(reference_path))
  n = min(len(gen), len(ref))
  if gen[0].shape != ref[0].shape:
    raise EvaluationError(f"resolution differs: {gen[0].shape} vs {ref[0].shape}")
  if box is not None:
    boxes = np.tile(np.asarray(box, int), (n, 1))
  else:
    boxes, _ = detect_face_boxes(ref[:n], detector)
  result = mouth_psnr_ssim(gen[:n], ref[:n], boxes)
  result.update(generated=generated_path, reference=reference_path)
  return result


# ----------------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m lipsync_jax.evaluate", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  lse = sub.add_parser("lse", help="LSE-D / LSE-C / AV offset with SyncNet v2")
  lse.add_argument("--videos", nargs="+", required=True, help="video files and/or directories")
  lse.add_argument("--syncnet", required=True, help="syncnet_v2.model (PyTorch state dict)")
  lse.add_argument("--batch_size", type=int, default=20)
  lse.add_argument("--face_crop", action="store_true",
                   help="detect and crop faces like syncnet_python's pipeline (real videos); default: whole "
                        "frames resized to 224 (generated face videos, the paper's LRS2 protocol)")
  lse.add_argument("--detector", default="haar")
  lse.add_argument("--json", default=None, help="also write the result as JSON here")
  sync = sub.add_parser("sync", help="per-window sync probability and AV offset with our expert")
  sync.add_argument("--video", required=True)
  sync.add_argument("--expert", required=True, help="lipsync_expert.pth, variables dir or training workdir")
  sync.add_argument("--detector", default="haar")
  sync.add_argument("--box", type=int, nargs=4, default=None, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                    help="constant face box instead of detection (as infer's --box)")
  sync.add_argument("--plot", default=None, help="write a PNG plot here")
  sync.add_argument("--json", default=None)
  recon = sub.add_parser("recon", help="mouth-region PSNR / SSIM against ground truth")
  recon.add_argument("--generated", required=True)
  recon.add_argument("--reference", required=True)
  recon.add_argument("--detector", default="haar")
  recon.add_argument("--box", type=int, nargs=4, default=None, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                     help="constant face box instead of detection on the reference")
  recon.add_argument("--json", default=None)
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  try:
    box = None
    if getattr(args, "box", None) is not None:  # (top, bottom, left, right) -> (x1, y1, x2, y2)
      top, bottom, left, right = args.box
      box = (left, top, right, bottom)
    if args.command == "lse":
      result = evaluate_lse(args.videos, args.syncnet, args.batch_size, face_crop=args.face_crop,
                            detector=args.detector)
      print(format_table(result))
      if not result["videos"]:
        raise EvaluationError("no video could be scored (see FAILED lines)")
    elif args.command == "sync":
      result = sync_video(args.video, args.expert, args.detector, box)
      print(f"{args.video}: AV offset {result['offset']} frames, confidence {result['confidence']:.3f}, "
            f"mean sync probability {result['mean_sync_prob']:.3f} over {result['windows']} windows")
      if args.plot:
        plot_sync(result, args.plot)
        print(f"plot: {args.plot}")
    else:
      result = recon_videos(args.generated, args.reference, args.detector, box)
      print(f"mouth PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} over {result['frames']} frames")
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
