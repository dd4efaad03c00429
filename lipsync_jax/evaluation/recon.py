"""Reconstruction metrics: mouth-region PSNR / SSIM of generated frames against ground truth.

Owns the mouth region (the lower half of the face box), `mouth_psnr_ssim(generated, reference, boxes)`
on frames in memory (scikit-image, data_range 255, colour) and `recon_videos(generated, reference, ...)`
for two video files, local or remote (gs://...; lipsync_jax.fs) (boxes by the face track on the reference, or the
original's --box).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lipsync_jax import fs
from lipsync_jax.evaluation.faces import EvaluationError, face_boxes
from lipsync_jax.media import detectors, track


def mouth_region(frame: np.ndarray, box: Sequence[int]) -> np.ndarray:
  x1, y1, x2, y2 = [int(v) for v in box]
  return frame[y1 + (y2 - y1) // 2 : y2, x1:x2]


def mouth_psnr_ssim(
  generated: Iterable[np.ndarray], reference: Iterable[np.ndarray], boxes: Iterable[Sequence[int]]
) -> dict:
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


def recon_videos(
  generated_path: str,
  reference_path: str,
  detector: Any = detectors.DEFAULT,
  box_tblr: Sequence[int] | None = None,
) -> dict:
  """mouth_psnr_ssim of two videos, frame by frame (the shorter one's length)."""
  from lipsync_jax.media import video

  generated_path, reference_path = os.fspath(generated_path), os.fspath(reference_path)
  for p in (generated_path, reference_path):
    if not fs.isfile(p):
      raise EvaluationError(f"video {p!r} not found")
  with fs.local_copy(generated_path) as local:  # decoders read local files (gs://: a temporary copy)
    gen = list(video.iter_frames(local))
  with fs.local_copy(reference_path) as local:
    ref = list(video.iter_frames(local))
  n = min(len(gen), len(ref))
  if n == 0:
    raise EvaluationError(f"no frames in {generated_path!r} or {reference_path!r}")
  if gen[0].shape != ref[0].shape:
    raise EvaluationError(f"resolution differs: {gen[0].shape} vs {ref[0].shape}")
  if box_tblr is not None:
    height, width = ref[0].shape[:2]
    boxes = np.tile(np.asarray(track.box_from_tblr(box_tblr, width, height)), (n, 1))
  else:
    boxes, _ = face_boxes(ref[:n], detector)
  result = mouth_psnr_ssim(gen[:n], ref[:n], boxes)
  result.update(generated=generated_path, reference=reference_path)
  return result
