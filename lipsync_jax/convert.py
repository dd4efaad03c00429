"""Official PyTorch checkpoints in and out: the `python -m lipsync_jax.convert` CLI and the .pth writer.

Owns:
  * CLI: `python -m lipsync_jax.convert --kind wav2lip --src wav2lip_gan.pth --dst DIR`: an official file
    (read by `lipsync_jax.weights.load`) -> a variables directory (`lipsync_jax.weights.save_variables`).
  * `save_torch_checkpoint(path, kind, variables)`: variables -> `{'state_dict': ...}` as the official
    training script writes it (loadable by the original code and the PyTorch ecosystem).
The key / layout mapping both ways (`weights.torch_state_dict_to_variables`,
`weights.variables_to_torch_state_dict`), the safe torch.load and the variables-directory format are
`lipsync_jax.weights`'; errors are `weights.CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import numpy as np

from lipsync_jax import fs, logs, weights
from lipsync_jax.weights import CheckpointError


def save_torch_checkpoint(path: str | os.PathLike, kind: str, variables: Mapping) -> None:
  """Writes {'state_dict': ...} like the official training script (loadable by the original code)."""
  import torch  # pylint: disable=import-outside-toplevel

  state = weights.variables_to_torch_state_dict(kind, variables)
  state = {k: torch.tensor(np.array(v)) for k, v in state.items()}
  with fs.open(path, "wb") as f:
    torch.save({"state_dict": state, "global_step": 0, "global_epoch": 0}, f)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m lipsync_jax.convert",
    description="Convert an official Wav2Lip PyTorch checkpoint to lipsync_jax variables (orbax).",
  )
  parser.add_argument("--kind", required=True, choices=weights.OFFICIAL_KINDS)
  parser.add_argument("--src", required=True, help="the .pth file (official format or a bare state_dict)")
  parser.add_argument("--dst", required=True, help="output directory (variables/ + lipsync_jax_meta.json)")
  parser.add_argument("--width_multiplier", type=float, default=None, help="default: inferred")
  parser.add_argument(
    "--img_size",
    type=int,
    default=None,
    help="face size of the network: 96, 192 or 288 (default: the one whose keys the file has)",
  )
  parser.add_argument("--overwrite", action="store_true")
  logs.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  logs.setup(args.verbosity)
  try:
    if not fs.isfile(args.src):
      raise CheckpointError(f"--src {args.src}: no such file; pass an official .pth file")
    variables, meta = weights.load(args.src, args.kind, args.width_multiplier)
    if args.img_size and args.img_size != meta["img_size"]:
      raise CheckpointError(
        f"--src {args.src}: its keys are those of a {args.kind!r} network at img_size {meta['img_size']}, "
        f"not --img_size {args.img_size}; drop --img_size or pass {meta['img_size']}"
      )
    weights.save_variables(
      args.dst,
      variables,
      args.kind,
      overwrite=args.overwrite,
      meta={"img_size": args.img_size or meta["img_size"], "source": fs.absolute(args.src)},
    )
  except CheckpointError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  count = sum(int(np.size(v)) for v in weights.flatten(variables.get("params", {})).values())
  print(f"wrote {args.kind} variables ({count:,} parameters) from {args.src} to {fs.absolute(args.dst)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
