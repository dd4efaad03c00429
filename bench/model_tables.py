"""Prints the markdown tables of docs/models.md: each network's layer plan per face size, and parameter
counts (width 1 and 1/8) and forward FLOPs per sample (width 1, eval mode) per network and size.

Owns nothing the library uses: it reads the plans (`lipsync_jax.models.{syncnet,wav2lip,disc}`) and counts
parameters with `jax.eval_shape` of `init` and FLOPs with XLA's cost analysis of the lowered forward pass
(`jax.jit(apply).lower(...).cost_analysis()['flops']`, batch 1), so no weights are materialised and nothing
is compiled.

  python bench/model_tables.py                  # everything (docs/models.md)
  python bench/model_tables.py --sizes 96 192   # a subset; --no_flops skips the cost analysis
  python bench/model_tables.py --remat_check wav2lip:192  # compiled train-mode gradient with / without
                                                # remat on this backend: convolutions and temp memory
"""

from __future__ import annotations

import argparse
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax.models import MODELS, disc, syncnet, wav2lip
from lipsync_jax.models.layers import LayerSpec

KINDS = ("wav2lip", "syncnet", "disc")
TITLES = {
  "wav2lip": "Generator (Wav2Lip)",
  "syncnet": "Expert (SyncNet_color)",
  "disc": "Discriminator (disc_qual)",
}
ORIGINAL_BLOCKS = {"wav2lip": 7, "syncnet": 17, "disc": 7}  # blocks (expert: layers) of the 96 plan


def parse_size(text: str) -> int | tuple[int, int]:
  """'192' -> 192, '192x288' -> (192, 288)."""
  if "x" in text:
    height, width = text.split("x")
    return int(height), int(width)
  return int(text)


def size_name(size) -> str:
  return f"{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"


def inputs(kind: str, size) -> list[jax.ShapeDtypeStruct]:
  height, width = (size, size) if isinstance(size, int) else size
  mel = jax.ShapeDtypeStruct((1, 80, 16, 1), jnp.float32)
  shapes = {"syncnet": (height // 2, width, 15), "wav2lip": (height, width, 6), "disc": (height, width, 3)}
  face = jax.ShapeDtypeStruct((1, *shapes[kind]), jnp.float32)
  return [face] if kind == "disc" else [mel, face]


def param_count(kind: str, size, width: float) -> int:
  model = MODELS[kind](width_multiplier=width)
  variables = jax.eval_shape(model.init, jax.random.key(0), *inputs(kind, size))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def forward_gflops(kind: str, size) -> float:
  model = MODELS[kind]()
  variables = jax.eval_shape(model.init, jax.random.key(0), *inputs(kind, size))
  cost = jax.jit(model.apply).lower(variables, *inputs(kind, size)).cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / 1e9


def remat_check(kind: str, size, width: float, batch: int) -> list[tuple[str, ...]]:
  """(remat, convolutions in the compiled program, its temp memory in MiB) of the jitted train-mode
  gradient (a sum of the outputs as the loss), compiled for this backend, without and with remat."""
  rows = []
  for remat in (False, True):
    model = MODELS[kind](width_multiplier=width, remat=remat)
    args = [jax.ShapeDtypeStruct((batch, *x.shape[1:]), x.dtype) for x in inputs(kind, size)]
    variables = jax.eval_shape(model.init, jax.random.key(0), *args)

    def loss(params, stats, *faces_and_mel, model=model):
      variables = {"params": params, "batch_stats": stats} if stats else {"params": params}
      out, _ = model.apply(variables, *faces_and_mel, train=True, mutable=["batch_stats"])
      return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out))

    stats = variables.get("batch_stats", {})
    compiled = jax.jit(jax.grad(loss)).lower(variables["params"], stats, *args).compile()
    convolutions = len(re.findall(r" convolution\(", compiled.as_text()))
    temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
    rows.append((f"{remat}", f"{convolutions}", f"{temp:.1f}"))
  return rows


def layer_text(layer: LayerSpec) -> str:
  def axes(value):
    return f"{value[0]}" if value[0] == value[1] else f"({value[0]},{value[1]})"

  text = f"{'convT' if layer.op == 'convT' else 'conv'} k{axes(layer.kernel)} s{axes(layer.stride)}"
  text += f" p{axes(layer.padding)}"
  if layer.op == "convT":
    text += f" op{axes(layer.output_padding)}"
  return text


def groups(layers: list[LayerSpec]) -> list[list[LayerSpec]]:
  """Each non-residual layer with the residual layers that follow it."""
  out = []
  for layer in layers:
    if layer.residual and out:
      out[-1].append(layer)
    else:
      out.append([layer])
  return out


def module_names(group: list[LayerSpec]) -> str:
  first, last = group[0].name, group[-1].name
  if first == last:
    return f"`{first}`"
  return f"`{first}`..`{last.rsplit('_', 1)[-1]}`"


def plan_rows(kind: str, size) -> list[tuple[str, ...]]:
  """(modules, stage, output map, channels, layer, residual blocks) per group of layers."""
  rows = []

  def add(group, stage, channels=None):
    layer = group[0]
    out = f"{group[-1].out_size[0]}x{group[-1].out_size[1]}"
    channels = channels or f"{layer.channels}"
    rows.append((module_names(group), stage, out, channels, layer_text(layer), f"{len(group) - 1}"))

  if kind == "wav2lip":
    plan = wav2lip.layer_plan(size)
    extra = len(plan["face_encoder"]) - ORIGINAL_BLOCKS[kind]
    skips = [block[-1].channels for block in plan["face_encoder"]]
    for i, block in enumerate(plan["face_encoder"]):
      stage = "stem" if i == 0 else "HD prefix" if i <= extra else "original"
      for group in groups(block):
        add(group, f"encoder, {stage}")
    for i, block in enumerate(plan["face_decoder"]):
      stage = "original" if i < ORIGINAL_BLOCKS[kind] else "HD mirror"
      channels = f"{block[0].channels} (+{skips[-1 - i]} skip)"
      for group in groups(block):
        add(group, f"decoder, {stage}", channels)
    for group in groups(plan["output_block"]):
      add(group, "output")
    for group in groups(plan["audio_encoder"]):
      add(group, "audio encoder")
  elif kind == "syncnet":
    layers = syncnet.face_encoder_plan(size)
    extra = len(layers) - ORIGINAL_BLOCKS[kind]
    prefix = {layer.name for layer in layers[:extra]}
    for group in groups(layers):
      add(group, "face, HD prefix" if group[0].name in prefix else "face, original")
    for group in groups(syncnet.audio_encoder_plan()):
      add(group, "audio encoder")
  else:
    *blocks, pred = disc.face_encoder_plan(size)
    extra = len(blocks) - ORIGINAL_BLOCKS[kind]
    for i, block in enumerate(blocks):
      for layer in block:
        add([layer], "HD prefix" if i < extra else "original")
    add(pred, "output")
  return rows


def markdown(header: tuple[str, ...], rows: list[tuple]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", nargs="+", default=["96", "192", "288", "192x288"])
  parser.add_argument("--no_flops", action="store_true", help="skip the XLA cost analysis")
  parser.add_argument("--remat_check", nargs="+", metavar="KIND:SIZE", help="only the remat check: disc:192")
  parser.add_argument("--width", type=float, default=1 / 8, help="width multiplier of --remat_check")
  parser.add_argument("--batch", type=int, default=8, help="batch of --remat_check")
  args = parser.parse_args(argv)
  if args.remat_check:
    print(f"remat check on {jax.default_backend()}, width {args.width:g}, batch {args.batch}\n")
    rows = []
    for item in args.remat_check:
      kind, size = item.split(":")
      rows += [(kind, size, *row) for row in remat_check(kind, parse_size(size), args.width, args.batch)]
    print(markdown(("network", "face size", "remat", "convolutions (compiled)", "temp MiB (compiled)"), rows))
    return
  sizes = [parse_size(text) for text in args.sizes]

  print("## Parameters and forward cost per variant\n")
  rows = []
  for kind in KINDS:
    base = param_count(kind, 96, 1.0)
    base_flops = None if args.no_flops else forward_gflops(kind, 96)
    for size in sizes:
      params = param_count(kind, size, 1.0)
      small = param_count(kind, size, 1 / 8)
      row = [TITLES[kind], size_name(size), f"{params:,}", f"{params - base:+,}", f"{small:,}"]
      if not args.no_flops:
        flops = forward_gflops(kind, size)
        row += [f"{flops:.2f}", f"{flops / base_flops:.2f}x"]
      rows.append(tuple(row))
      print(f"  {kind} {size_name(size)} done", file=sys.stderr, flush=True)
  header = ("network", "face size", "params (width 1)", "vs 96", "params (width 1/8)")
  if not args.no_flops:
    header += ("forward GFLOPs / sample (width 1)", "vs 96")
  print(markdown(header, rows))

  header = ("modules", "stage", "output map (HxW)", "channels", "first layer", "residual blocks")
  for kind in KINDS:
    for size in sizes:
      print(f"\n### {TITLES[kind]}, {size_name(size)}\n")
      print(markdown(header, plan_rows(kind, size)))


if __name__ == "__main__":
  main()
