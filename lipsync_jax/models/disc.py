"""The visual-quality discriminator, Wav2Lip_disc_qual (spec section 4): 14,113,793 parameters at width 1
and 96 px.

Owns the discriminator's layer plan per face size (`face_encoder_plan`) and the module `QualityDisc`.

`apply(variables, faces (N, S, S, 3), train=False) -> (N, 1)` probabilities; it takes the lower half (rows
S//2..S-1) itself. `return_logits=True` gives the pre-sigmoid logits for a numerically stable
BCE-with-logits (`optax.sigmoid_binary_cross_entropy`). Time-major faces (B, T, S, S, 3) -> (B, T, 1).
No BatchNorm: variables are {'params': ...} only. `train` is accepted for a uniform call signature.

Face sizes: the architecture follows the input. At 96 it is the original. A larger face gets stride-2
prefix blocks (a k3 stride-2 and a k3 stride-1 conv, 32 channels, LeakyReLU like the rest) in front of the
original table until the lower half is <= 48 x 96 (one at 192, two at 288). See docs/models.md.

Submodule names mirror the official PyTorch keys: `face_encoder_blocks_{i}_{j}` (numbered in order through
the prefix blocks), `binary_pred_0`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import (
  Conv,
  ConvLeaky,
  LayerSpec,
  PairOrInt,
  annotate,
  block_class,
  face_size,
  prefix_strides,
  scaled_channels,
  spec,
)
from lipsync_jax.models.syncnet import check_bottleneck

# Blocks of ConvLeaky rows: (out channels, kernel, stride, padding).
DISC_FACE_ENCODER = [
  [(32, 7, 1, 3)],
  [(64, 5, (1, 2), 2), (64, 5, 1, 2)],
  [(128, 5, 2, 2), (128, 5, 1, 2)],
  [(256, 5, 2, 2), (256, 5, 1, 2)],
  [(512, 3, 2, 1), (512, 3, 1, 1)],
  [(512, 3, 2, 1), (512, 3, 1, 1)],
  [(512, 3, 1, 0), (512, 1, 1, 0)],
]
# The lower half of the original 96 face: prefix blocks halve an HD lower half down to this.
DISC_MAP_LIMIT = (48, 96)
PREFIX_CHANNELS = 32


def face_encoder_plan(img_size: PairOrInt) -> list[list[LayerSpec]]:
  """The discriminator's conv blocks for faces of `img_size` (its input is the lower half), then
  [[binary_pred_0]]. ValueError for an unsupported size (`layers.SUPPORTED_FACE_SIZES`)."""
  height, width = face_size(img_size)
  current = (height - height // 2, width)
  strides = prefix_strides(current, DISC_MAP_LIMIT)
  prefix = [[(PREFIX_CHANNELS, 3, s, 1), (PREFIX_CHANNELS, 3, 1, 1)] for s in strides]
  blocks = []
  for i, rows in enumerate(prefix + DISC_FACE_ENCODER):
    block = annotate([spec(f"face_encoder_blocks_{i}_{j}", *row) for j, row in enumerate(rows)], current)
    blocks.append(block)
    current = block[-1].out_size
  check_bottleneck(blocks[-1], img_size, "QualityDisc")
  blocks.append(annotate([spec("binary_pred_0", 1, 1, 1, 0, op="plain")], current))
  return blocks


class QualityDisc(nn.Module):
  """Wav2Lip_disc_qual. Probabilities (N, 1) by default, logits with `return_logits=True`.

  The face size is read from `faces` (S in 96 / 192 / 288, or 192x288). `remat=True` rematerialises
  every conv layer in the backward pass (same variables, same values).
  """

  width_multiplier: float = 1.0
  compute_dtype: Any = jnp.float32
  transpose_impl: str = "auto"  # strided convs' input gradient: 'direct' | 'phase' | 'auto' (layers.conv2d)
  remat: bool = False

  @nn.compact
  def __call__(self, faces, train: bool = False, return_logits: bool = False):
    del train  # No normalisation layers.
    time_major = faces.ndim == 5
    if time_major:
      batch, steps = faces.shape[:2]
      faces = faces.reshape((batch * steps,) + faces.shape[2:])
    if faces.ndim != 4 or faces.shape[-1] != 3:
      raise ValueError(f"QualityDisc: faces must be (N, S, S, 3) or (B, T, S, S, 3), got {faces.shape}")
    try:
      *blocks, (pred,) = face_encoder_plan(faces.shape[1:3])
    except ValueError as err:
      raise ValueError(f"QualityDisc: faces {faces.shape}: {err}") from err
    dtype = self.compute_dtype
    x = faces[:, faces.shape[1] // 2 :].astype(dtype)
    for block in blocks:
      for layer in block:
        x = block_class(ConvLeaky, self.remat)(
          scaled_channels(layer.channels, self.width_multiplier),
          layer.kernel,
          layer.stride,
          layer.padding,
          dtype=dtype,
          transpose_impl=self.transpose_impl,
          name=layer.name,
        )(x)
    x = Conv(pred.channels, pred.kernel, pred.stride, pred.padding, dtype=dtype, name=pred.name)(x)
    logits = x.astype(jnp.float32).reshape(x.shape[0], -1)
    out = logits if return_logits else nn.sigmoid(logits)
    if time_major:
      out = out.reshape((batch, steps) + out.shape[1:])
    return out

  def logits(self, faces, train: bool = False):
    """Pre-sigmoid logits (N, 1); use via `apply(variables, faces, method=QualityDisc.logits)`."""
    return self(faces, train=train, return_logits=True)
