"""Export the generator (or the expert) for serving as a jax.export StableHLO artifact.

Owns the artifact format that `lipsync_jax.inference.serving.load` reads:

  DIR/model.jaxexport      serialized `jax.export.Exported` (StableHLO + calling convention), batch dim
                           symbolic ('b') by default, lowered for cpu, cuda and tpu by default (the
                           transposed-conv implementation picked at export time is used on all of them;
                           both implementations compute the same function)
  DIR/params.npz           the (BN-folded) parameters, one array per leaf, keys 'a/b/c' (np.load with
                           allow_pickle=False: no pickles anywhere)
  DIR/export_meta.json     kind, img_size, width_multiplier, platforms, input/output layout, leaf keys

Design choice: parameters are an INPUT of the exported function, not baked-in constants. The artifact stays
small (no 145 MB of constants inside the MLIR module), it serializes/deserializes fast, and new weights of the
same architecture (another checkpoint) reuse the same compiled graph. BatchNorm is folded into the convs first
(`lipsync_jax.models.fold_batch_norm`) so the served graph is conv+bias+ReLU only.

Exported functions (float32 NHWC):
  wav2lip: (params, mel (b,80,16,1), faces (b,S,S,6) in [0,1]) -> frames (b,S,S,3) in [0,1]
  syncnet: (params, mel (b,80,16,1), faces (b,S/2,S,15) in [0,1]) -> (audio_emb (b,E), face_emb (b,E))

CLI (lipsync_jax/export.py): python -m lipsync_jax.export --checkpoint CKPT --kind wav2lip --out DIR
     [--batch symbolic|N] [--platforms cpu,cuda,tpu]     (CKPT: anything lipsync_jax.weights.load reads)
Exported artifacts are tied to the jax.export serialization version, not to the jax version that wrote them
(see jax.export's compatibility guarantees).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import fs, weights

EXPORT_FILE = "model.jaxexport"
PARAMS_FILE = "params.npz"
META_FILE = "export_meta.json"
KINDS = ("wav2lip", "syncnet")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")  # one artifact serves on any of them
PARAM_KEY_SEP = "/"


def params_to_npz_dict(params) -> dict[str, np.ndarray]:
  """Param tree -> {'a/b/c': float32 array} (the keys of params.npz; weights.flatten joined by '/')."""
  return {
    PARAM_KEY_SEP.join(path): np.asarray(value, np.float32)
    for path, value in sorted(weights.flatten(params).items())
  }


def params_from_npz_dict(flat: dict) -> dict:
  """The inverse of params_to_npz_dict."""
  return weights.unflatten({tuple(key.split(PARAM_KEY_SEP)): value for key, value in flat.items()})


def transpose_impl_for(platforms: Sequence[str]) -> str:
  """The transposed-conv form to bake into an artifact: chosen by the platforms it targets, not by the
  machine that exports it ('phase' is the faster forward on XLA:CPU, XLA's own 'direct' elsewhere)."""
  return "phase" if tuple(platforms) == ("cpu",) else "direct"


def _model_and_inputs(kind: str, meta: dict, batch, platforms: Sequence[str]):
  from lipsync_jax import models

  width = float(meta.get("width_multiplier", 1.0))
  size = int(meta.get("img_size", 96))
  model = models.MODELS[kind](
    width_multiplier=width, fold_bn=True, transpose_impl=transpose_impl_for(platforms)
  )
  mel = jax.ShapeDtypeStruct((batch, 80, 16, 1), jnp.float32)
  faces_shape = (batch, size, size, 6) if kind == "wav2lip" else (batch, size // 2, size, 15)
  return model, mel, jax.ShapeDtypeStruct(faces_shape, jnp.float32)


def export_model(
  variables,
  meta: dict,
  out_dir: str,
  kind: str = "wav2lip",
  batch: int | str = "symbolic",
  platforms: Sequence[str] | None = None,
) -> dict:
  """Writes the artifact directory; returns its export_meta dict. batch: 'symbolic' or a fixed int."""
  from lipsync_jax import models

  if kind not in KINDS:
    raise ValueError(f"export kind {kind!r}; use one of {KINDS}")
  params = models.fold_batch_norm(kind, variables)["params"]
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  batch_dim = jax.export.symbolic_shape("b")[0] if batch == "symbolic" else int(batch)
  platforms = tuple(platforms) if platforms else DEFAULT_PLATFORMS
  model, mel, faces = _model_and_inputs(kind, meta, batch_dim, platforms)

  def serve(params, mel, faces):
    return model.apply({"params": params}, mel, faces, train=False)

  param_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  exported = jax.export.export(jax.jit(serve), platforms=platforms)(param_shapes, mel, faces)
  fs.makedirs(out_dir)
  with fs.open(os.path.join(out_dir, EXPORT_FILE), "wb") as f:
    f.write(exported.serialize())
  flat = params_to_npz_dict(params)
  with fs.open(os.path.join(out_dir, PARAMS_FILE), "wb") as f:
    np.savez(f, **flat)
  export_meta = {
    "kind": kind,
    "img_size": int(meta.get("img_size", 96)),
    "width_multiplier": float(meta.get("width_multiplier", 1.0)),
    "batch": str(batch),
    "platforms": list(platforms),
    "transpose_impl": transpose_impl_for(platforms),
    "bn_folded": True,
    "param_keys": sorted(flat),
    "inputs": {"mel": "(b, 80, 16, 1) float32", "faces": str(tuple(faces.shape[1:])) + " float32 in [0,1]"},
    "outputs": "frames (b, S, S, 3) in [0,1]" if kind == "wav2lip" else "(audio_emb, face_emb)",
    "jax_version": jax.__version__,
  }
  with fs.open(os.path.join(out_dir, META_FILE), "w") as f:
    json.dump(export_meta, f, indent=2)
  return export_meta
