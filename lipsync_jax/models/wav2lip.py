"""The generator, Wav2Lip (spec section 3): 36,298,035 parameters at width 1 and 96 px.

Owns the generator's layer plan per face size (`layer_plan`, `face_encoder_plan`, `face_decoder_plan`)
and the module `Wav2Lip`.

Inputs (NHWC): mel (B, 80, 16, 1), faces (B, S, S, 6) = [target with lower half zeroed | reference], BGR in
[0,1]; output (B, S, S, 3) in [0,1] (float32). Time-major batches mel (B, T, 80, 16, 1), faces
(B, T, S, S, 6) are folded to B*T and returned as (B, T, S, S, 3).

Face sizes: the architecture follows the input. At 96 it is the original. A larger face keeps the
full-resolution 16-channel stem, then gets stride-2 prefix stages (32 channels, k3, + 2 residual blocks
each) until the map is <= 96 (one at 192, two at 288), then the original encoder table down to the 1x1
bottleneck; the decoder is the original one plus one mirrored transposed-conv block (32 channels + 2
residual blocks) per prefix stage, each concatenating the skip of the encoder block of its size. Every
transposed conv's output_padding is computed from the skip it meets (1 everywhere at 96; 0 where 288's
odd maps 9 -> 5 -> 3 are mirrored). See docs/models.md.

Submodule names mirror the official PyTorch keys: `face_encoder_blocks_{i}_{j}`, `audio_encoder_{i}`,
`face_decoder_blocks_{i}_{j}`, `output_block_{0,1}`, numbered in order through the extra stages (the 96
tree is the original's).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import (
  Conv,
  ConvBN,
  LayerSpec,
  PairOrInt,
  annotate,
  block_class,
  conv_transpose_out,
  face_size,
  pair,
  prefix_strides,
  scaled_channels,
  spec,
)
from lipsync_jax.models.syncnet import check_bottleneck, residuals, run_layers, table_specs

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
# ('convT', c, k, s, p); a transposed conv's output_padding is computed from the skip it meets (the
# original's is 1 at every stride-2 block, which is what the rule gives at 96).
WAV2LIP_FACE_DECODER = [
  (("conv", 512, 1, 1, 0), 0),
  (("convT", 512, 3, 1, 0), 1),
  (("convT", 512, 3, 2, 1), 2),
  (("convT", 384, 3, 2, 1), 2),
  (("convT", 256, 3, 2, 1), 2),
  (("convT", 128, 3, 2, 1), 2),
  (("convT", 64, 3, 2, 1), 2),
]
# HD: the map the prefix stages halve down to, and their width (also of the mirrored decoder blocks).
GENERATOR_MAP_LIMIT = (96, 96)
PREFIX_CHANNELS = 32
PREFIX_RESIDUALS = 2


def _output_padding(name: str, size, target, kernel, stride, padding) -> tuple[int, int]:
  """Per axis: target - (transposed-conv output without padding); must lie in [0, stride - 1]."""
  pads = []
  for n, t, k, s, p in zip(size, target, kernel, stride, padding):
    extra = t - conv_transpose_out(n, k, s, p)
    if not 0 <= extra < s and not (extra == 0 and s == 1):
      raise ValueError(f"Wav2Lip: {name} cannot reach its skip's {tuple(target)} map from {tuple(size)}")
    pads.append(extra)
  return tuple(pads)


def layer_plan(img_size: PairOrInt) -> dict[str, list]:
  """The whole generator for faces of `img_size` (int or (H, W)): {'audio_encoder': [LayerSpec],
  'face_encoder': [[LayerSpec] per block], 'face_decoder': [[LayerSpec] per block], 'output_block':
  [LayerSpec]}. ValueError for an unsupported size (`layers.SUPPORTED_FACE_SIZES`)."""
  size = face_size(img_size)
  stem, *rest = WAV2LIP_FACE_ENCODER
  stem_specs = annotate(table_specs(stem, "face_encoder_blocks_0"), size)
  strides = prefix_strides(stem_specs[-1].out_size, GENERATOR_MAP_LIMIT)
  stage = residuals(PREFIX_CHANNELS, PREFIX_RESIDUALS)
  prefix = [[(PREFIX_CHANNELS, 3, stride, 1, False), *stage] for stride in strides]
  encoder, current = [stem_specs], stem_specs[-1].out_size
  for i, rows in enumerate(prefix + rest, start=1):
    block = annotate(table_specs(rows, f"face_encoder_blocks_{i}"), current)
    encoder.append(block)
    current = block[-1].out_size
  check_bottleneck(encoder[-1], img_size, "Wav2Lip")

  # Decoder: the original blocks, then one mirrored block per prefix stage (last prefix stage first).
  firsts = [(first, count) for first, count in WAV2LIP_FACE_DECODER]
  firsts += [(("convT", PREFIX_CHANNELS, 3, s, 1), PREFIX_RESIDUALS) for s in reversed(strides)]
  decoder, current = [], (1, 1)  # the audio embedding
  for i, ((op, channels, kernel, stride, padding), count) in enumerate(firsts):
    name, target = f"face_decoder_blocks_{i}", encoder[-1 - i][-1].out_size
    first = spec(f"{name}_0", channels, kernel, stride, padding, op=op)
    if op == "convT":
      extra = _output_padding(name, current, target, first.kernel, first.stride, first.padding)
      first = dataclasses.replace(first, output_padding=extra)
    block = annotate([first, *table_specs(residuals(channels, count), name, start_index=1)], current)
    if block[-1].out_size != target:
      raise ValueError(f"Wav2Lip: {name} gives a {block[-1].out_size} map, its skip is {target}")
    decoder.append(block)
    current = target
  output = annotate(
    [spec("output_block_0", 32, 3, 1, 1), spec("output_block_1", 3, 1, 1, 0, op="plain")], current
  )
  audio = annotate(table_specs(WAV2LIP_AUDIO_ENCODER, "audio_encoder"), (80, 16))
  return {"audio_encoder": audio, "face_encoder": encoder, "face_decoder": decoder, "output_block": output}


def face_encoder_plan(img_size: PairOrInt) -> list[list[LayerSpec]]:
  """The generator's face encoder blocks for faces of `img_size`; each block's output is a skip."""
  return layer_plan(img_size)["face_encoder"]


def face_decoder_plan(img_size: PairOrInt) -> list[list[LayerSpec]]:
  """The generator's decoder blocks for faces of `img_size` (block i meets encoder block -1-i's skip)."""
  return layer_plan(img_size)["face_decoder"]


class Wav2Lip(nn.Module):
  """Wav2Lip generator. `apply(variables, mel, faces, train=False) -> faces (.., S, S, 3)` in [0,1].

  The face size is read from `faces` (S in 96 / 192 / 288, or 192x288). `remat=True` rematerialises
  every conv layer in the backward pass (same variables, same values).
  """

  width_multiplier: float = 1.0
  compute_dtype: Any = jnp.float32
  transpose_impl: str = "auto"  # 'direct' | 'phase' | 'auto' (see layers.ConvTranspose)
  fold_bn: bool = False
  remat: bool = False

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
    try:
      plan = layer_plan(pair(faces.shape[1:3]))
    except ValueError as err:
      raise ValueError(f"Wav2Lip: faces {faces.shape}: {err}") from err
    dtype = self.compute_dtype
    args = (self.width_multiplier, dtype, train, self.fold_bn)
    common = dict(transpose_impl=self.transpose_impl, remat=self.remat)

    audio = run_layers(mel.astype(dtype), plan["audio_encoder"], *args, **common)
    skips = []
    x = faces.astype(dtype)
    for block in plan["face_encoder"]:
      x = run_layers(x, block, *args, **common)
      skips.append(x)

    x = audio
    for block in plan["face_decoder"]:
      x = run_layers(x, block, *args, **common)
      skip = skips.pop()
      if x.shape[:3] != skip.shape[:3]:
        raise ValueError(f"Wav2Lip: {block[0].name} output {x.shape} does not match its skip {skip.shape}")
      x = jnp.concatenate([x, skip], axis=-1)

    out_0, out_1 = plan["output_block"]
    x = block_class(ConvBN, self.remat)(
      scaled_channels(out_0.channels, self.width_multiplier),
      out_0.kernel,
      out_0.stride,
      out_0.padding,
      fold_bn=self.fold_bn,
      dtype=dtype,
      name=out_0.name,
    )(x, train)
    x = Conv(out_1.channels, out_1.kernel, out_1.stride, out_1.padding, dtype=dtype, name=out_1.name)(x)
    out = nn.sigmoid(x.astype(jnp.float32))
    if time_major:
      out = out.reshape((batch, steps) + out.shape[1:])
    return out
