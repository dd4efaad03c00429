"""Official PyTorch checkpoints <-> lipsync_jax variables, and the project's variables-only format.

Owns:
  * `load_torch_checkpoint(path, kind, width_multiplier=None) -> variables` for kind in
    {'syncnet', 'wav2lip', 'disc'}: official `.pth` files (`{'state_dict': {'module.'+k: v}, ...}`) or a bare
    state_dict, read with `torch.load(..., weights_only=True)` only (never executes pickled code).
  * `torch_state_dict_to_variables(kind, state_dict, ...)` (the same from an in-memory dict) and the reverse
    `variables_to_torch_state_dict(kind, variables) -> {name: np.ndarray}` (exact round trip);
    `save_torch_checkpoint(path, kind, variables)` writes the official wrapper for the PyTorch ecosystem.
  * `save_variables(directory, variables, kind, meta=None)` and
    `load_variables(directory) -> (variables, meta)`:
    an orbax checkpoint under `directory/variables` + `directory/lipsync_jax_meta.json`
    ({"kind", "width_multiplier", "img_size", "source", ...}). Restoring needs no tree structure.
  * CLI: `python -m lipsync_jax.convert --kind wav2lip --src wav2lip_gan.pth --dst DIR`.

Every problem with an input file (unreadable, truncated, garbage, wrong kind, missing / unexpected key, shape
mismatch) raises one `CheckpointError` (a ValueError) naming the file and the key.

Key mapping: Flax module `face_encoder_blocks_1_2` <-> PyTorch prefix `face_encoder_blocks.1.2`; inside it
conv -> `conv_block.0`, bn -> `conv_block.1`; a plain conv (`output_block_1`, `binary_pred_0`) has no
`conv_block`. Kernels: ours (kh, kw, a, b) <-> PyTorch transposed by (3, 2, 0, 1) (both Conv2d and
ConvTranspose2d); BN scale/bias/mean/var <-> weight/bias/running_mean/running_var.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from typing import Any, Mapping

import numpy as np

META_FILE = "lipsync_jax_meta.json"
VARIABLES_DIR = "variables"
DEFAULT_IMG_SIZE = 96

# A key only the given kind has.
KIND_SIGNATURES = {
    "syncnet": "face_encoder.0.conv_block.0.weight",
    "wav2lip": "face_decoder_blocks.0.0.conv_block.0.weight",
    "disc": "binary_pred.0.weight",
}
# Each kind's first conv and its channels at width 1 (its output channels give the width multiplier).
FIRST_CONV = {
    "syncnet": ("face_encoder.0.conv_block.0.weight", 32),
    "wav2lip": ("face_encoder_blocks.0.0.conv_block.0.weight", 16),
    "disc": ("face_encoder_blocks.0.0.conv_block.0.weight", 32),
}
SUBMODULE_TO_TORCH = {"conv": "conv_block.0", "bn": "conv_block.1"}
LEAF_TO_TORCH = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean",
                 "var": "running_var"}
KERNEL_TO_TORCH = (3, 2, 0, 1)
KERNEL_FROM_TORCH = (2, 3, 1, 0)


class CheckpointError(ValueError):
  """A checkpoint file or state_dict cannot be used; the message names the file and the key."""


def _check_kind(kind: str) -> None:
  if kind not in FIRST_CONV:
    raise CheckpointError(f"unknown model kind {kind!r}; use one of {sorted(FIRST_CONV)}")


def torch_module_prefix(flax_module_name: str) -> str:
  """'face_encoder_blocks_1_2' -> 'face_encoder_blocks.1.2'."""
  match = re.fullmatch(r"(.*?)((?:_\d+)+)", flax_module_name)
  if not match:
    raise CheckpointError(f"cannot map Flax module {flax_module_name!r} to a PyTorch key")
  return match.group(1) + match.group(2).replace("_", ".")


def flax_path_to_torch_key(path: tuple[str, ...]) -> str:
  """('params', 'face_encoder_0', 'bn', 'scale') -> 'face_encoder.0.conv_block.1.weight'."""
  _, module, *rest = path
  parts = [torch_module_prefix(module)]
  parts += [SUBMODULE_TO_TORCH[p] for p in rest[:-1]]
  parts.append(LEAF_TO_TORCH[rest[-1]])
  return ".".join(parts)


def _is_kernel(path: tuple[str, ...]) -> bool:
  return path[-1] == "kernel"


def _flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def batch_norm_counters(flat_keys) -> list[str]:
  """The `num_batches_tracked` keys PyTorch stores for the BNs of a flat Flax tree."""
  stats_keys = [flax_path_to_torch_key(p) for p in flat_keys if p[0] == "batch_stats"]
  return sorted({k.rsplit(".", 1)[0] + ".num_batches_tracked" for k in stats_keys})


def infer_width_multiplier(kind: str, state_dict: Mapping[str, Any]) -> float:
  """Width multiplier from the first conv's output channels (exact for multipliers like 0.25, 0.5)."""
  key, base = FIRST_CONV[kind]
  shape = np.shape(state_dict.get(key, ()))
  return float(shape[0]) / base if shape else 1.0  # A bad shape is reported by the shape check.


def infer_width_from_variables(kind: str, variables: Mapping) -> float:
  first = {"syncnet": "face_encoder_0", "wav2lip": "face_encoder_blocks_0_0",
           "disc": "face_encoder_blocks_0_0"}[kind]
  return float(np.shape(variables["params"][first]["conv"]["kernel"])[-1]) / FIRST_CONV[kind][1]


def variables_template(kind: str, width_multiplier: float = 1.0) -> dict:
  """Shapes (jax.ShapeDtypeStruct) of a model's variables, without allocating or compiling."""
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import MODELS, example_inputs  # pylint: disable=import-outside-toplevel
  model = MODELS[kind](width_multiplier=width_multiplier)
  inputs = example_inputs(kind, batch=1, img_size=DEFAULT_IMG_SIZE)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))


def _to_numpy(value, key: str, source: str) -> np.ndarray:
  try:
    import torch  # pylint: disable=import-outside-toplevel
    if isinstance(value, torch.Tensor):
      value = value.detach().cpu()
      if value.is_floating_point():
        value = value.float()
      return value.numpy()
  except ImportError:
    pass
  if isinstance(value, np.ndarray):
    return value
  raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")


def _strip_wrapper(obj: Any, source: str) -> dict:
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping) or not obj:
    raise CheckpointError(f"{source}: expected a state_dict (or {{'state_dict': ...}}), got "
                          f"{type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}")
  out = {}
  for key, value in obj.items():
    if not isinstance(key, str):
      raise CheckpointError(f"{source}: non-string key {key!r} in state_dict")
    out[key[len("module."):] if key.startswith("module.") else key] = value
  return out


def _guess_kind(keys) -> str | None:
  for kind, signature in KIND_SIGNATURES.items():
    if signature in keys:
      return kind
  return None


def torch_state_dict_to_variables(kind: str, state_dict: Mapping[str, Any],
                                  width_multiplier: float | None = None,
                                  source: str = "<state_dict>") -> dict:
  """Official state_dict (with or without 'module.' / {'state_dict'} wrapper) -> Flax variables (numpy)."""
  _check_kind(kind)
  state = _strip_wrapper(state_dict, source)
  guessed = _guess_kind(state.keys())
  if guessed is not None and guessed != kind:
    raise CheckpointError(f"{source}: this is a {guessed!r} checkpoint (it has key "
                          f"{KIND_SIGNATURES[guessed]!r}), not {kind!r}; pass --kind {guessed}")
  if width_multiplier is None:
    width_multiplier = infer_width_multiplier(kind, state)
  template = _flatten(variables_template(kind, width_multiplier))
  expected = {flax_path_to_torch_key(path): path for path in template}
  counters = set(batch_norm_counters(template))
  missing = sorted(set(expected) - set(state))
  if missing:
    raise CheckpointError(f"{source}: missing key {missing[0]!r} for a {kind!r} checkpoint"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  unexpected = sorted(set(state) - set(expected) - counters)
  if unexpected:
    raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} for a {kind!r} checkpoint"
                          + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
  flat = {}
  for key, path in expected.items():
    value = _to_numpy(state[key], key, source)
    if _is_kernel(path):
      if value.ndim != 4:
        raise CheckpointError(f"{source}: key {key!r} has shape {value.shape}, expected a 4-d kernel")
      value = np.transpose(value, KERNEL_FROM_TORCH)
    want = tuple(template[path].shape)
    if value.shape != want:
      to_torch = (lambda s: tuple(s[i] for i in KERNEL_TO_TORCH)) if _is_kernel(path) else tuple
      torch_want, got = to_torch(want), to_torch(value.shape)
      raise CheckpointError(f"{source}: key {key!r} has shape {got}, expected {torch_want} for a {kind!r} "
                            f"model with width_multiplier={width_multiplier}")
    flat[path] = np.array(value, dtype=np.float32, order="C", copy=True)  # Never alias torch storage.
  return _unflatten(flat)


def load_torch_checkpoint(path: str | os.PathLike, kind: str, width_multiplier: float | None = None) -> dict:
  """Reads an official (or any state_dict) `.pth` with torch.load(weights_only=True) -> Flax variables."""
  _check_kind(kind)
  path = os.fspath(path)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise CheckpointError(f"{path}: reading PyTorch checkpoints needs torch (pip install torch==2.13.0 "
                          f"--index-url https://download.pytorch.org/whl/cpu)") from err
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such checkpoint file")
  try:
    with warnings.catch_warnings():  # torch warns about pickle protocols of files it then rejects.
      warnings.simplefilter("ignore")
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as err:  # Truncated, garbage or unsafe pickles all land here.
    # torch's own text suggests weights_only=False, which we never do; report the type only.
    raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: truncated, corrupt, or holding more "
                          f"than tensors ({type(err).__name__}); re-download it or re-save the state_dict "
                          f"with torch.save") from err
  return torch_state_dict_to_variables(kind, obj, width_multiplier, source=path)


def variables_to_torch_state_dict(kind: str, variables: Mapping) -> dict[str, np.ndarray]:
  """Flax variables -> official key names and layouts (float32 numpy; num_batches_tracked = 0, int64)."""
  _check_kind(kind)
  flat = _flatten(variables)
  out = {}
  for path, value in flat.items():
    value = np.asarray(value, dtype=np.float32)
    if _is_kernel(path):
      value = np.transpose(value, KERNEL_TO_TORCH)
    out[flax_path_to_torch_key(path)] = np.ascontiguousarray(value)
  for key in batch_norm_counters(flat):
    out[key] = np.array(0, dtype=np.int64)
  return out


def save_torch_checkpoint(path: str | os.PathLike, kind: str, variables: Mapping) -> None:
  """Writes {'state_dict': ...} like the official training script (loadable by the original code)."""
  import torch  # pylint: disable=import-outside-toplevel
  state = {k: torch.tensor(np.array(v)) for k, v in variables_to_torch_state_dict(kind, variables).items()}
  torch.save({"state_dict": state, "global_step": 0, "global_epoch": 0}, os.fspath(path))


def save_variables(directory: str | os.PathLike, variables: Mapping, kind: str, meta: dict | None = None,
                   overwrite: bool = False) -> str:
  """Writes `directory/variables` (orbax) and `directory/lipsync_jax_meta.json`; returns the directory."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  _check_kind(kind)
  directory = os.path.abspath(os.fspath(directory))
  target = os.path.join(directory, VARIABLES_DIR)
  if os.path.exists(target) and not overwrite:
    raise CheckpointError(f"{target} already exists; choose another --dst or pass overwrite=True")
  os.makedirs(directory, exist_ok=True)
  tree = _unflatten({p: np.asarray(v) for p, v in _flatten(variables).items()})
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, tree, force=overwrite)
  checkpointer.wait_until_finished()
  full_meta = {"kind": kind, "width_multiplier": infer_width_from_variables(kind, tree),
               "img_size": DEFAULT_IMG_SIZE, "source": ""}
  full_meta.update(meta or {})
  with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
    json.dump(full_meta, f, indent=2, sort_keys=True)
  return directory


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
  """Reads what `save_variables` wrote -> (variables as numpy arrays, meta). No tree structure needed."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = os.path.abspath(os.fspath(directory))
  meta_path = os.path.join(directory, META_FILE)
  target = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isfile(meta_path) or not os.path.isdir(target):
    raise CheckpointError(f"{directory}: not a lipsync_jax variables directory (needs {META_FILE} and "
                          f"{VARIABLES_DIR}/); convert with `python -m lipsync_jax.convert`")
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  checkpointer = ocp.StandardCheckpointer()
  try:
    stored = checkpointer.metadata(target).item_metadata.tree
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), stored)
    variables = checkpointer.restore(target, abstract)
  except Exception as err:
    raise CheckpointError(f"{target}: cannot restore the orbax checkpoint ({type(err).__name__}: {err})") \
        from err
  variables = jax.tree.map(np.asarray, variables)
  return variables, meta


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m lipsync_jax.convert",
      description="Convert an official Wav2Lip PyTorch checkpoint to lipsync_jax variables (orbax).")
  parser.add_argument("--kind", required=True, choices=sorted(FIRST_CONV))
  parser.add_argument("--src", required=True, help="the .pth file (official format or a bare state_dict)")
  parser.add_argument("--dst", required=True, help="output directory (variables/ + lipsync_jax_meta.json)")
  parser.add_argument("--width_multiplier", type=float, default=None, help="default: inferred")
  parser.add_argument("--img_size", type=int, default=DEFAULT_IMG_SIZE)
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  try:
    variables = load_torch_checkpoint(args.src, args.kind, args.width_multiplier)
    save_variables(args.dst, variables, args.kind, overwrite=args.overwrite,
                   meta={"img_size": args.img_size, "source": os.path.abspath(args.src)})
  except CheckpointError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  count = sum(int(np.size(v)) for v in _flatten(variables.get("params", {})).values())
  print(f"wrote {args.kind} variables ({count:,} parameters) from {args.src} to {os.path.abspath(args.dst)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
