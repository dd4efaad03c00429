"""Export the generator (or the expert) for serving as a jax.export StableHLO artifact.

Owns the artifact format that `lipsync_jax.serving.load` reads:

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

CLI: python -m lipsync_jax.export --checkpoint CKPT --kind wav2lip --out DIR [--batch symbolic|N]
     [--platforms cpu,cuda,tpu]
Exported artifacts are tied to the jax.export serialization version, not to the jax version that wrote them
(see jax.export's compatibility guarantees).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

EXPORT_FILE = "model.jaxexport"
PARAMS_FILE = "params.npz"
META_FILE = "export_meta.json"
KINDS = ("wav2lip", "syncnet")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")  # one artifact serves on any of them


def flatten_params(tree, prefix: str = "") -> dict[str, np.ndarray]:
  flat = {}
  for key in sorted(tree):
    value = tree[key]
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, dict) or hasattr(value, "items"):
      flat.update(flatten_params(dict(value), path))
    else:
      flat[path] = np.asarray(value, np.float32)
  return flat


def unflatten_params(flat: dict) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def transpose_impl_for(platforms: Sequence[str]) -> str:
  """The transposed-conv form to bake into an artifact: chosen by the platforms it targets, not by the
  machine that exports it ('phase' is the faster forward on XLA:CPU, XLA's own 'direct' elsewhere)."""
  return "phase" if tuple(platforms) == ("cpu",) else "direct"


def _model_and_inputs(kind: str, meta: dict, batch, platforms: Sequence[str]):
  from lipsync_jax import models
  width = float(meta.get("width_multiplier", 1.0))
  size = int(meta.get("img_size", 96))
  model = models.MODELS[kind](width_multiplier=width, fold_bn=True,
                              transpose_impl=transpose_impl_for(platforms))
  mel = jax.ShapeDtypeStruct((batch, 80, 16, 1), jnp.float32)
  faces_shape = (batch, size, size, 6) if kind == "wav2lip" else (batch, size // 2, size, 15)
  return model, mel, jax.ShapeDtypeStruct(faces_shape, jnp.float32)


def export_model(variables, meta: dict, out_dir: str, kind: str = "wav2lip", batch: int | str = "symbolic",
                 platforms: Sequence[str] | None = None) -> dict:
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
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, EXPORT_FILE), "wb") as f:
    f.write(exported.serialize())
  flat = flatten_params(params)
  np.savez(os.path.join(out_dir, PARAMS_FILE), **flat)
  export_meta = {
      "kind": kind, "img_size": int(meta.get("img_size", 96)),
      "width_multiplier": float(meta.get("width_multiplier", 1.0)), "batch": str(batch),
      "platforms": list(platforms), "transpose_impl": transpose_impl_for(platforms), "bn_folded": True,
      "param_keys": sorted(flat),
      "inputs": {"mel": "(b, 80, 16, 1) float32", "faces": str(tuple(faces.shape[1:])) + " float32 in [0,1]"},
      "outputs": "frames (b, S, S, 3) in [0,1]" if kind == "wav2lip" else "(audio_emb, face_emb)",
      "jax_version": jax.__version__,
  }
  with open(os.path.join(out_dir, META_FILE), "w") as f:
    json.dump(export_meta, f, indent=2)
  return export_meta


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m lipsync_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint", required=True, help="official .pth, variables dir or training workdir")
  parser.add_argument("--kind", choices=KINDS, default="wav2lip")
  parser.add_argument("--out", required=True, help="artifact directory")
  parser.add_argument("--batch", default="symbolic", help="'symbolic' (any batch) or a fixed batch size")
  parser.add_argument("--platforms", default=",".join(DEFAULT_PLATFORMS), help="comma list of platforms")
  args = parser.parse_args(argv)
  from lipsync_jax import infer
  try:
    variables, meta = infer.load_checkpoint(args.checkpoint, args.kind)
    platforms = args.platforms.split(",") if args.platforms else None
    result = export_model(variables, meta, args.out, args.kind, args.batch, platforms)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"exported {args.kind} (batch {result['batch']}, platforms {result['platforms']}) to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
