"""The one weights loader: which checkpoint sources are accepted, and how each is read.

Owns:
  * `load(source, kind) -> (variables as NumPy arrays, meta)`, meta = {kind, width_multiplier, img_size,
    source, step (training workdirs only), ...}. `kind` is one of KINDS: 'wav2lip' (generator), 'syncnet'
    (the lip-sync expert), 'disc' (visual quality discriminator), 'syncnet_v2' (joonson/syncnet_python's
    `syncnet_v2.model`, the LSE scorer). `source` is, in this order of checks:
      a file              an official PyTorch checkpoint (`{'state_dict': {'module.' + k: v}}`, a bare
                          state_dict, or `syncnet_v2.model`), read with torch.load(weights_only=True) only
      a variables dir     `lipsync_jax_meta.json` + `variables/` (orbax), written by `save_variables`
                          (`python -m lipsync_jax.convert`)
      a training workdir  `checkpoints/` (lipsync_jax.training.checkpointing), its latest step
    Every path goes through `lipsync_jax.fs` (so gs://... sources read the same way).
  * the variables-directory format: `save_variables(directory, variables, kind, meta=None)` and
    `load_variables(directory)`.
  * `read_torch_state_dict(path)`: the one safe torch.load (weights_only=True), wrapper and `module.`
    prefixes stripped (`strip_torch_wrapper` does the same for an in-memory dict).
  * the official key / layout mapping: `torch_state_dict_to_variables(kind, state_dict)` (all four kinds)
    and the exact reverse `variables_to_torch_state_dict(kind, variables)` (the three Wav2Lip kinds;
    `lipsync_jax.convert.save_torch_checkpoint` writes it). Flax module `face_encoder_blocks_1_2` <->
    PyTorch prefix `face_encoder_blocks.1.2`; inside it conv -> `conv_block.0`, bn -> `conv_block.1`; a plain
    conv (`output_block_1`, `binary_pred_0`) has no `conv_block`. Kernels: ours (kh, kw, a, b) <-> PyTorch
    transposed by (3, 2, 0, 1) (Conv2d and ConvTranspose2d alike); BN scale/bias/mean/var <->
    weight/bias/running_mean/running_var. SyncNet v2: `netcnnaud_4` <-> `netcnnaud.4`, conv kernels
    (O, I, *k) -> (*k, I, O), linear weights transposed.
  * `infer_width(kind, variables)`: the width multiplier from the widest conv's output channels;
    `infer_img_size(kind, variables)`: the square face size (96, 192, 288: `img_sizes()`) whose network has
    exactly these variables (HD networks add stride-2 stages, so the tree itself tells the size).
  * `flatten(tree)` / `unflatten(flat)`: nested dict <-> {tuple path: leaf}.

Every problem raises `CheckpointError` (a ValueError) naming the path and what to do.
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from lipsync_jax import fs

KINDS = ("wav2lip", "syncnet", "disc", "syncnet_v2")
META_FILE = "lipsync_jax_meta.json"
VARIABLES_DIR = "variables"
DEFAULT_IMG_SIZE = 96
# Each kind's first conv (Flax module under 'params') and its output channels at width multiplier 1.
FIRST_CONV = {
  "syncnet": ("face_encoder_0", 32),
  "wav2lip": ("face_encoder_blocks_0_0", 16),
  "disc": ("face_encoder_blocks_0_0", 32),
  "syncnet_v2": ("netcnnaud_0", 64),
}
# Output channels of each kind's widest conv at width multiplier 1 (every layer scales with the width, so
# this one, unlike the 16/32-channel first conv, is exact down to tiny test widths such as 1/64).
# syncnet_v2 is read from its first conv: its widest layer (the 1024-wide fc) does not scale.
WIDEST_CONV = {"syncnet": 512, "wav2lip": 1024, "disc": 512}
# Which network of a training workdir (lipsync_jax.training.checkpointing.load_model_variables) is a kind.
WORKDIR_NETWORK = {"wav2lip": "generator", "syncnet": "expert", "disc": "disc"}
_SOURCES_HELP = (
  "an official PyTorch .pth, a lipsync_jax variables directory (python -m lipsync_jax.convert)"
  " or a training workdir"
)


class CheckpointError(ValueError):
  """A weights source cannot be used; the message names the path (and the key) and what to do."""


def check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise CheckpointError(f"unknown model kind {kind!r}; use one of {list(KINDS)}")


# ----------------------------------------------------------------------------------------------------------
# Param trees.
# ----------------------------------------------------------------------------------------------------------
def flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  """{'a': {'b': x}} -> {('a', 'b'): x} (any Mapping, FrozenDicts included; leaves untouched)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
  """{('a', 'b'): x} -> {'a': {'b': x}} (plain dicts)."""
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def infer_width(kind: str, variables: Mapping) -> float:
  """Width multiplier of `variables`: its widest conv's output channels / that layer's width at 1.0."""
  check_kind(kind)
  module, base = FIRST_CONV[kind]
  try:
    node = variables["params"][module]  # the kind's first conv: a model of another kind has no such module
    if kind in WIDEST_CONV:
      kernels = [leaf for path, leaf in flatten(variables["params"]).items() if path[-1] == "kernel"]
      widest = max(np.shape(kernel)[-1] for kernel in kernels if np.ndim(kernel) == 4)
      return float(widest) / WIDEST_CONV[kind]
    kernel = node["conv"]["kernel"] if "conv" in node else node["kernel"]
  except (KeyError, TypeError, ValueError) as err:
    raise CheckpointError(f"these variables are not a {kind!r} model (no params/{module} conv)") from err
  return float(np.shape(kernel)[-1]) / base


# ----------------------------------------------------------------------------------------------------------
# PyTorch files.
# ----------------------------------------------------------------------------------------------------------
def strip_torch_wrapper(obj: Any, source: str = "<state_dict>") -> dict:
  """{'state_dict': {...}} or a bare state_dict -> {name without 'module.': value}; checks it is one."""
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping) or not obj:
    raise CheckpointError(
      f"{source}: expected a state_dict (or {{'state_dict': ...}}), got "
      f"{type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}"
    )
  out = {}
  for key, value in obj.items():
    if not isinstance(key, str):
      raise CheckpointError(f"{source}: non-string key {key!r} in state_dict")
    out[key[len("module.") :] if key.startswith("module.") else key] = value
  return out


def read_torch_state_dict(path: str | os.PathLike) -> dict:
  """A PyTorch checkpoint file -> its state_dict (wrapper and 'module.' stripped); torch.load is called
  with weights_only=True only, so a file holding anything but tensors is refused, never executed."""
  path = os.fspath(path)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise CheckpointError(
      f"{path}: reading PyTorch checkpoints (.pth) needs torch, an optional extra: "
      f"pip install -e '.[torch]' (or pip install torch==2.13.0; the CPU build is enough)"
    ) from err
  if not fs.isfile(path):
    raise CheckpointError(f"{path}: no such checkpoint file")
  try:
    with fs.local_copy(path) as local, warnings.catch_warnings():
      warnings.simplefilter("ignore")  # torch warns about pickle protocols of files it then rejects.
      obj = torch.load(local, map_location="cpu", weights_only=True)
  except Exception as err:  # Truncated, garbage or unsafe pickles all land here.
    # torch's own text suggests weights_only=False, which we never do; report the type only.
    raise CheckpointError(
      f"{path}: not a readable PyTorch checkpoint: truncated, corrupt, or holding more "
      f"than tensors ({type(err).__name__}); re-download it or re-save the state_dict "
      f"with torch.save"
    ) from err
  return strip_torch_wrapper(obj, path)


# ----------------------------------------------------------------------------------------------------------
# The official key / layout mapping (.pth state_dict <-> variables).
# ----------------------------------------------------------------------------------------------------------
OFFICIAL_KINDS = ("disc", "syncnet", "wav2lip")  # the Wav2Lip files, mapped both ways
# A key only the given kind has.
KIND_SIGNATURES = {
  "syncnet": "face_encoder.0.conv_block.0.weight",
  "wav2lip": "face_decoder_blocks.0.0.conv_block.0.weight",
  "disc": "binary_pred.0.weight",
  "syncnet_v2": "netcnnaud.0.weight",
}
SUBMODULE_TO_TORCH = {"conv": "conv_block.0", "bn": "conv_block.1"}
LEAF_TO_TORCH = {
  "kernel": "weight",
  "bias": "bias",
  "scale": "weight",
  "mean": "running_mean",
  "var": "running_var",
}
KERNEL_TO_TORCH = (3, 2, 0, 1)
KERNEL_FROM_TORCH = (2, 3, 1, 0)


def _check_official_kind(kind: str) -> None:
  if kind not in OFFICIAL_KINDS:
    raise CheckpointError(f"unknown model kind {kind!r}; use one of {list(OFFICIAL_KINDS)}")


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


def batch_norm_counters(flat_keys) -> list[str]:
  """The `num_batches_tracked` keys PyTorch stores for the BNs of a flat Flax tree."""
  stats_keys = [flax_path_to_torch_key(p) for p in flat_keys if p[0] == "batch_stats"]
  return sorted({k.rsplit(".", 1)[0] + ".num_batches_tracked" for k in stats_keys})


def variables_template(kind: str, width_multiplier: float = 1.0, img_size: int = DEFAULT_IMG_SIZE) -> dict:
  """Shapes (jax.ShapeDtypeStruct) of a model's variables at a face size, without allocating or compiling."""
  import jax  # pylint: disable=import-outside-toplevel

  from lipsync_jax.models import MODELS, example_inputs  # pylint: disable=import-outside-toplevel

  model = MODELS[kind](width_multiplier=width_multiplier)
  inputs = example_inputs(kind, batch=1, img_size=int(img_size))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))


def img_sizes() -> tuple[int, ...]:
  """The square face sizes the Wav2Lip networks are defined for (lipsync_jax.models.layers), ascending: the
  order in which a tree's size is looked for (96 first: the official checkpoints)."""
  from lipsync_jax.models.layers import SUPPORTED_FACE_SIZES  # pylint: disable=import-outside-toplevel

  return tuple(sorted(h for h, w in SUPPORTED_FACE_SIZES if h == w))


def _tree_signature(flat: Mapping[tuple[str, ...], Any]) -> dict[tuple[str, ...], tuple[int, ...]]:
  return {path: tuple(np.shape(leaf)) for path, leaf in flat.items()}


@functools.lru_cache(maxsize=32)
def _template_signature(kind: str, width_multiplier: float, img_size: int) -> tuple:
  """((path, shape), ...) of variables_template: cached, as a size search traces up to three inits."""
  return tuple(sorted(_tree_signature(flatten(variables_template(kind, width_multiplier, img_size))).items()))


def infer_img_size(kind: str, variables: Mapping, width_multiplier: float | None = None) -> int:
  """The square face size (one of img_sizes()) whose `kind` network has exactly these variables (paths and
  shapes).

  The HD networks differ from the 96 one by their extra stride-2 stages (lipsync_jax.models), so the tree
  alone tells the size; raises CheckpointError when no supported size matches.
  """
  check_kind(kind)
  if kind not in WIDEST_CONV:
    raise CheckpointError(f"a {kind!r} network has one fixed input size; there is no face size to infer")
  width = infer_width(kind, variables) if width_multiplier is None else float(width_multiplier)
  got = _tree_signature(flatten(variables))
  sizes = img_sizes()
  for size in sizes:
    if dict(_template_signature(kind, width, size)) == got:
      return size
  raise CheckpointError(
    f"these variables match no {kind!r} network of width x{width:g} at any supported face size "
    f"{list(sizes)}; pass variables of a lipsync_jax {kind} model"
  )


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


def _guess_kind(keys) -> str | None:
  for kind, signature in KIND_SIGNATURES.items():
    if signature in keys:
      return kind
  return None


def _width_from_state_dict(kind: str, state: Mapping[str, Any]) -> float:
  """Width multiplier as `infer_width` reads it: the widest conv's output channels (a PyTorch 4-d weight's
  first dimension, Conv2d and ConvTranspose2d alike: our kernels' last), exact down to tiny widths;
  syncnet_v2 from its first conv."""
  if kind in WIDEST_CONV:
    widths = [np.shape(v)[0] for v in state.values() if len(np.shape(v)) == 4]
    return float(max(widths)) / WIDEST_CONV[kind] if widths else 1.0  # no kernels: the key check reports it
  module, base = FIRST_CONV[kind]
  shape = np.shape(state.get(flax_path_to_torch_key(("params", module, "conv", "kernel")), ()))
  return float(shape[0]) / base if shape else 1.0  # A bad shape is reported by the shape check.


def torch_state_dict_to_variables(
  kind: str,
  state_dict: Mapping[str, Any],
  width_multiplier: float | None = None,
  source: str = "<state_dict>",
  img_size: int | None = None,
) -> dict:
  """Official state_dict (with or without 'module.' / {'state_dict'} wrapper) -> Flax variables (numpy).

  kind: 'syncnet' | 'wav2lip' | 'disc' | 'syncnet_v2'. width_multiplier: default inferred from the shapes.
  img_size: the face size the network is built for; default: the first of img_sizes() whose network has
  exactly the file's keys (the official files: 96), else 96 (whose keys the error then names).
  """
  return _from_torch(kind, state_dict, width_multiplier, source, img_size)[0]


def _from_torch(
  kind: str, state_dict: Mapping[str, Any], width_multiplier: float | None, source: str, img_size: int | None
) -> tuple[dict, int]:
  """torch_state_dict_to_variables' work -> (variables, the face size they were read at)."""
  check_kind(kind)
  state = strip_torch_wrapper(state_dict, source)
  guessed = _guess_kind(state.keys())
  if guessed is not None and guessed != kind:
    raise CheckpointError(
      f"{source}: this is a {guessed!r} checkpoint (it has key "
      f"{KIND_SIGNATURES[guessed]!r}), not {kind!r}; pass --kind {guessed}"
    )
  if kind == "syncnet_v2":
    return _syncnet_v2_variables(state, source), DEFAULT_IMG_SIZE
  if width_multiplier is None:
    width_multiplier = _width_from_state_dict(kind, state)
  size, template, expected = _torch_template(kind, width_multiplier, state, img_size)
  counters = set(batch_norm_counters(template))
  missing = sorted(set(expected) - set(state))
  if missing:
    raise CheckpointError(
      f"{source}: missing key {missing[0]!r} for a {kind!r} checkpoint"
      + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    )
  unexpected = sorted(set(state) - set(expected) - counters)
  if unexpected:
    raise CheckpointError(
      f"{source}: unexpected key {unexpected[0]!r} for a {kind!r} checkpoint"
      + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
    )
  flat = {}
  for key, path in expected.items():
    value = _to_numpy(state[key], key, source)
    if _is_kernel(path):
      if value.ndim != 4:
        raise CheckpointError(f"{source}: key {key!r} has shape {value.shape}, expected a 4-d kernel")
      value = np.transpose(value, KERNEL_FROM_TORCH)
    want = template[path]
    if value.shape != want:
      to_torch = (lambda s: tuple(s[i] for i in KERNEL_TO_TORCH)) if _is_kernel(path) else tuple
      torch_want, got = to_torch(want), to_torch(value.shape)
      raise CheckpointError(
        f"{source}: key {key!r} has shape {got}, expected {torch_want} for a {kind!r} "
        f"model with width_multiplier={width_multiplier} at img_size {size}"
      )
    flat[path] = np.array(value, dtype=np.float32, order="C", copy=True)  # Never alias torch storage.
  return unflatten(flat), size


def _torch_template(
  kind: str, width_multiplier: float, state: Mapping[str, Any], img_size: int | None
) -> tuple[int, dict, dict[str, tuple[str, ...]]]:
  """(size, {flax path: shape}, {torch key: flax path}) at img_size, or at the first of img_sizes()
  whose keys (BatchNorm counters aside) are exactly the state dict's; at 96 when none is."""
  found = None
  for size in (img_size,) if img_size else img_sizes():
    template = dict(_template_signature(kind, float(width_multiplier), size))  # {path: shape}
    expected = {flax_path_to_torch_key(path): path for path in template}
    if found is None:
      found = size, template, expected
    if set(state) - set(batch_norm_counters(template)) == set(expected):
      return size, template, expected
  return found


def _syncnet_v2_variables(state: Mapping[str, Any], source: str) -> dict:
  """syncnet_python's `S` state dict -> SyncNetV2 variables. Raises naming missing / unknown keys."""
  from lipsync_jax.models import syncnet_v2 as sv2  # pylint: disable=import-outside-toplevel

  params, stats, used = {}, {}, set()

  def take(key):
    if key not in state:
      raise CheckpointError(
        f"{source}: missing key {key!r} for a 'syncnet_v2' checkpoint; is this "
        "joonson/syncnet_python's syncnet_v2.model?"
      )
    used.add(key)
    return np.array(_to_numpy(state[key], key, source), dtype=np.float32, copy=True)

  def bn(prefix, name):
    params[name] = {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}
    stats[name] = {"mean": take(f"{prefix}.running_mean"), "var": take(f"{prefix}.running_var")}
    used.add(f"{prefix}.num_batches_tracked")

  for branch, layers in (("netcnnaud", sv2.AUDIO_CNN), ("netcnnlip", sv2.LIP_CNN)):
    for layer, index, _ in layers:
      prefix, name = f"{branch}.{index}", f"{branch}_{index}"
      if layer == "conv":
        weight = take(f"{prefix}.weight")  # (O, I, *k)
        kernel = np.transpose(weight, tuple(range(2, weight.ndim)) + (1, 0))
        params[name] = {"kernel": np.ascontiguousarray(kernel), "bias": take(f"{prefix}.bias")}
      elif layer == "bn":
        bn(prefix, name)
  for branch in ("netfcaud", "netfclip"):
    for index in (0, 3):
      params[f"{branch}_{index}"] = {
        "kernel": np.ascontiguousarray(take(f"{branch}.{index}.weight").T),
        "bias": take(f"{branch}.{index}.bias"),
      }
    bn(f"{branch}.1", f"{branch}_1")
  unknown = sorted(set(state) - used)
  if unknown:
    raise CheckpointError(
      f"{source}: unexpected key {unknown[0]!r} for a 'syncnet_v2' checkpoint"
      + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
      + "; expected syncnet_python's S state dict"
    )
  return {"params": params, "batch_stats": stats}


def variables_to_torch_state_dict(kind: str, variables: Mapping) -> dict[str, np.ndarray]:
  """Flax variables -> official key names and layouts (float32 numpy; num_batches_tracked = 0, int64)."""
  _check_official_kind(kind)
  flat = flatten(variables)
  out = {}
  for path, value in flat.items():
    value = np.asarray(value, dtype=np.float32)
    if _is_kernel(path):
      value = np.transpose(value, KERNEL_TO_TORCH)
    out[flax_path_to_torch_key(path)] = np.ascontiguousarray(value)
  for key in batch_norm_counters(flat):
    out[key] = np.array(0, dtype=np.int64)
  return out


# ----------------------------------------------------------------------------------------------------------
# Variables directories.
# ----------------------------------------------------------------------------------------------------------
def save_variables(
  directory: str | os.PathLike,
  variables: Mapping,
  kind: str,
  meta: dict | None = None,
  overwrite: bool = False,
) -> str:
  """Writes `directory/variables` (orbax) and `directory/lipsync_jax_meta.json`; returns the directory.

  meta's width_multiplier and img_size default to what the tree tells (infer_width, infer_img_size).
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  check_kind(kind)
  directory = fs.absolute(directory)
  target = os.path.join(directory, VARIABLES_DIR)
  if fs.exists(target) and not overwrite:
    raise CheckpointError(f"{target} already exists; choose another --dst or pass overwrite=True")
  tree = unflatten({p: np.asarray(v) for p, v in flatten(variables).items()})
  meta = dict(meta or {})
  width = float(meta["width_multiplier"]) if meta.get("width_multiplier") else infer_width(kind, tree)
  if not meta.get("img_size"):  # the tree tells its size (HD networks have extra stages)
    meta["img_size"] = infer_img_size(kind, tree, width) if kind in WIDEST_CONV else DEFAULT_IMG_SIZE
  full_meta = {"kind": kind, "width_multiplier": width, "source": ""}
  full_meta.update(meta)
  fs.makedirs(directory)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, tree, force=overwrite)
  checkpointer.wait_until_finished()
  with fs.open(os.path.join(directory, META_FILE), "w") as f:
    json.dump(full_meta, f, indent=2, sort_keys=True)
  return directory


def is_variables_dir(directory: str | os.PathLike) -> bool:
  return fs.isfile(os.path.join(os.fspath(directory), META_FILE))


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
  """Reads what `save_variables` wrote -> (variables as NumPy arrays, stored meta). No tree needed."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  directory = fs.absolute(directory)
  target = os.path.join(directory, VARIABLES_DIR)
  if not is_variables_dir(directory) or not fs.isdir(target):
    raise CheckpointError(
      f"{directory}: not a lipsync_jax variables directory (needs {META_FILE} and "
      f"{VARIABLES_DIR}/); convert with `python -m lipsync_jax.convert`"
    )
  with fs.open(os.path.join(directory, META_FILE)) as f:
    meta = json.load(f)
  checkpointer = ocp.StandardCheckpointer()
  try:
    stored = checkpointer.metadata(target).item_metadata.tree
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), stored)
    variables = checkpointer.restore(target, abstract)
  except Exception as err:
    raise CheckpointError(
      f"{target}: cannot restore the orbax checkpoint ({type(err).__name__}: {err}); "
      "re-create it with `python -m lipsync_jax.convert`"
    ) from err
  return jax.tree.map(np.asarray, variables), meta


# ----------------------------------------------------------------------------------------------------------
# The loader.
# ----------------------------------------------------------------------------------------------------------
def source_type(source: str | os.PathLike) -> str:
  """'torch' (a file), 'variables' (a variables dir) or 'workdir' (a training workdir); else an error."""
  source = os.fspath(source)
  if not fs.exists(source):
    raise CheckpointError(f"{source}: does not exist; pass {_SOURCES_HELP}")
  if fs.isfile(source):
    return "torch"
  if is_variables_dir(source):
    return "variables"
  from lipsync_jax.training import checkpointing  # pylint: disable=import-outside-toplevel

  if fs.isdir(os.path.join(source, checkpointing.CHECKPOINT_DIR)):
    return "workdir"
  raise CheckpointError(
    f"{source}: a directory with neither {META_FILE} (a variables directory) nor "
    f"{checkpointing.CHECKPOINT_DIR}/ (a training workdir); pass {_SOURCES_HELP}"
  )


def load(source: str | os.PathLike, kind: str, width_multiplier: float | None = None) -> tuple[dict, dict]:
  """(variables as NumPy arrays, meta) of a `kind` network from any accepted source (module docstring).

  width_multiplier: only for PyTorch files, to override the width inferred from the first conv.
  """
  check_kind(kind)
  source = os.fspath(source)
  where = source_type(source)
  if where == "torch":
    variables, size = _from_torch(kind, read_torch_state_dict(source), width_multiplier, source, None)
    meta = {"img_size": size}
  elif where == "variables":
    variables, meta = load_variables(source)
    if meta.get("kind", kind) != kind:
      raise CheckpointError(
        f"{source} holds a {meta.get('kind')!r} model; a {kind!r} model is needed here: "
        f"pass a {kind} checkpoint"
      )
    if meta.get("source"):
      meta["converted_from"] = meta["source"]
  else:
    if kind not in WORKDIR_NETWORK:
      raise CheckpointError(
        f"{source}: a training workdir holds no {kind!r} model; pass the official {kind} weights file"
      )
    from lipsync_jax.training import checkpointing  # pylint: disable=import-outside-toplevel

    try:
      variables, meta = checkpointing.load_model_variables(source, WORKDIR_NETWORK[kind])
    except CheckpointError:
      raise
    except ValueError as err:
      raise CheckpointError(str(err)) from err
  meta = dict(meta)
  meta.update(kind=kind, source=fs.absolute(source))
  if meta.get("width_multiplier") is None:
    meta["width_multiplier"] = infer_width(kind, variables)
  meta["width_multiplier"] = float(meta["width_multiplier"])
  meta["img_size"] = int(meta.get("img_size") or DEFAULT_IMG_SIZE)
  return variables, meta
