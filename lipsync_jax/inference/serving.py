"""Load an exported lipsync_jax artifact (see lipsync_jax.inference.export) as a plain callable.

Owns `load(path) -> ServedModel`. Only the StableHLO artifact, a pickle-free .npz of parameters and a JSON
file are read; no Flax module or model code is needed at serving time.

  served = serving.load("exported/wav2lip")
  frames = served(mel, faces)   # wav2lip: mel (B,80,16[,1]), faces (B,S,S,6) in [0,1] -> (B,S,S,3) in [0,1]
  audio_emb, face_emb = served(mel, faces)   # syncnet artifact
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import fs
from lipsync_jax.inference.export import EXPORT_FILE, META_FILE, PARAMS_FILE, params_from_npz_dict


class ServedModel:
  """Callable around a deserialized `jax.export.Exported` with its parameters on the default device."""

  def __init__(self, exported, params, meta: dict):
    self.exported, self.meta = exported, meta
    self.params = jax.device_put(params)
    self._call = jax.jit(exported.call)

  @property
  def img_size(self) -> int:
    return int(self.meta["img_size"])

  def __call__(self, mel, faces):
    mel = jnp.asarray(mel, jnp.float32)
    if mel.ndim == 3:
      mel = mel[..., None]
    return self._call(self.params, mel, jnp.asarray(faces, jnp.float32))


def load(path: str) -> ServedModel:
  """Reads DIR/{model.jaxexport, params.npz, export_meta.json}; raises ValueError naming what is missing."""
  files = {name: os.path.join(path, name) for name in (EXPORT_FILE, PARAMS_FILE, META_FILE)}
  missing = [name for name, p in files.items() if not fs.isfile(p)]
  if missing:
    raise ValueError(
      f"{path}: not a lipsync_jax export (missing {missing}); create one with `python -m lipsync_jax.export`"
    )
  with fs.open(files[EXPORT_FILE], "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with fs.open(files[META_FILE]) as f:
    meta = json.load(f)
  with fs.open(files[PARAMS_FILE], "rb") as f, np.load(f, allow_pickle=False) as data:
    flat = {key: data[key] for key in data.files}
  if sorted(flat) != sorted(meta.get("param_keys", flat)):
    raise ValueError(f"{path}: {PARAMS_FILE} does not match {META_FILE} (different export runs?)")
  return ServedModel(exported, params_from_npz_dict(flat), meta)
