"""The visual-quality discriminator, Wav2Lip_disc_qual (spec section 4): 14,113,793 parameters at width 1.

`apply(variables, faces (N, S, S, 3), train=False) -> (N, 1)` probabilities; it takes the lower half (rows
S//2..S-1) itself. `return_logits=True` gives the pre-sigmoid logits for a numerically stable
BCE-with-logits (`optax.sigmoid_binary_cross_entropy`). Time-major faces (B, T, S, S, 3) -> (B, T, 1).
No BatchNorm: variables are {'params': ...} only. `train` is accepted for a uniform call signature.

Submodule names mirror the official PyTorch keys: `face_encoder_blocks_{i}_{j}`, `binary_pred_0`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import Conv, ConvLeaky, scaled_channels

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


class QualityDisc(nn.Module):
  """Wav2Lip_disc_qual. Probabilities (N, 1) by default, logits with `return_logits=True`."""

  width_multiplier: float = 1.0
  compute_dtype: Any = jnp.float32
  transpose_impl: str = "auto"  # strided convs' input gradient: 'direct' | 'phase' | 'auto' (layers.conv2d)

  @nn.compact
  def __call__(self, faces, train: bool = False, return_logits: bool = False):
    del train  # No normalisation layers.
    time_major = faces.ndim == 5
    if time_major:
      batch, steps = faces.shape[:2]
      faces = faces.reshape((batch * steps,) + faces.shape[2:])
    if faces.ndim != 4 or faces.shape[-1] != 3:
      raise ValueError(f"QualityDisc: faces must be (N, S, S, 3) or (B, T, S, S, 3), got {faces.shape}")
    dtype = self.compute_dtype
    x = faces[:, faces.shape[1] // 2 :].astype(dtype)
    for i, block in enumerate(DISC_FACE_ENCODER):
      for j, (channels, kernel, stride, padding) in enumerate(block):
        x = ConvLeaky(
          scaled_channels(channels, self.width_multiplier),
          kernel,
          stride,
          padding,
          dtype=dtype,
          transpose_impl=self.transpose_impl,
          name=f"face_encoder_blocks_{i}_{j}",
        )(x)
    x = Conv(1, 1, 1, 0, dtype=dtype, name="binary_pred_0")(x)
    logits = x.astype(jnp.float32).reshape(x.shape[0], -1)
    out = logits if return_logits else nn.sigmoid(logits)
    if time_major:
      out = out.reshape((batch, steps) + out.shape[1:])
    return out

  def logits(self, faces, train: bool = False):
    """Pre-sigmoid logits (N, 1); use via `apply(variables, faces, method=QualityDisc.logits)`."""
    return self(faces, train=train, return_logits=True)
