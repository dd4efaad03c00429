"""Training-step throughput of the three stages: jitted JAX vs eager PyTorch on the same CPU, MFU on GPU.

Prints, per stage (expert, generator, gan) and per transposed-conv form ('direct', 'phase'): compile time,
steps/s, samples/s, XLA FLOPs per step (compiled cost analysis) and, on GPU/TPU, the model FLOP
utilisation against the device's bf16 peak. On CPU at width 1 it also times the same step in eager
PyTorch on the test reference models (tests/torch_reference.py: same batch, same losses, Adam) and prints
the JAX / PyTorch time ratio (goal: <= 1.25). PyTorch runs in its own process (one runtime's idle thread
pool must not slow the other's); the header prints the XLA_FLAGS in force (lipsync_jax adds its XLA:CPU
defaults on import, see lipsync_jax/xla_flags.py; LIPSYNC_JAX_XLA_FLAGS=off to compare without them).

Defaults are the original's: full-size models, batch 64 (expert) and 16 (generator, gan). Full size on a
small shared CPU is slow; shrink with --batch / --width / --steps and report what was run:

  python bench/train_bench.py                                  # full size, default batches
  python bench/train_bench.py --batch 4 --steps 3 --stages expert,generator
  python bench/train_bench.py --dtype bfloat16 --impls direct  # GPU/TPU
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np

from lipsync_jax.training import stages

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
from bench.accelerators import peak_flops_per_device  # noqa: E402
from configs import common  # noqa: E402  (the config schema, at the repository root)

DEFAULT_BATCH = {'expert': 64, 'generator': 16, 'gan': 16}


def bench_config(stage: str, width: float, dtype: str, impl: str) -> ml_collections.ConfigDict:
  """The schema (configs/common.py) with the original hyper-parameters of `stage` (sync weight already on,
  so every loss term is computed)."""
  c = common.base_config(stage)
  c.model.update(dict(width_multiplier=width, compute_dtype=dtype, transpose_impl=impl))
  c.data.img_size = 96
  gan = stage == 'gan'
  c.optimizer.update(
    dict(lr=1e-4, b1=0.5 if gan else 0.9, b2=0.999, disc_lr=1e-4, disc_b1=0.5, disc_b2=0.999, grad_clip=0.0)
  )
  c.loss.update(
    dict(
      syncnet_wt_initial=0.03 if gan else 0.01,
      syncnet_wt_target=0.03 if gan else 0.01,
      sync_trigger_threshold=0.75,
      disc_wt=0.07 if gan else 0.0,
      expert_bn='batch',
    )
  )
  return c


def make_batch(stage: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  if stage == 'expert':
    return {
      'faces': rng.integers(0, 256, (batch, 48, 96, 15), dtype=np.uint8),
      'mel': rng.uniform(-4, 4, (batch, 80, 16, 1)).astype(np.float32),
      'label': (rng.random((batch, 1)) < 0.5).astype(np.float32),
    }
  gt = rng.integers(0, 256, (batch, 5, 96, 96, 3), dtype=np.uint8)
  masked = gt.copy()
  masked[:, :, 48:] = 0
  return {
    'inputs': np.concatenate([masked, rng.integers(0, 256, gt.shape, dtype=np.uint8)], axis=-1),
    'gt': gt,
    'indiv_mels': rng.uniform(-4, 4, (batch, 5, 80, 16, 1)).astype(np.float32),
    'mel': rng.uniform(-4, 4, (batch, 80, 16, 1)).astype(np.float32),
  }


def xla_flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis:
    return None
  flops = analysis.get('flops')
  return float(flops) if flops is not None and flops > 0 else None


def peak_flops(device) -> float | None:
  return peak_flops_per_device(getattr(device, 'device_kind', ''))


def time_jax(
  stage_name: str, batch_size: int, width: float, dtype: str, impl: str, steps: int, warmup: int
) -> dict:
  stage = stages.get_stage(stage_name)
  config = bench_config(stage_name, width, dtype, impl)
  state = jax.jit(functools.partial(stage.init, config))(jax.random.key(0))
  expert_vars = None
  if stage.needs_expert:
    expert_config = bench_config('expert', width, dtype, impl)
    expert_vars = jax.jit(functools.partial(stages.get_stage('expert').init, expert_config))(
      jax.random.key(1)
    ).variables
  batch = jax.device_put(make_batch(stage_name, batch_size))
  step = jax.jit(stage.train_step, donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, batch, expert_vars).compile()
  compile_s = time.perf_counter() - start
  flops = xla_flops(compiled)
  for _ in range(warmup):
    state, metrics = compiled(state, batch, expert_vars)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch, expert_vars)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / steps
  result = {'compile_s': compile_s, 'step_s': step_s, 'flops': flops, 'loss': float(metrics['loss'])}
  peak = peak_flops(jax.devices()[0])
  if flops and peak and jax.default_backend() != 'cpu':
    result['mfu'] = flops / step_s / peak
  return result


# ------------------------------------------------------------------------------------- PyTorch reference


def torch_step_fn(stage_name: str, batch_np: dict[str, np.ndarray]):
  """The same training step in eager PyTorch (NCHW) on the reference models; returns a closure."""
  import torch
  import torch.nn.functional as F

  sys.path.insert(0, str(REPO / 'tests'))
  import torch_reference as ref  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  if stage_name == 'expert':
    model = ref.SyncNetColor().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    faces = torch.from_numpy(batch_np['faces']).permute(0, 3, 1, 2).contiguous()
    mel = torch.from_numpy(batch_np['mel']).permute(0, 3, 1, 2).contiguous()
    label = torch.from_numpy(batch_np['label'])

    def step():
      opt.zero_grad()
      audio, face = model(mel, faces.float() / 255.0)
      loss = F.binary_cross_entropy(F.cosine_similarity(audio, face).unsqueeze(1), label)
      loss.backward()
      opt.step()
      return loss.item()

    return step

  gan = stage_name == 'gan'
  gen = ref.Wav2LipRef().train()
  expert = ref.SyncNetColor().train()  # the original leaves the frozen expert in train mode
  for p in expert.parameters():
    p.requires_grad = False
  opt = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.5 if gan else 0.9, 0.999))
  disc = ref.QualityDiscRef().train() if gan else None
  disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999)) if gan else None
  w, disc_wt = (0.03, 0.07) if gan else (0.01, 0.0)
  b = batch_np['inputs'].shape[0]
  inputs = torch.from_numpy(batch_np['inputs']).reshape(b * 5, 96, 96, 6).permute(0, 3, 1, 2).contiguous()
  gt = torch.from_numpy(batch_np['gt']).reshape(b * 5, 96, 96, 3).permute(0, 3, 1, 2).contiguous()
  indiv = torch.from_numpy(batch_np['indiv_mels']).reshape(b * 5, 80, 16, 1).permute(0, 3, 1, 2).contiguous()
  mel = torch.from_numpy(batch_np['mel']).permute(0, 3, 1, 2).contiguous()

  def step():
    x, y = inputs.float() / 255.0, gt.float() / 255.0
    opt.zero_grad()
    g = gen(indiv, x)  # (B*5, 3, 96, 96)
    lower = g[:, :, 48:].reshape(b, 5, 3, 48, 96).reshape(b, 15, 48, 96)
    audio, face = expert(mel, lower)
    sync = F.binary_cross_entropy(F.cosine_similarity(audio, face).unsqueeze(1), torch.ones(b, 1))
    l1 = F.l1_loss(g, y)
    if gan:
      perceptual = F.binary_cross_entropy(disc(g), torch.ones(b * 5, 1))
      loss = w * sync + disc_wt * perceptual + (1 - w - disc_wt) * l1
    else:
      loss = w * sync + (1 - w) * l1
    loss.backward()
    opt.step()
    if gan:
      disc_opt.zero_grad()
      real = F.binary_cross_entropy(disc(y), torch.ones(b * 5, 1))
      real.backward()
      fake = F.binary_cross_entropy(disc(g.detach()), torch.zeros(b * 5, 1))
      fake.backward()
      disc_opt.step()
    return loss.item()

  return step


def time_torch(stage_name: str, batch_size: int, steps: int, warmup: int) -> dict:
  step = torch_step_fn(stage_name, make_batch(stage_name, batch_size))
  for _ in range(warmup):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    loss = step()
  return {'step_s': (time.perf_counter() - start) / steps, 'loss': loss}


def time_torch_in_subprocess(stage_name: str, batch_size: int, steps: int, warmup: int, threads: int) -> dict:
  """`time_torch` in a fresh interpreter, so neither runtime's thread pool competes with the other's
  (measured here: PyTorch timed in the same process right after JAX ran 10-35% slower)."""
  command = [
    sys.executable,
    str(pathlib.Path(__file__).resolve()),
    '--torch_worker',
    stage_name,
    '--batch',
    str(batch_size),
    '--steps',
    str(steps),
    '--warmup',
    str(warmup),
    '--torch_threads',
    str(threads),
  ]
  out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--stages', default='expert,generator,gan')
  parser.add_argument('--batch', type=int, default=0, help='0 = the original (64 expert, 16 generator/gan)')
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--dtype', default='float32', choices=sorted(stages.COMPUTE_DTYPES))
  parser.add_argument('--impls', default='direct,phase', help="transposed-conv forms for generator/gan")
  parser.add_argument(
    '--torch',
    default='auto',
    choices=('auto', 'on', 'off'),
    help='eager PyTorch side-by-side (auto: on CPU at width 1)',
  )
  parser.add_argument('--torch_threads', type=int, default=0, help='0 = PyTorch default')
  parser.add_argument('--torch_worker', default='', help=argparse.SUPPRESS)  # internal: time one stage
  args = parser.parse_args(argv)
  if args.torch_worker:
    if args.torch_threads:
      import torch

      torch.set_num_threads(args.torch_threads)
    print(json.dumps(time_torch(args.torch_worker, args.batch, args.steps, args.warmup)))
    return

  backend = jax.default_backend()
  device = jax.devices()[0]
  with_torch = args.torch == 'on' or (args.torch == 'auto' and backend == 'cpu' and args.width == 1.0)
  print(
    f'backend {backend} ({getattr(device, "device_kind", "?")}, {jax.device_count()} devices), '
    f'width {args.width}, dtype {args.dtype}, steps {args.steps} (+{args.warmup} warm-up), '
    f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}',
    flush=True,
  )
  header = (
    f'{"stage":<10}{"impl":<8}{"batch":>6}{"compile s":>11}{"step s":>10}{"steps/s":>9}'
    f'{"samples/s":>11}{"GFLOP/step":>12}{"MFU":>7}{"torch s":>9}{"jax/torch":>10}'
  )
  print(header, flush=True)
  for name in args.stages.split(','):
    batch = args.batch or DEFAULT_BATCH[name]
    impls = args.impls.split(',') if name != 'expert' else ['-']
    torch_result = (
      time_torch_in_subprocess(name, batch, args.steps, args.warmup, args.torch_threads)
      if with_torch
      else None
    )
    for impl in impls:
      r = time_jax(
        name, batch, args.width, args.dtype, 'auto' if impl == '-' else impl, args.steps, args.warmup
      )
      flops = f'{r["flops"] / 1e9:.1f}' if r['flops'] else '-'
      mfu = f'{100 * r["mfu"]:.1f}%' if 'mfu' in r else '-'
      t_s = f'{torch_result["step_s"]:.3f}' if torch_result else '-'
      ratio = f'{r["step_s"] / torch_result["step_s"]:.2f}' if torch_result else '-'
      print(
        f'{name:<10}{impl:<8}{batch:>6}{r["compile_s"]:>11.1f}{r["step_s"]:>10.3f}{1 / r["step_s"]:>9.2f}'
        f'{batch / r["step_s"]:>11.1f}{flops:>12}{mfu:>7}{t_s:>9}{ratio:>10}',
        flush=True,
      )


if __name__ == '__main__':
  main()
