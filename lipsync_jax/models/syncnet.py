"""The lip-sync expert, SyncNet_color (spec section 2): 16,435,072 parameters at width 1 and 96 px.

Owns the expert's layer plan per face size (`face_encoder_plan`, `audio_encoder_plan`), the module
`SyncNet`, `sync_probability`, and `run_layers` / `table_specs` (applying / naming a plan, shared with
the generator).

Inputs (NHWC): mel (B, 80, 16, 1); faces (B, S/2, S, 15) = lower halves of 5 frames stacked on channels
(BGR, [0,1]). Outputs the two L2-normalised embeddings (B, embed_dim), embed_dim = 512 at width 1.
Sync probability = cosine similarity = sum(audio_emb * face_emb, -1).

Face sizes: the architecture follows the input. At 96 it is the original table. A larger face gets
stride-2 prefix stages (32 channels, k3, + 2 residual blocks each) in front of the original table until
the lower half is <= 48 x 96 (one at 192, two at 288), so from there on the maps are the original's
(192) or smaller (288: 36 x 72 enters the table) and the embedding is still 1x1. See docs/models.md.

Submodule names mirror the official PyTorch keys (`face_encoder_{i}` <-> `face_encoder.{i}.*`), numbered
in order through the prefix stages, so that `lipsync_jax.weights` maps checkpoints mechanically and the
96 model is the same tree as the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import (
  ConvBN,
  ConvTBN,
  LayerSpec,
  PairOrInt,
  annotate,
  block_class,
  face_size,
  l2_normalize,
  prefix_strides,
  scaled_channels,
  spec,
)


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


# The lower half of the original 96 face: prefix stages halve an HD lower half down to this.
EXPERT_MAP_LIMIT = (48, 96)
PREFIX_CHANNELS = 32


def table_specs(table, prefix: str, start_index: int = 0) -> list[LayerSpec]:
  """Rows (channels, kernel, stride, padding, residual) -> LayerSpecs named f'{prefix}_{start_index + i}'."""
  return [
    spec(f"{prefix}_{i}", channels, kernel, stride, padding, residual=residual)
    for i, (channels, kernel, stride, padding, residual) in enumerate(table, start=start_index)
  ]


def check_bottleneck(layers: Sequence[LayerSpec], img_size, network: str) -> None:
  """The plan must end in a 1x1 map (the embedding / the audio join); a size that does not is a bug."""
  if layers[-1].out_size != (1, 1):
    raise ValueError(f"{network}: face size {img_size} ends in a {layers[-1].out_size} map, not 1x1")


def audio_encoder_plan() -> list[LayerSpec]:
  """The expert's audio encoder (independent of the face size): (80, 16) mel -> 1x1 x 512."""
  return annotate(table_specs(SYNCNET_AUDIO_ENCODER, "audio_encoder"), (80, 16))


def face_encoder_plan(img_size: PairOrInt) -> list[LayerSpec]:
  """The expert's face encoder for faces of `img_size` (its input is the lower half, (H/2, W, 15)).

  Prefix stages (stride-2 k3 conv to 32 channels + 2 residual blocks) while the lower half is larger than
  48 x 96, then the original table; module names face_encoder_{i} in order. ValueError for an
  unsupported size (`layers.SUPPORTED_FACE_SIZES`).
  """
  height, width = face_size(img_size)
  half = (height // 2, width)
  rows = []
  for stride in prefix_strides(half, EXPERT_MAP_LIMIT):
    rows += [(PREFIX_CHANNELS, 3, stride, 1, False), *residuals(PREFIX_CHANNELS, 2)]
  layers = annotate(table_specs(rows + SYNCNET_FACE_ENCODER, "face_encoder"), half)
  check_bottleneck(layers, img_size, "SyncNet")
  return layers


def run_layers(
  x,
  layers: Sequence[LayerSpec],
  width_multiplier: float,
  dtype,
  train: bool,
  fold_bn: bool,
  transpose_impl: str = "auto",
  remat: bool = False,
):
  """Applies a plan of 'conv' (ConvBN) / 'convT' (ConvTBN) layers, each named by its spec. Call in a
  compact method; `remat` wraps each layer in nn.remat (same parameter tree)."""
  for layer in layers:
    channels = scaled_channels(layer.channels, width_multiplier)
    if layer.op == "convT":
      module = block_class(ConvTBN, remat)(
        channels,
        layer.kernel,
        layer.stride,
        layer.padding,
        layer.output_padding,
        transpose_impl=transpose_impl,
        fold_bn=fold_bn,
        dtype=dtype,
        name=layer.name,
      )
    elif layer.op == "conv":
      module = block_class(ConvBN, remat)(
        channels,
        layer.kernel,
        layer.stride,
        layer.padding,
        residual=layer.residual,
        fold_bn=fold_bn,
        dtype=dtype,
        transpose_impl=transpose_impl,
        name=layer.name,
      )
    else:
      raise ValueError(f"run_layers: layer {layer.name} has op {layer.op!r}, expected 'conv' or 'convT'")
    x = module(x, train)  # train positional: it is a static argument of the remat version
  return x


class SyncNet(nn.Module):
  """SyncNet_color. `apply(variables, mel, faces, train=False) -> (audio_emb, face_emb)` (float32).

  The face size is read from `faces` (lower halves (B, S/2, S, 15), S in 96 / 192 / 288).
  `remat=True` rematerialises every conv layer in the backward pass (same variables, same values).
  """

  width_multiplier: float = 1.0
  compute_dtype: Any = jnp.float32
  fold_bn: bool = False
  transpose_impl: str = "auto"  # strided convs' input gradient: 'direct' | 'phase' | 'auto' (layers.conv2d)
  remat: bool = False

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
    try:
      face_plan = face_encoder_plan((2 * faces.shape[1], faces.shape[2]))
    except ValueError as err:
      size = f"{2 * faces.shape[1]}x{faces.shape[2]}"
      raise ValueError(f"SyncNet: faces {faces.shape} (lower halves of {size} faces): {err}") from err
    dtype = self.compute_dtype
    common = dict(transpose_impl=self.transpose_impl, remat=self.remat)
    args = (self.width_multiplier, dtype, train, self.fold_bn)
    face = run_layers(faces.astype(dtype), face_plan, *args, **common)
    audio = run_layers(mel.astype(dtype), audio_encoder_plan(), *args, **common)
    # PyTorch flattens NCHW; the maps are 1x1 at every supported size so the order is the same.
    audio_emb = l2_normalize(audio.reshape(audio.shape[0], -1))
    face_emb = l2_normalize(face.reshape(face.shape[0], -1))
    return audio_emb, face_emb


def sync_probability(audio_emb, face_emb):
  """Cosine similarity of L2-normalised embeddings, (B,) in [0, 1] (embeddings are post-ReLU)."""
  return jnp.sum(audio_emb * face_emb, axis=-1)
