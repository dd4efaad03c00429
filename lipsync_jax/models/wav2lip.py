"""The generator, Wav2Lip (spec section 3): 36,298,035 parameters at width 1.

Inputs (NHWC): mel (B, 80, 16, 1), faces (B, S, S, 6) = [target with lower half zeroed | reference], BGR in
[0,1]; output (B, S, S, 3) in [0,1] (float32). Time-major batches mel (B, T, 80, 16, 1), faces
(B, T, S, S, 6) are folded to B*T and returned as (B, T, S, S, 3).

Submodule names mirror the official PyTorch keys: `face_encoder_blocks_{i}_{j}`, `audio_encoder_{i}`,
`face_decoder_blocks_{i}_{j}`, `output_block_{0,1}`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import Conv, ConvBN, ConvTBN, scaled_channels
from lipsync_jax.models.syncnet import residuals, run_encoder

# Rows: (out channels, kernel, stride, padding, residual).
WAV2LIP_AUDIO_ENCODER = [
  (32, 3, 1, 1, False),
  *residuals(32, 2),
  (64, 3, (3, 1), 1, False),
  *residuals(64, 2),
  (128, 3, 3, 1, False),
  *residuals(128, 2),
  (256, 3, (3, 2), 1, False),
  *residuals(256, 1),
  (512, 3, 1, 0, False),
  (512, 1, 1, 0, False),
]
# One list per block; each block's output is a skip connection.
WAV2LIP_FACE_ENCODER = [
  [(16, 7, 1, 3, False)],
  [(32, 3, 2, 1, False), *residuals(32, 2)],
  [(64, 3, 2, 1, False), *residuals(64, 3)],
  [(128, 3, 2, 1, False), *residuals(128, 2)],
  [(256, 3, 2, 1, False), *residuals(256, 2)],
  [(512, 3, 2, 1, False), *residuals(512, 1)],
  [(512, 3, 1, 0, False), (512, 1, 1, 0, False)],
]
# Decoder blocks: (first layer, number of residual blocks). First layer: ('conv', c, k, s, p) or
# ('convT', c, k, s, p, output_padding).
WAV2LIP_FACE_DECODER = [
  (("conv", 512, 1, 1, 0), 0),
  (("convT", 512, 3, 1, 0, 0), 1),
  (("convT", 512, 3, 2, 1, 1), 2),
  (("convT", 384, 3, 2, 1, 1), 2),
  (("convT", 256, 3, 2, 1, 1), 2),
  (("convT", 128, 3, 2, 1, 1), 2),
  (("convT", 64, 3, 2, 1, 1), 2),
]


class Wav2Lip(nn.Module):
  """Wav2Lip generator. `apply(variables, mel, faces, train=False) -> faces (.., S, S, 3)` in [0,1]."""

  width_multiplier: float = 1.0
  compute_dtype: Any = jnp.float32
  transpose_impl: str = "auto"  # 'direct' | 'phase' | 'auto' (see layers.ConvTranspose)
  fold_bn: bool = False

  @nn.compact
  def __call__(self, mel, faces, train: bool = False):
    time_major = faces.ndim == 5
    if time_major:
      if mel.ndim != 5 or mel.shape[:2] != faces.shape[:2]:
        raise ValueError(
          f"Wav2Lip: time-major input needs mel (B, T, 80, 16, 1) and faces (B, T, S, S, 6) "
          f"with equal (B, T); got mel {mel.shape}, faces {faces.shape}"
        )
      batch, steps = faces.shape[:2]
      mel = mel.reshape((batch * steps,) + mel.shape[2:])
      faces = faces.reshape((batch * steps,) + faces.shape[2:])
    if mel.ndim != 4 or mel.shape[-1] != 1 or faces.ndim != 4 or faces.shape[-1] != 6:
      raise ValueError(
        f"Wav2Lip: expected mel (B, 80, 16, 1) and faces (B, S, S, 6), got mel {mel.shape}, "
        f"faces {faces.shape}"
      )
    width, dtype, fold = self.width_multiplier, self.compute_dtype, self.fold_bn

    impl = self.transpose_impl
    audio = run_encoder(
      mel.astype(dtype),
      WAV2LIP_AUDIO_ENCODER,
      "audio_encoder",
      width,
      dtype,
      train,
      fold,
      transpose_impl=impl,
    )

    skips = []
    x = faces.astype(dtype)
    for i, block in enumerate(WAV2LIP_FACE_ENCODER):
      x = run_encoder(x, block, f"face_encoder_blocks_{i}", width, dtype, train, fold, transpose_impl=impl)
      skips.append(x)

    x = audio
    for i, (first, num_residual) in enumerate(WAV2LIP_FACE_DECODER):
      channels = scaled_channels(first[1], width)
      name = f"face_decoder_blocks_{i}"
      if first[0] == "conv":
        x = ConvBN(
          channels,
          first[2],
          first[3],
          first[4],
          fold_bn=fold,
          dtype=dtype,
          transpose_impl=impl,
          name=f"{name}_0",
        )(x, train=train)
      else:
        x = ConvTBN(
          channels,
          first[2],
          first[3],
          first[4],
          first[5],
          transpose_impl=self.transpose_impl,
          fold_bn=fold,
          dtype=dtype,
          name=f"{name}_0",
        )(x, train=train)
      x = run_encoder(
        x,
        residuals(first[1], num_residual),
        name,
        width,
        dtype,
        train,
        fold,
        start_index=1,
        transpose_impl=impl,
      )
      skip = skips.pop()
      if x.shape[:3] != skip.shape[:3]:
        raise ValueError(
          f"Wav2Lip: decoder block {i} output {x.shape} does not match its skip {skip.shape}; "
          f"this architecture supports face size 96 (got faces {faces.shape})"
        )
      x = jnp.concatenate([x, skip], axis=-1)

    x = ConvBN(scaled_channels(32, width), 3, 1, 1, fold_bn=fold, dtype=dtype, name="output_block_0")(
      x, train=train
    )
    x = Conv(3, 1, 1, 0, dtype=dtype, name="output_block_1")(x)
    out = nn.sigmoid(x.astype(jnp.float32))
    if time_major:
      out = out.reshape((batch, steps) + out.shape[1:])
    return out
