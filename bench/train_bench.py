"""Training-step cost of the three stages at 96 / 192 / 288 px: memory and FLOPs (compiled), throughput (run).

Two modes. `--compile_only` compiles each stage's train step exactly as lipsync_jax.training.loop jits it
(in/out shardings over the mesh of all devices, the state donated), on abstract inputs (nothing is
initialised or run, so full-width HD steps compile on a laptop), and prints per (stage, img_size, remat):
XLA's memory analysis of the compiled step per device (arguments, outputs, temporaries, generated code,
aliased (donated) bytes; peak ~= arguments + outputs + temporaries - aliased) and the compiled step's FLOPs
(cost analysis) per step and per sample. Memory figures are the backend's own: on CPU they are XLA:CPU's
buffer assignment (a proxy for a GPU/TPU's: other fusion, layouts and bf16 support), on GPU/TPU the
device's. `--json PATH` writes the rows.

The default mode times the step: compile time, steps/s, samples/s, XLA FLOPs per step (compiled cost
analysis) and, on GPU/TPU, the model FLOP utilisation against the device's bf16 peak, per stage (expert,
generator, gan) and per transposed-conv form ('direct', 'phase'). On CPU at width 1 and 96 px it also times
the same step in eager PyTorch on the test reference models (tests/torch_reference.py: same batch, same
losses, Adam) and prints the JAX / PyTorch time ratio (goal: <= 1.25). PyTorch runs in its own process (one
runtime's idle thread pool must not slow the other's); the header prints the XLA_FLAGS in force
(lipsync_jax adds its XLA:CPU defaults on import, see lipsync_jax/xla_flags.py; LIPSYNC_JAX_XLA_FLAGS=off
to compare without them).

Defaults are the original's: full-size models, batch 64 (expert) and 16 (generator, gan). Full size on a
small shared CPU is slow; shrink with --batch / --width / --steps and report what was run:

  python bench/train_bench.py                                  # full size, default batches, 96 px
  python bench/train_bench.py --batch 4 --steps 3 --stages expert,generator
  python bench/train_bench.py --dtype bfloat16 --impls direct  # GPU/TPU
  python bench/train_bench.py --img_sizes 96,192 --dtype bfloat16 --impls direct --remat off,on  # GPU/TPU
  python bench/train_bench.py --compile_only --fast_compile --json /tmp/mem.json  # 96/192/288, bf16, remat off/on
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

from lipsync_jax.training import sharding, stages

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
from bench.accelerators import peak_flops_per_device  # noqa: E402
from configs import common  # noqa: E402  (the config schema, at the repository root)

DEFAULT_BATCH = {'expert': 64, 'generator': 16, 'gan': 16}
GIB = 2**30
# --fast_compile: XLA:CPU code generation at low optimisation (LLVM only: the HLO passes, fusion and buffer
# assignment that memory_analysis / cost_analysis report on are the same; checked on the expert at 96 px).
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def bench_config(
  stage: str,
  width: float,
  dtype: str,
  impl: str,
  img_size: int = 96,
  remat: bool = False,
  fsdp: int = 1,
) -> ml_collections.ConfigDict:
  """The schema (configs/common.py) with the original hyper-parameters of `stage` (sync weight already on,
  so every loss term is computed) at `img_size`; fsdp > 1: params sharded over an fsdp axis of that size."""
  c = common.base_config(stage)
  c.model.update(dict(width_multiplier=width, compute_dtype=dtype, transpose_impl=impl, remat=remat))
  c.data.img_size = img_size
  if fsdp > 1:
    c.mesh.update(dict(data=-1, fsdp=fsdp, param_sharding='fsdp'))
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


def batch_spec(stage: str, batch: int, img_size: int = 96) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of a `stage` batch as lipsync_jax.data.pipeline makes it (images uint8)."""
  s, u8, f32 = img_size, np.dtype(np.uint8), np.dtype(np.float32)
  if stage == 'expert':
    return {
      'faces': ((batch, s // 2, s, 15), u8),
      'mel': ((batch, 80, 16, 1), f32),
      'label': ((batch, 1), f32),
    }
  return {
    'inputs': ((batch, 5, s, s, 6), u8),
    'gt': ((batch, 5, s, s, 3), u8),
    'indiv_mels': ((batch, 5, 80, 16, 1), f32),
    'mel': ((batch, 80, 16, 1), f32),
  }


def make_batch(stage: str, batch: int, seed: int = 0, img_size: int = 96) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  s = img_size
  if stage == 'expert':
    return {
      'faces': rng.integers(0, 256, (batch, s // 2, s, 15), dtype=np.uint8),
      'mel': rng.uniform(-4, 4, (batch, 80, 16, 1)).astype(np.float32),
      'label': (rng.random((batch, 1)) < 0.5).astype(np.float32),
    }
  gt = rng.integers(0, 256, (batch, 5, s, s, 3), dtype=np.uint8)
  masked = gt.copy()
  masked[:, :, s // 2 :] = 0
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
  stage_name: str,
  batch_size: int,
  width: float,
  dtype: str,
  impl: str,
  steps: int,
  warmup: int,
  img_size: int = 96,
  remat: bool = False,
) -> dict:
  stage = stages.get_stage(stage_name)
  config = bench_config(stage_name, width, dtype, impl, img_size, remat)
  state = jax.jit(functools.partial(stage.init, config))(jax.random.key(0))
  expert_vars = None
  if stage.needs_expert:
    expert_config = bench_config('expert', width, dtype, impl, img_size, remat)
    expert_vars = jax.jit(functools.partial(stages.get_stage('expert').init, expert_config))(
      jax.random.key(1)
    ).variables
  batch = jax.device_put(make_batch(stage_name, batch_size, img_size=img_size))
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


def compile_step(
  stage_name: str,
  batch_size: int,
  width: float,
  dtype: str,
  impl: str,
  img_size: int,
  remat: bool,
  fsdp: int = 1,
  compiler_options: dict | None = None,
) -> dict:
  """Compiles `stage_name`'s train step as lipsync_jax.training.loop jits it (mesh over all devices, state
  shardings, batch split over the mesh, frozen expert replicated, state donated) on abstract inputs: nothing
  is initialised or executed. Returns XLA's per-device memory analysis and FLOPs of the compiled step.

  With several devices the compiled module is the per-device (SPMD-partitioned) program: memory and FLOPs
  are per device; FLOPs per sample = per-device FLOPs x devices / global batch.
  """
  stage = stages.get_stage(stage_name)
  config = bench_config(stage_name, width, dtype, impl, img_size, remat, fsdp)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_global_batch_size(batch_size, mesh)
  abstract_state = jax.eval_shape(functools.partial(stage.init, config), jax.random.key(0))
  state_shardings = sharding.state_shardings(abstract_state, mesh, config.mesh.param_sharding)
  expert = None
  if stage.needs_expert:  # a frozen expert at the generator's width and size, as the loop puts it
    expert_config = bench_config('expert', width, dtype, impl, img_size, remat)
    expert_init = stages.get_stage('expert').init
    expert = jax.eval_shape(lambda key: expert_init(expert_config, key).variables, jax.random.key(1))
  batch = {
    k: jax.ShapeDtypeStruct(shape, dt)
    for k, (shape, dt) in batch_spec(stage_name, batch_size, img_size).items()
  }
  step = sharding.jit_train_step(stage.train_step, mesh, state_shardings)  # as the train loop jits it
  start = time.perf_counter()
  compiled = step.lower(abstract_state, batch, expert).compile(compiler_options)
  compile_s = time.perf_counter() - start
  devices = int(mesh.devices.size)
  flops = xla_flops(compiled)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state.params))
  row = {
    'stage': stage_name,
    'img_size': img_size,
    'remat': remat,
    'batch': batch_size,
    'devices': devices,
    'fsdp': fsdp,
    'width': width,
    'dtype': dtype,
    'impl': impl,
    'params': num_params,
    'compile_s': compile_s,
    'flops_per_step_per_device': flops,
    'flops_per_sample': flops * devices / batch_size if flops else None,
  }
  memory = compiled.memory_analysis()
  if memory is not None:
    for key in ('argument', 'output', 'alias', 'temp', 'generated_code'):
      row[f'{key}_bytes'] = int(getattr(memory, f'{key}_size_in_bytes'))
    row['peak_bytes'] = row['argument_bytes'] + row['output_bytes'] + row['temp_bytes'] - row['alias_bytes']
    # XLA's own figure, JSON only: XLA:CPU counts arguments + outputs in it, not the temporaries.
    row['xla_peak_memory_bytes'] = int(getattr(memory, 'peak_memory_in_bytes', 0) or 0) or None
  return row


def print_memory_table(rows: list[dict]) -> None:
  """One line per compiled step: GiB per device and GFLOP per sample."""
  print(
    f'{"stage":<10}{"size":>5}{"remat":>6}{"batch":>6}{"params M":>9}{"args":>8}{"out":>8}{"alias":>8}'
    f'{"temp":>8}{"code":>7}{"peak":>8}{"GFLOP/sample":>13}{"compile s":>10}',
    flush=True,
  )
  gib = lambda row, key: f'{row[key] / GIB:.2f}' if row.get(key) is not None else '-'  # noqa: E731
  for r in rows:
    per_sample = f'{r["flops_per_sample"] / 1e9:.1f}' if r['flops_per_sample'] else '-'
    print(
      f'{r["stage"]:<10}{r["img_size"]:>5}{"on" if r["remat"] else "off":>6}{r["batch"]:>6}'
      f'{r["params"] / 1e6:>9.2f}{gib(r, "argument_bytes"):>8}{gib(r, "output_bytes"):>8}'
      f'{gib(r, "alias_bytes"):>8}{gib(r, "temp_bytes"):>8}{gib(r, "generated_code_bytes"):>7}'
      f'{gib(r, "peak_bytes"):>8}{per_sample:>13}{r["compile_s"]:>10.1f}',
      flush=True,
    )


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


def _flag_list(text: str, parse=str) -> list:
  return [parse(x) for x in text.split(',') if x.strip()]


REMAT_FLAGS = {'off': False, 'on': True}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--stages', default='expert,generator,gan')
  parser.add_argument('--batch', type=int, default=0, help='0 = the original (64 expert, 16 generator/gan)')
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument(
    '--dtype',
    default='',
    choices=('', *sorted(stages.COMPUTE_DTYPES)),
    help="compute dtype ('': float32 when timing, bfloat16 with --compile_only)",
  )
  parser.add_argument(
    '--impls',
    default='',
    help="transposed-conv forms for generator/gan ('': direct,phase when timing; direct with --compile_only, "
    'what GPUs/TPUs run)',
  )
  parser.add_argument(
    '--img_sizes',
    default='',
    help="face sizes, e.g. 96,192,288 ('': 96 when timing, 96,192,288 with --compile_only)",
  )
  parser.add_argument(
    '--remat',
    default='',
    help="off, on or off,on (config.model.remat; '': off when timing, off,on with --compile_only)",
  )
  parser.add_argument(
    '--compile_only',
    action='store_true',
    help='compile each step on abstract inputs and report XLA memory analysis + FLOPs; run nothing',
  )
  parser.add_argument(
    '--fsdp', type=int, default=1, help='--compile_only: shard params over an fsdp axis of N'
  )
  parser.add_argument(
    '--fast_compile',
    action='store_true',
    help='--compile_only on CPU: LLVM at low optimisation (same memory / FLOP figures, faster compiles)',
  )
  parser.add_argument('--json', default='', help='write the rows (and the run settings) to this JSON file')
  parser.add_argument(
    '--torch',
    default='auto',
    choices=('auto', 'on', 'off'),
    help='eager PyTorch side-by-side (auto: on CPU at width 1, 96 px)',
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

  compile_only = args.compile_only
  dtype = args.dtype or ('bfloat16' if compile_only else 'float32')
  impls = _flag_list(args.impls or ('direct' if compile_only else 'direct,phase'))
  img_sizes = _flag_list(args.img_sizes or ('96,192,288' if compile_only else '96'), int)
  remat_names = _flag_list(args.remat or ('off,on' if compile_only else 'off'))
  unknown = [r for r in remat_names if r not in REMAT_FLAGS]
  if unknown:
    raise SystemExit(f'--remat: {unknown} not understood; use off, on or off,on')
  remats = [REMAT_FLAGS[r] for r in remat_names]
  backend = jax.default_backend()
  device = jax.devices()[0]
  header = {
    'backend': backend,
    'device_kind': getattr(device, 'device_kind', '?'),
    'device_count': jax.device_count(),
    'width': args.width,
    'dtype': dtype,
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  print(
    f'backend {backend} ({header["device_kind"]}, {jax.device_count()} devices), width {args.width}, '
    f'dtype {dtype}, '
    + ('compile only (XLA memory analysis per device, nothing run), ' if compile_only else '')
    + ('' if compile_only else f'steps {args.steps} (+{args.warmup} warm-up), ')
    + f'XLA_FLAGS={header["xla_flags"]!r}',
    flush=True,
  )
  rows = []
  if compile_only:
    for name in _flag_list(args.stages):
      batch = args.batch or DEFAULT_BATCH[name]
      for img_size in img_sizes:
        for remat in remats:
          for impl in impls if name != 'expert' else impls[:1]:
            options = FAST_COMPILE if args.fast_compile else None
            rows.append(
              compile_step(name, batch, args.width, dtype, impl, img_size, remat, args.fsdp, options)
            )
            write_json(args.json, header, compile_only, rows)  # after each row: long runs keep what they got
            print(
              f'  compiled {name} {img_size}px remat={"on" if remat else "off"} impl={impl}: '
              f'{rows[-1]["compile_s"]:.0f} s',
              flush=True,
            )
    print(f'per-device memory in GiB (peak = args + out + temp - alias), impls {impls}', flush=True)
    print_memory_table(rows)
  else:
    rows = run_timing(args, dtype, impls, img_sizes, remats, backend)
  if args.json:
    write_json(args.json, header, compile_only, rows)
    print(f'wrote {args.json}', flush=True)


def write_json(path: str, header: dict, compile_only: bool, rows: list[dict]) -> None:
  if path:
    with open(path, 'w') as f:
      json.dump({**header, 'compile_only': compile_only, 'rows': rows}, f, indent=2)


def run_timing(args, dtype: str, impls: list[str], img_sizes: list[int], remats: list[bool], backend: str):
  """The timing mode: one table line per (stage, img_size, remat, impl); returns the rows."""
  header = (
    f'{"stage":<10}{"impl":<8}{"size":>5}{"remat":>6}{"batch":>6}{"compile s":>11}{"step s":>10}{"steps/s":>9}'
    f'{"samples/s":>11}{"GFLOP/step":>12}{"MFU":>7}{"torch s":>9}{"jax/torch":>10}'
  )
  print(header, flush=True)
  rows = []
  for name in _flag_list(args.stages):
    batch = args.batch or DEFAULT_BATCH[name]
    stage_impls = impls if name != 'expert' else ['-']
    for img_size in img_sizes:
      # The PyTorch reference models are the original 96 px networks.
      with_torch = img_size == 96 and (
        args.torch == 'on' or (args.torch == 'auto' and backend == 'cpu' and args.width == 1.0)
      )
      torch_result = (
        time_torch_in_subprocess(name, batch, args.steps, args.warmup, args.torch_threads)
        if with_torch
        else None
      )
      for remat in remats:
        for impl in stage_impls:
          r = time_jax(
            name,
            batch,
            args.width,
            dtype,
            'auto' if impl == '-' else impl,
            args.steps,
            args.warmup,
            img_size,
            remat,
          )
          flops = f'{r["flops"] / 1e9:.1f}' if r['flops'] else '-'
          mfu = f'{100 * r["mfu"]:.1f}%' if 'mfu' in r else '-'
          t_s = f'{torch_result["step_s"]:.3f}' if torch_result else '-'
          ratio = f'{r["step_s"] / torch_result["step_s"]:.2f}' if torch_result else '-'
          print(
            f'{name:<10}{impl:<8}{img_size:>5}{"on" if remat else "off":>6}{batch:>6}{r["compile_s"]:>11.1f}'
            f'{r["step_s"]:>10.3f}{1 / r["step_s"]:>9.2f}{batch / r["step_s"]:>11.1f}{flops:>12}{mfu:>7}'
            f'{t_s:>9}{ratio:>10}',
            flush=True,
          )
          rows.append(
            dict(r, stage=name, impl=impl, img_size=img_size, remat=remat, batch=batch, torch=torch_result)
          )
  return rows


if __name__ == '__main__':
  main()
