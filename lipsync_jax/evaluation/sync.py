"""Sync scoring with our own expert (SyncNet): per-window sync probability, AV offset and confidence.

Owns the expert's version of the offset search (lipsync_jax.evaluation.offsets with the cosine distance
1 - cos), except that each offset's mean runs over the real (unpadded) window pairs only (zero padding
biases short clips towards offset 0); confidence = median(mdist) - min(mdist) = max cos - median cos, and
the per-window sync probability is cos(audio_v, face_v) at offset 0.

  ExpertSync(variables, meta, batch_size)        the expert on the shared BatchRunner (compiled once)
    .embeddings(face_crops, mel, fps)            face crops (N,S,S,3) uint8 BGR + mel (80,T) -> embeddings
    .scores(face_crops, mel, fps)                -> sync_from_embeddings(...)   (in-memory clips)
  sync_video(video_path, expert_path, ...)       the CLI's work: frames (native rate), face track, crops
  plot_sync(result, out_png)
Paths may be remote (gs://...; lipsync_jax.fs): videos are read from temporary local copies.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import fs, windows
from lipsync_jax.evaluation import offsets
from lipsync_jax.evaluation.faces import EvaluationError, face_boxes
from lipsync_jax.inference.runner import BatchRunner
from lipsync_jax.media import detectors, track


def sync_from_embeddings(face_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = offsets.VSHIFT) -> dict:
  """Per-window sync probability cos(a_v, f_v), best AV offset and confidence via the cosine offset curve."""
  face_emb = np.asarray(face_emb, np.float64)
  audio_emb = np.asarray(audio_emb, np.float64)
  dists = offsets.offset_distances(face_emb, audio_emb, vshift, metric="cosine")
  # Unlike LSE, average only over real (unpadded) pairs: zero padding would bias every clip towards
  # offset 0 by (|o| / n), which hides true offsets in short clips.
  n = len(face_emb)
  partner = np.arange(n)[:, None] + np.arange(-vshift, vshift + 1)[None, :]
  valid = (partner >= 0) & (partner < n)
  mean = np.where(valid.any(0), np.where(valid, dists, 0).sum(0) / np.maximum(valid.sum(0), 1), 1.0)
  summary = offsets.summarize_offsets(mean[None, :], vshift)
  prob = 1.0 - dists[:, vshift]
  return {
    "sync_prob": prob.tolist(),
    "mean_sync_prob": float(prob.mean()),
    "offset": summary["offset"],
    "confidence": summary["confidence"],
    "sync_per_offset": (1.0 - np.asarray(summary["mean_dist_per_offset"])).tolist(),
    "offsets": list(range(-vshift, vshift + 1)),
    "windows": int(len(face_emb)),
  }


class ExpertSync:
  """Our expert's audio / face embeddings of every 5-frame window, on one BatchRunner."""

  def __init__(self, variables: Any, meta: dict, batch_size: int = 64):
    from lipsync_jax.models import SyncNet

    model = SyncNet(width_multiplier=float(meta.get("width_multiplier", 1.0)))

    def apply(v, mels, faces):
      return model.apply(v, mels, faces.astype(jnp.float32) / 255.0, train=False)

    self.runner = BatchRunner(apply, variables, batch_size)

  def embeddings(
    self, face_crops: np.ndarray, mel: np.ndarray, fps: float = 25.0
  ) -> tuple[np.ndarray, np.ndarray]:
    """Face crops (N,S,S,3) BGR uint8 + mel (80,T) -> (face_emb, audio_emb) for windows v = 0..n-5."""
    num = len(face_crops) - windows.SYNC_T + 1
    while num > 0 and windows.mel_window(mel, num - 1, fps) is None:
      num -= 1
    if num <= 0:
      raise EvaluationError("video too short for sync scoring: need 5 frames with matching audio")

    def inputs_for(rows):
      faces = np.stack(
        [windows.stack_on_channels(windows.lower_half(face_crops[v : v + windows.SYNC_T])) for v in rows]
      )
      mels = np.stack([windows.mel_window(mel, v, fps) for v in rows])[..., None].astype(np.float32)
      return mels, np.asarray(faces, np.uint8)

    audio_emb, face_emb = self.runner.map(num, inputs_for)
    return face_emb, audio_emb

  def scores(self, face_crops: np.ndarray, mel: np.ndarray, fps: float = 25.0) -> dict:
    """sync_from_embeddings of a clip in memory (see the module docstring)."""
    return sync_from_embeddings(*self.embeddings(face_crops, mel, fps))


def sync_video(
  video_path: str,
  expert_path: str,
  detector: Any = detectors.DEFAULT,
  box_tblr: Sequence[int] | None = None,
  batch_size: int = 64,
) -> dict:
  """Our expert's sync scores for one video: faces tracked (or box_tblr = the original's --box (top,
  bottom, left, right)), cropped to the expert's img_size, at the video's own frame rate."""
  from lipsync_jax import weights
  from lipsync_jax.media import audio, video

  variables, meta = weights.load(expert_path, "syncnet")
  video_path = os.fspath(video_path)
  if not fs.isfile(video_path):
    raise EvaluationError(f"video {video_path!r} not found")
  with fs.local_copy(video_path) as local:  # decoders read local files (a gs:// video: a temporary copy)
    info = video.probe(local)
    frames = list(video.iter_frames(local))
    wav = video.read_audio(local, sr=16000)
  if not frames:
    raise EvaluationError(f"video {video_path!r}: no decodable frame")
  if box_tblr is not None:
    height, width = frames[0].shape[:2]
    boxes, missing = np.tile(np.asarray(track.box_from_tblr(box_tblr, width, height)), (len(frames), 1)), 0
  else:
    boxes, missing = face_boxes(frames, detector)
  crops = np.stack([track.crop_and_resize(f, tuple(b), meta["img_size"]) for f, b in zip(frames, boxes)])
  mel = audio.melspectrogram(wav)
  result = ExpertSync(jax.tree.map(np.asarray, variables), meta, batch_size).scores(crops, mel, info.fps)
  result.update(video=video_path, frames_without_face=missing, fps=info.fps)
  return result


def plot_sync(result: dict, out_png: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
  fps = result.get("fps", 25.0)
  t = np.arange(len(result["sync_prob"])) / fps
  ax1.plot(t, result["sync_prob"])
  ax1.set(
    xlabel="window start (s)",
    ylabel="sync probability (cos)",
    ylim=(0, 1),
    title=f"per-window sync (mean {result['mean_sync_prob']:.3f})",
  )
  ax2.plot(result["offsets"], result["sync_per_offset"], marker=".")
  ax2.axvline(result["offset"], color="r", ls="--")
  ax2.set(
    xlabel="AV offset (frames)",
    ylabel="mean cos",
    title=f"offset {result['offset']}, confidence {result['confidence']:.3f}",
  )
  fig.tight_layout()
  with fs.staged_output(out_png) as local:  # written locally, moved (uploaded) into place when complete
    fig.savefig(local, dpi=100)
  plt.close(fig)
