"""The lip-sync expert, SyncNet_color (spec section 2): 16,435,072 parameters at width 1.

Inputs (NHWC): mel (B, 80, 16, 1); faces (B, H/2, W, 15) = lower halves of 5 frames stacked on channels
(BGR, [0,1]). Outputs the two L2-normalised embeddings (B, embed_dim), embed_dim = 512 at width 1.
Sync probability = cosine similarity = sum(audio_emb * face_emb, -1).

Submodule names mirror the official PyTorch keys (`face_encoder_{i}` <-> `face_encoder.{i}.*`) so that
`lipsync_jax.weights` maps checkpoints mechanically.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import ConvBN, l2_normalize, scaled_channels


def residuals(channels: int, count: int) -> list[tuple]:
  """`count` residual ConvBN(c, c, 3, 1, 1) rows of a layer table."""
  return [(channels, 3, 1, 1, True)] * count


# Rows: (out channels, kernel, stride, padding, residual).
SYNCNET_FACE_ENCODER = [
  (32, 7, 1, 3, False),
  (64, 5, (1, 2), 1, False),
  *residuals(64, 2),
  (128, 3, 2, 1, False),
  *residuals(128, 3),
  (256, 3, 2, 1, False),
  *residuals(256, 2),
  (512, 3, 2, 1, False),
  *residuals(512, 2),
  (512, 3, 2, 1, False),
  (512, 3, 1, 0, False),
  (512, 1, 1, 0, False),
]
SYNCNET_AUDIO_ENCODER = [
  (32, 3, 1, 1, False),
  *residuals(32, 2),
  (64, 3, (3, 1), 1, False),
  *residuals(64, 2),
  (128, 3, 3, 1, False),
  *residuals(128, 2),
  (256, 3, (3, 2), 1, False),
  *residuals(256, 2),
  (512, 3, 1, 0, False),
  (512, 1, 1, 0, False),
]


def run_encoder(
  x,
  table,
  prefix: str,
  width_multiplier: float,
  dtype,
  train: bool,
  fold_bn: bool,
  start_index: int = 0,
  transpose_impl: str = "auto",
):
  """Applies a ConvBN layer table; row i is named f'{prefix}_{start_index + i}'. Call in a compact method."""
  for i, (channels, kernel, stride, padding, residual) in enumerate(table, start=start_index):
    x = ConvBN(
      scaled_channels(channels, width_multiplier),
      kernel,
      stride,
      padding,
      residual=residual,
      fold_bn=fold_bn,
      dtype=dtype,
      transpose_impl=transpose_impl,
      name=f"{prefix}_{i}",
    )(x, train=train)
  return x


class SyncNet(nn.Module):
  """SyncNet_color. `apply(variables, mel, faces, train=False) -> (audio_emb, face_emb)` (float32)."""

  width_multiplier: float = 1.0
  compute_dtype: Any = jnp.float32
  fold_bn: bool = False
  transpose_impl: str = "auto"  # strided convs' input gradient: 'direct' | 'phase' | 'auto' (layers.conv2d)

  @property
  def embed_dim(self) -> int:
    return scaled_channels(512, self.width_multiplier)

  @nn.compact
  def __call__(self, mel, faces, train: bool = False):
    if mel.ndim != 4 or mel.shape[-1] != 1:
      raise ValueError(f"SyncNet: mel must be (B, 80, 16, 1), got {mel.shape}")
    if faces.ndim != 4 or faces.shape[-1] != 15:
      raise ValueError(
        f"SyncNet: faces must be (B, H/2, W, 15) (5 lower halves on channels), got {faces.shape}"
      )
    dtype = self.compute_dtype
    face = run_encoder(
      faces.astype(dtype),
      SYNCNET_FACE_ENCODER,
      "face_encoder",
      self.width_multiplier,
      dtype,
      train,
      self.fold_bn,
      transpose_impl=self.transpose_impl,
    )
    audio = run_encoder(
      mel.astype(dtype),
      SYNCNET_AUDIO_ENCODER,
      "audio_encoder",
      self.width_multiplier,
      dtype,
      train,
      self.fold_bn,
      transpose_impl=self.transpose_impl,
    )
    # PyTorch flattens NCHW; at the native sizes the maps are 1x1 so the order is the same.
    audio_emb = l2_normalize(audio.reshape(audio.shape[0], -1))
    face_emb = l2_normalize(face.reshape(face.shape[0], -1))
    return audio_emb, face_emb


def sync_probability(audio_emb, face_emb):
  """Cosine similarity of L2-normalised embeddings, (B,) in [0, 1] (embeddings are post-ReLU)."""
  return jnp.sum(audio_emb * face_emb, axis=-1)
