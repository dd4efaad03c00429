"""Learning, proven: the expert and then the generator learn the built-in demo corpus, end to end on CPU.

1. Demo corpus (lipsync_jax.data.synthetic -> lipsync_jax.data.clips in a process pool -> shards; cached, built on first use
   by lipsync_jax.data.demo) and the oracle accuracy cap of the held-out split (from its true mouth
   parameters: negatives that look like the positive cap any expert below 1.0).
2. Expert (configs/expert.py:demo: width 1/8, Adam 1e-3, batch 32) trained with the project's own loop
   (lipsync_jax.training.loop.train_and_evaluate) in chunks, evaluated every --eval_every steps on a fixed
   held-out pair set, until the best held-out accuracy >= --target_acc (or --expert_max_steps).
3. Generator (configs/generator.py:demo, small width) against that frozen expert until its eval sync loss
   < --target_sync (0.69 = ln 2, the expert's chance level) or --generator_max_steps.
Prints every evaluation, the figures reached, and the wall time. A bench (20-30+ min of CPU), not a test:

  python bench/learn_demo.py --workdir /tmp/learn_demo
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import pathlib
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str, variant: str):
  spec = importlib.util.spec_from_file_location(f'configs.{name}', REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def oracle_cap(num_clips: int, split: str) -> float | None:
  """The oracle accuracy of the demo corpus' `split` clips (None if the mouth parameters are missing)."""
  from lipsync_jax.data import demo as demo_data
  from lipsync_jax.data import synthetic

  raw_dir, _ = demo_data.demo_paths(num_clips=num_clips)
  filelist = pathlib.Path(raw_dir) / f'{split}.txt'
  if not filelist.exists():
    return None
  paths = [
    pathlib.Path(raw_dir) / f'{line.strip()}.mouth.npy'
    for line in filelist.read_text().splitlines()
    if line.strip()
  ]
  mouths = [np.load(p) for p in paths if p.exists()]
  return synthetic.oracle_sync_accuracy(mouths) if mouths else None


def train_until(config, workdir: str, chunk: int, max_steps: int, done, label: str, budget_s: float):
  """Runs train_and_evaluate in chunks of `chunk` steps (resuming) until done(eval rows) or a limit.

  The evaluations are collected by a hook (lipsync_jax.training.loop.Hooks.on_eval) and printed as they come.
  """
  from lipsync_jax.training import loop

  history, start = [], time.time()

  def on_eval(step, row):
    history.append(dict(row, step=step))
    print(
      f'[{label}] eval @ step {step}: '
      + ', '.join(f'{k}={v:.4f}' for k, v in sorted(row.items()))
      + f'  ({time.time() - start:.0f} s)',
      flush=True,
    )

  hooks = loop.Hooks(on_eval=on_eval)
  step = 0
  while step < max_steps:
    step = min(step + chunk, max_steps)
    config.num_train_steps = step
    result = loop.train_and_evaluate(config, workdir, hooks=hooks)
    print(f'[{label}] step {result.step}: {result.steps_per_sec:.2f} steps/s', flush=True)
    if history and done(history):
      break
    if time.time() - start > budget_s:
      print(f'[{label}] time budget of {budget_s:.0f} s used up at step {step}', flush=True)
      break
  return history, time.time() - start


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='/tmp/lipsync_jax_learn_demo')
  parser.add_argument('--num_clips', type=int, default=0, help='demo corpus size (0 = the config default)')
  parser.add_argument('--eval_every', type=int, default=250)
  parser.add_argument('--eval_batches', type=int, default=16, help='fixed held-out batches (x batch size)')
  parser.add_argument('--target_acc', type=float, default=0.90)
  parser.add_argument('--expert_max_steps', type=int, default=6000)
  parser.add_argument('--expert_budget_min', type=float, default=30.0)
  parser.add_argument('--generator_width', type=float, default=1 / 8)
  parser.add_argument('--generator_eval_every', type=int, default=200)
  parser.add_argument('--target_sync', type=float, default=0.69)
  parser.add_argument('--generator_max_steps', type=int, default=3000)
  parser.add_argument('--generator_budget_min', type=float, default=30.0)
  parser.add_argument('--skip_generator', action='store_true')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  t0 = time.time()

  # -------------------------------------------------------------------------------------- expert ----
  expert_cfg = load_config('expert', 'demo')
  if args.num_clips:
    expert_cfg.data.demo_num_clips = args.num_clips
  expert_cfg.eval_every_steps = args.eval_every
  expert_cfg.eval_batches = args.eval_batches
  expert_cfg.checkpoint_every_steps = args.eval_every
  expert_cfg.log_every_steps = args.eval_every
  expert_dir = os.path.join(args.workdir, 'expert')
  print(
    f'expert: width {expert_cfg.model.width_multiplier}, batch {expert_cfg.data.global_batch_size}, '
    f'lr {expert_cfg.optimizer.lr}, eval every {args.eval_every} steps on '
    f'{args.eval_batches * expert_cfg.data.global_batch_size} fixed held-out pairs',
    flush=True,
  )
  history, expert_wall = train_until(
    expert_cfg,
    expert_dir,
    args.eval_every * 2,
    args.expert_max_steps,
    lambda h: max(r['acc'] for r in h) >= args.target_acc,
    'expert',
    args.expert_budget_min * 60,
  )
  best = max(history, key=lambda r: r['acc'])
  last3 = float(np.mean([r['acc'] for r in history[-3:]]))
  cap = oracle_cap(expert_cfg.data.demo_num_clips, expert_cfg.data.eval_split)
  summary = {
    'expert_best_acc': best['acc'],
    'expert_best_step': best['step'],
    'expert_last3_mean_acc': last3,
    'expert_steps': history[-1]['step'],
    'expert_wall_s': round(expert_wall),
    'oracle_cap': cap,
    'expert_target_met': best['acc'] >= args.target_acc,
  }
  print('expert:', json.dumps(summary), flush=True)

  # ----------------------------------------------------------------------------------- generator ----
  if not args.skip_generator:
    gen_cfg = load_config('generator', 'demo')
    gen_cfg.data.demo_num_clips = expert_cfg.data.demo_num_clips
    gen_cfg.model.width_multiplier = args.generator_width
    gen_cfg.expert_checkpoint = expert_dir
    gen_cfg.eval_every_steps = args.generator_eval_every
    gen_cfg.checkpoint_every_steps = args.generator_eval_every
    gen_cfg.log_every_steps = args.generator_eval_every
    print(
      f'generator: width {gen_cfg.model.width_multiplier}, batch {gen_cfg.data.global_batch_size}, '
      f'lr {gen_cfg.optimizer.lr}, sync weight {gen_cfg.loss.syncnet_wt_initial} -> '
      f'{gen_cfg.loss.syncnet_wt_target} below eval sync {gen_cfg.loss.sync_trigger_threshold}',
      flush=True,
    )
    history, gen_wall = train_until(
      gen_cfg,
      os.path.join(args.workdir, 'generator'),
      args.generator_eval_every * 2,
      args.generator_max_steps,
      lambda h: min(r['sync'] for r in h) < args.target_sync,
      'generator',
      args.generator_budget_min * 60,
    )
    best = min(history, key=lambda r: r['sync'])
    summary.update(
      generator_best_eval_sync=best['sync'],
      generator_best_step=best['step'],
      generator_last_eval=history[-1],
      generator_wall_s=round(gen_wall),
      generator_target_met=best['sync'] < args.target_sync,
    )
  summary['total_wall_s'] = round(time.time() - t0)
  print('RESULT', json.dumps(summary), flush=True)


if __name__ == '__main__':
  main()
