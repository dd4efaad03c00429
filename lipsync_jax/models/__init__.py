"""The three Wav2Lip networks as Flax linen modules (NHWC), plus shared helpers.

Public: `SyncNet`, `Wav2Lip`, `QualityDisc`, `MODELS` (kind name -> class), `example_inputs(kind, batch,
img_size)` (zero inputs of the right shapes, e.g. for `init` / `jax.eval_shape`), `sync_probability`,
`scaled_channels`, `fold_batch_norm`, `SUPPORTED_FACE_SIZES`.

Face sizes: each network's architecture follows its input's face size, 96 (the original networks), 192,
288 or 192x288 (HxW); the layer plans are `wav2lip.layer_plan`, `syncnet.face_encoder_plan` and
`disc.face_encoder_plan` (docs/models.md). Every network takes `remat=True` to rematerialise its conv
layers in the backward pass (same variables and values, less activation memory).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from lipsync_jax.models.disc import QualityDisc
from lipsync_jax.models.layers import BN_EPS, SUPPORTED_FACE_SIZES, pair, scaled_channels
from lipsync_jax.models.syncnet import SyncNet, sync_probability
from lipsync_jax.models.wav2lip import Wav2Lip

# Wav2Lip modules whose conv is a ConvTranspose (kernel (kh, kw, out, in)): the first layer of every
# decoder block but block 0, at every face size (the HD mirrored blocks are numbered on from 7).
TRANSPOSED_CONV = re.compile(r"face_decoder_blocks_[1-9]\d*_0")

MODELS = {"syncnet": SyncNet, "wav2lip": Wav2Lip, "disc": QualityDisc}


# kind -> shapes of its inputs at a batch size and face size (int side or (H, W); what `apply` takes
# after `variables`).
INPUT_SHAPES = {
  "syncnet": lambda batch, size: [(batch, 80, 16, 1), (batch, pair(size)[0] // 2, pair(size)[1], 15)],
  "wav2lip": lambda batch, size: [(batch, 80, 16, 1), (batch, *pair(size), 6)],
  "disc": lambda batch, size: [(batch, *pair(size), 3)],
}


def example_inputs(
  kind: str, batch: int = 1, img_size: int | tuple[int, int] = 96, dtype=jnp.float32
) -> tuple:
  """Zero inputs for `MODELS[kind]`: syncnet (mel, faces lower halves), wav2lip (mel, faces), disc (faces).

  `img_size` is the face side (or (H, W)); the networks accept `SUPPORTED_FACE_SIZES`."""
  if kind not in INPUT_SHAPES:
    raise ValueError(f"unknown model kind {kind!r}; use one of {sorted(MODELS)}")
  return tuple(jnp.zeros(shape, dtype) for shape in INPUT_SHAPES[kind](batch, img_size))


def fold_batch_norm(kind: str, variables) -> dict:
  """Eval-mode variables -> {'params'} for `MODELS[kind](fold_bn=True)`: BN (running stats) folded into convs.

  For each conv + BN pair: kernel *= scale / sqrt(var + eps) along the output channels; bias becomes
  (bias - mean) * that + bn_bias. Transposed convs (Wav2Lip decoder blocks' first layer) keep their
  output channels on kernel axis 2, plain convs on axis 3. Outputs equal the unfolded model in eval mode.
  """
  if kind not in MODELS:
    raise ValueError(f"unknown model kind {kind!r}; use one of {sorted(MODELS)}")
  params, stats = variables["params"], variables.get("batch_stats", {})
  folded = {}
  for name, module in params.items():
    if "bn" not in module:
      folded[name] = jax.tree.map(jnp.asarray, dict(module))
      continue
    bn, running = module["bn"], stats[name]["bn"]
    multiplier = bn["scale"] * jax.lax.rsqrt(running["var"] + BN_EPS)
    out_axis = 2 if kind == "wav2lip" and TRANSPOSED_CONV.fullmatch(name) else 3
    shape = [1, 1, 1, 1]
    shape[out_axis] = -1
    kernel = module["conv"]["kernel"] * multiplier.reshape(shape)
    bias = (module["conv"]["bias"] - running["mean"]) * multiplier + bn["bias"]
    folded[name] = {"conv": {"kernel": kernel, "bias": bias}}
  return {"params": folded}


__all__ = [
  "SyncNet",
  "Wav2Lip",
  "QualityDisc",
  "MODELS",
  "INPUT_SHAPES",
  "SUPPORTED_FACE_SIZES",
  "example_inputs",
  "fold_batch_norm",
  "scaled_channels",
  "sync_probability",
]
