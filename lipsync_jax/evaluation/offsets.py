"""AV-offset math (pure NumPy), shared by LSE (euclidean) and expert sync scoring (cosine).

Owns the syncnet_python offset search as the Wav2Lip paper's evaluation uses it: for offsets j = 0 .. 2 *
vshift (vshift 15), window v's distance pairs video features v with audio features v + j - vshift (audio
zero-padded by vshift rows on both ends); `||video_v - audio + 1e-6||_2` as
torch.nn.functional.pairwise_distance (eps 1e-6), or 1 - cos. `summarize_offsets`: mdist = mean over
windows; min distance, confidence = median(mdist) - min(mdist), AV offset = vshift - argmin(mdist).
Sign: offset k means video frame v matches audio window v - k best (the audio leads the video by k frames).
"""

from __future__ import annotations

import numpy as np

VSHIFT = 15
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance default


def offset_distances(
  video_feats: np.ndarray, audio_feats: np.ndarray, vshift: int = VSHIFT, metric: str = "euclidean"
) -> np.ndarray:
  """(num_windows, 2*vshift+1) distances; column j pairs video v with zero-padded audio row v + j."""
  video_feats = np.asarray(video_feats, np.float64)
  audio_feats = np.asarray(audio_feats, np.float64)
  if video_feats.shape != audio_feats.shape or video_feats.ndim != 2:
    raise ValueError(
      f"video/audio features must be equal (N, D); got {video_feats.shape} {audio_feats.shape}"
    )
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


def summarize_offsets(dists: np.ndarray, vshift: int = VSHIFT) -> dict:
  """Spec section 10: min / median of the mean distance over windows, offset = vshift - argmin."""
  mdist = np.asarray(dists, np.float64).mean(axis=0)
  min_index = int(np.argmin(mdist))
  min_dist = float(mdist[min_index])
  return {
    "min_dist": min_dist,
    "confidence": float(np.median(mdist) - min_dist),
    "offset": int(vshift - min_index),
    "mean_dist_per_offset": mdist.tolist(),
  }
