"""Forward and forward+backward speed of SyncNet / Wav2Lip / QualityDisc on the current backend.

Prints, per network: compile time, time per step and per sample, XLA cost-analysis FLOPs per sample and
the achieved FLOP/s. A sample is one batch element: for the generator 5 frames (time-major input, so a
batch of 16 is 80 images), for the expert one 5-frame window, for the discriminator 5 faces (what the GAN
stage feeds it per sample). Forward = eval mode (running BN statistics); forward+backward = train mode
(batch statistics, running-stat update) + gradient w.r.t. all params of a mean-square loss.

  python bench/models_bench.py                       # batch 16, float32, all three networks
  python bench/models_bench.py --batch 4 --models wav2lip --transpose_impl direct
  python bench/models_bench.py --dtype bfloat16 --width 0.5
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax.models import INPUT_SHAPES, MODELS

FRAMES_PER_SAMPLE = 5
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def sample_inputs(kind: str, batch: int, img_size: int, rng: np.random.Generator) -> list[np.ndarray]:
  """Random inputs for `batch` samples (generator: time-major (B, 5, ...); disc: B*5 faces)."""
  if kind == "wav2lip":
    shapes = [(batch, FRAMES_PER_SAMPLE) + s[1:] for s in INPUT_SHAPES[kind](batch, img_size)]
  elif kind == "disc":
    shapes = INPUT_SHAPES[kind](batch * FRAMES_PER_SAMPLE, img_size)
  else:
    shapes = INPUT_SHAPES[kind](batch, img_size)
  return [rng.random(shape, np.float32) for shape in shapes]


def random_variables(model, inputs, rng: np.random.Generator):
  """Random variables of the right shapes without compiling `init` (slow on XLA:CPU for big nets)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return np.ones(leaf.shape, np.float32)
    if "mean" in name:
      return np.zeros(leaf.shape, np.float32)
    if "scale" in name:
      return np.ones(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 64
    return (rng.uniform(-1, 1, leaf.shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def first_cost(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", float("nan")))


def time_call(fn, args, iters: int) -> float:
  jax.block_until_ready(fn(*args))  # Warm-up.
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_model(kind: str, args) -> list[dict]:
  kwargs = {"width_multiplier": args.width, "compute_dtype": DTYPES[args.dtype]}
  if kind == "wav2lip":
    kwargs["transpose_impl"] = args.transpose_impl
  model = MODELS[kind](**kwargs)
  rng = np.random.default_rng(0)
  inputs = [jnp.asarray(x) for x in sample_inputs(kind, args.batch, args.img_size, rng)]
  variables = jax.tree.map(jnp.asarray, random_variables(model, inputs, rng))

  def forward(variables, *inputs):
    return model.apply(variables, *inputs, train=False)

  def loss(params, batch_stats, *inputs):
    call_vars = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    out, updates = model.apply(call_vars, *inputs, train=True, mutable=["batch_stats"])
    return sum(jnp.mean(jnp.square(o.astype(jnp.float32))) for o in jax.tree.leaves(out)), updates

  def forward_backward(variables, *inputs):
    return jax.value_and_grad(loss, has_aux=True)(
      variables["params"], variables.get("batch_stats", {}), *inputs
    )

  rows = []
  for mode, fn in (("fwd", forward), ("fwd+bwd", forward_backward)):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(variables, *inputs).compile()
    compile_s = time.perf_counter() - start
    flops = first_cost(compiled)
    step_s = time_call(compiled, (variables, *inputs), args.iters)
    rows.append(
      {
        "model": kind,
        "mode": mode,
        "batch": args.batch,
        "compile_s": compile_s,
        "step_s": step_s,
        "flops_per_sample": flops / args.batch,
        "flops_per_s": flops / step_s,
      }
    )
    print(f"  done {kind} {mode}", flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default="syncnet,wav2lip,disc")
  parser.add_argument("--batch", type=int, default=16, help="samples per step (generator: x5 frames)")
  parser.add_argument("--width", type=float, default=1.0, help="width multiplier")
  parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
  parser.add_argument("--transpose_impl", default="auto", choices=["auto", "direct", "phase"])
  parser.add_argument("--img_size", type=int, default=96)
  parser.add_argument("--iters", type=int, default=3, help="timed steps (median) after one warm-up")
  args = parser.parse_args()

  device = jax.devices()[0]
  print(
    f"backend={jax.default_backend()} device={device.device_kind} count={jax.device_count()} "
    f"batch={args.batch} width={args.width} dtype={args.dtype} transpose_impl={args.transpose_impl}",
    flush=True,
  )
  rows = []
  for kind in args.models.split(","):
    rows += bench_model(kind.strip(), args)
  header = (
    f"{'model':<8} {'mode':<8} {'batch':>5} {'compile s':>9} {'ms/step':>9} {'ms/sample':>9} "
    f"{'GFLOP/sample':>12} {'GFLOP/s':>9}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    print(
      f"{r['model']:<8} {r['mode']:<8} {r['batch']:>5} {r['compile_s']:>9.1f} {1e3 * r['step_s']:>9.1f} "
      f"{1e3 * r['step_s'] / r['batch']:>9.2f} {r['flops_per_sample'] / 1e9:>12.3f} "
      f"{r['flops_per_s'] / 1e9:>9.1f}"
    )


if __name__ == "__main__":
  main()
