"""SyncNet v2: the network behind the LSE-D / LSE-C lip-sync metrics, as a Flax linen module.

Owns the layer list of joonson/syncnet_python's `SyncNetModel.S` (the model whose public weights file is
`syncnet_v2.model`), ported to NHWC / NDHWC. The layer list below is RECONSTRUCTED from our knowledge of
that public repository (and cross-checked against public copies of it); no code was copied. Module names
mirror the PyTorch state-dict keys (`netcnnaud.0.weight` -> `netcnnaud_0/kernel`), so conversion is a pure
renaming + transposition (see `lipsync_jax.weights`, kind 'syncnet_v2').

Audio branch `netcnnaud` on MFCC (B, 13, 20, 1) (13 coefficients x 20 steps of 10 ms, NHWC):
  0 Conv(1,64,3x3,p1) 1 BN 2 ReLU 3 MaxPool(1x1)
  4 Conv(64,192,3x3,p1) 5 BN 6 ReLU 7 MaxPool(3x3, stride (1,2))
  8 Conv(192,384,3x3,p1) 9 BN 10 ReLU
  11 Conv(384,256,3x3,p1) 12 BN 13 ReLU
  14 Conv(256,256,3x3,p1) 15 BN 16 ReLU 17 MaxPool(3x3, stride 2)
  18 Conv(256,512,(5,4),p0) 19 BN 20 ReLU            13x20 -> 13x20 -> 11x9 -> 5x4 -> 1x1
`netfcaud`: 0 Linear(512,512) 1 BatchNorm1d 2 ReLU 3 Linear(512,1024).
Lip branch `netcnnlip` on 5 BGR frames (B, 5, 224, 224, 3) raw 0..255 (NDHWC):
  0 Conv3d(3,96,(5,7,7),s(1,2,2),p0) 1 BN 2 ReLU 3 MaxPool3d((1,3,3), s(1,2,2))
  4 Conv3d(96,256,(1,5,5),s(1,2,2),p(0,1,1)) 5 BN 6 ReLU 7 MaxPool3d((1,3,3), s(1,2,2), p(0,1,1))
  8 Conv3d(256,256,(1,3,3),p(0,1,1)) 9 BN 10 ReLU
  11 Conv3d(256,256,(1,3,3),p(0,1,1)) 12 BN 13 ReLU
  14 Conv3d(256,256,(1,3,3),p(0,1,1)) 15 BN 16 ReLU 17 MaxPool3d((1,3,3), s(1,2,2))
  18 Conv3d(256,512,(1,6,6),p0) 19 BN 20 ReLU        T 5->1; 224 -> 109 -> 54 -> 26 -> 13 -> 13 -> 6 -> 1
`netfclip`: 0 Linear(512,512) 1 BatchNorm1d 2 ReLU 3 Linear(512,1024).
Outputs are 1024-d and NOT normalised. All BatchNorms use eps 1e-5 (inference: running statistics).
PyTorch max-pooling pads with -inf, as flax.linen.max_pool does.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

# (kind, index, args). conv: (features, kernel, strides, padding); pool: (window, strides, padding).
AUDIO_CNN: Sequence[tuple] = (
  ("conv", 0, (64, (3, 3), (1, 1), (1, 1))),
  ("bn", 1, None),
  ("pool", 3, ((1, 1), (1, 1), (0, 0))),
  ("conv", 4, (192, (3, 3), (1, 1), (1, 1))),
  ("bn", 5, None),
  ("pool", 7, ((3, 3), (1, 2), (0, 0))),
  ("conv", 8, (384, (3, 3), (1, 1), (1, 1))),
  ("bn", 9, None),
  ("conv", 11, (256, (3, 3), (1, 1), (1, 1))),
  ("bn", 12, None),
  ("conv", 14, (256, (3, 3), (1, 1), (1, 1))),
  ("bn", 15, None),
  ("pool", 17, ((3, 3), (2, 2), (0, 0))),
  ("conv", 18, (512, (5, 4), (1, 1), (0, 0))),
  ("bn", 19, None),
)
LIP_CNN: Sequence[tuple] = (
  ("conv", 0, (96, (5, 7, 7), (1, 2, 2), (0, 0, 0))),
  ("bn", 1, None),
  ("pool", 3, ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
  ("conv", 4, (256, (1, 5, 5), (1, 2, 2), (0, 1, 1))),
  ("bn", 5, None),
  ("pool", 7, ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
  ("conv", 8, (256, (1, 3, 3), (1, 1, 1), (0, 1, 1))),
  ("bn", 9, None),
  ("conv", 11, (256, (1, 3, 3), (1, 1, 1), (0, 1, 1))),
  ("bn", 12, None),
  ("conv", 14, (256, (1, 3, 3), (1, 1, 1), (0, 1, 1))),
  ("bn", 15, None),
  ("pool", 17, ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
  ("conv", 18, (512, (1, 6, 6), (1, 1, 1), (0, 0, 0))),
  ("bn", 19, None),
)
EMBED_DIM = 1024
BN_EPS = 1e-5


class SyncNetV2(nn.Module):
  """SyncNet v2 (syncnet_python `S`, num_layers_in_fc_layers=1024), inference only.

  `SyncNetV2().apply(variables, mfcc=(B,13,20,1))` -> (B,1024) audio features;
  `SyncNetV2().apply(variables, lips=(B,5,224,224,3))` -> (B,1024) lip features; both given -> tuple.
  Lips are BGR 0..255 floats (no normalisation), mfcc as python_speech_features.mfcc returns them.
  """

  embed_dim: int = EMBED_DIM
  width_multiplier: float = 1.0  # tests only; the public weights are 1.0

  def _cnn(self, x, layers, prefix):
    for kind, index, args in layers:
      if kind == "conv":
        features, kernel, strides, padding = args
        features = max(1, int(round(features * self.width_multiplier)))
        x = nn.Conv(features, kernel, strides, padding=[(p, p) for p in padding], name=f"{prefix}_{index}")(x)
      elif kind == "bn":
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=f"{prefix}_{index}")(x)
        x = nn.relu(x)
      else:
        window, strides, padding = args
        x = nn.max_pool(x, window, strides, padding=[(p, p) for p in padding])
    return x.reshape(x.shape[0], -1)

  def _fc(self, x, prefix):
    hidden = max(1, int(round(512 * self.width_multiplier)))
    x = nn.Dense(hidden, name=f"{prefix}_0")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=f"{prefix}_1")(x))
    return nn.Dense(self.embed_dim, name=f"{prefix}_3")(x)

  def embed_audio(self, mfcc):
    return self._fc(self._cnn(jnp.asarray(mfcc, jnp.float32), AUDIO_CNN, "netcnnaud"), "netfcaud")

  def embed_lips(self, lips):
    return self._fc(self._cnn(jnp.asarray(lips, jnp.float32), LIP_CNN, "netcnnlip"), "netfclip")

  @nn.compact
  def __call__(self, mfcc=None, lips=None):
    if mfcc is None and lips is None:
      raise ValueError("SyncNetV2 needs mfcc (B,13,20,1) and/or lips (B,5,224,224,3).")
    audio = self.embed_audio(mfcc) if mfcc is not None else None
    video = self.embed_lips(lips) if lips is not None else None
    if audio is None:
      return video
    if video is None:
      return audio
    return audio, video


def init_variables(rng, width_multiplier: float = 1.0):
  """Random variables with the full structure (both branches)."""
  model = SyncNetV2(width_multiplier=width_multiplier)
  return model.init(rng, mfcc=jnp.zeros((1, 13, 20, 1)), lips=jnp.zeros((1, 5, 224, 224, 3)))
