"""Learning, proven: the expert and then the README's GAN stage learn the built-in demo corpus, on CPU.

Owns the demo's learning figures (issue #12 item 5): the 96 demo expert's held-out accuracy curve and the
generator / GAN stage's eval sync-loss curve against it (when the sync term engages, where it ends).

1. Demo corpus (lipsync_jax.data.synthetic -> lipsync_jax.data.clips in a process pool -> shards; cached,
   built on first use by lipsync_jax.data.demo) and the oracle accuracy cap of the held-out split (from its
   true mouth parameters: negatives that look like the positive cap any expert below 1.0).
2. Expert (configs/expert.py:demo: width 1/8, batch 32, Adam 1e-3 with warm-up + cosine decay to 0 over
   --expert_steps) trained with the project's own loop (lipsync_jax.training.loop.train_and_evaluate) in
   resumed chunks (the decay is pinned to --expert_steps, so chunking does not change it), evaluated every
   --eval_every steps on a fixed held-out pair set (--eval_batches x 32 pairs). The figure that counts is
   the FINAL evaluation (a decayed run settles; the best of a swinging curve is luck).
3. The README's second stage (configs/gan.py:demo by default, or generator.py:demo) against that frozen
   expert: L1 warm-up at 1e-3 until the eval sync loss < the trigger, then the sync term with the lr x0.1
   (for gan: the generator-only program until loss.disc_start_step, then the discriminator too). Every
   evaluation is printed (eval sync, L1, sync weight); the summary says at which step the sync term engaged and whether the last eval sync loss
   is < --target_sync (0.69 = ln 2, the expert's chance level) and still falling.
Prints every evaluation, the figures reached, steps/s and the wall time. A bench (20-40 min of CPU), not a
test:

  python bench/learn_demo.py --workdir /tmp/learn_demo                       # 96: expert, then gan.py:demo
  python bench/learn_demo.py --workdir /tmp/learn_demo --second none --seed 1  # the 96 expert at another seed
  python bench/learn_demo.py --workdir /tmp/learn_192 --variant hd192_demo --expert_steps 2000
  python bench/learn_demo.py --workdir /tmp/learn_192 --variant hd192_demo \
    --expert_checkpoint /tmp/learn_192/expert --set loss.disc_start_step=700  # a trained expert

--seed sets config.seed (parameter init and the sampler's batches) of both stages; --set KEY=VALUE changes a
second-stage config key. A rerun with the same --workdir resumes each stage from its last checkpoint.
"""

from __future__ import annotations

import argparse
import ast
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


def _literal(text: str):
  """'1e-3' -> 0.001, 'True' -> True, "'cosine'" / 'cosine' -> 'cosine' (a --set value)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config, overrides: list[str]) -> None:
  """--set KEY=VALUE (dotted keys of configs/common.py's schema; an unknown key fails naming it)."""
  for item in overrides:
    key, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'--set {item!r}: expected KEY=VALUE, e.g. --set optimizer.lr=3e-4')
    *parents, leaf = key.split('.')
    target = config
    for part in parents:
      target = target[part]
    if leaf not in target:
      raise ValueError(f'--set {key}: no such config key (see configs/common.py for the schema)')
    target[leaf] = _literal(value)  # ml_collections checks the type (an int key refuses 0.5)


def oracle_cap(num_clips: int, split: str, frame_size: int = 0) -> float | None:
  """The oracle accuracy of the demo corpus' `split` clips (None if the mouth parameters are missing)."""
  from lipsync_jax.data import demo as demo_data
  from lipsync_jax.data import synthetic

  raw_dir, _ = demo_data.demo_paths(num_clips=num_clips, frame_size=frame_size)
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


def latest_step(workdir: str) -> int:
  """The newest checkpoint step in workdir/checkpoints (orbax names step dirs by number), 0 if none."""
  ckpt = pathlib.Path(workdir) / 'checkpoints'
  steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
  return max(steps, default=0)


def train_until(
  config,
  workdir: str,
  chunk: int,
  max_steps: int,
  done,
  label: str,
  budget_s: float,
  stage=None,
  log_means=(),
):
  """Runs train_and_evaluate in resumed chunks of `chunk` steps until done(eval rows), max_steps or budget_s.

  Resumes from workdir's last checkpoint (a rerun, or a copied workdir, continues). The evaluations are
  collected by a hook (lipsync_jax.training.loop.Hooks.on_eval) and printed as they come; with log_means
  (metric names) the train means are printed at every log step too (is it still at chance?). Returns
  (eval rows, wall seconds, chunk figures (from step, to step, steps/s excl. compile, wall s)).
  """
  from lipsync_jax.training import loop

  history, chunks, start = [], [], time.time()

  def on_log(step, rows):
    means = {k: float(np.mean([r[k] for r in rows if k in r])) for k in log_means}
    text = ', '.join(f'{k}={v:.4f}' for k, v in means.items())
    print(f'[{label}] train @ step {step}: {text}  ({time.time() - start:.0f} s)', flush=True)

  def on_eval(step, row):
    history.append(dict(row, step=step))
    print(
      f'[{label}] eval @ step {step}: '
      + ', '.join(f'{k}={v:.4f}' for k, v in sorted(row.items()))
      + f'  ({time.time() - start:.0f} s)',
      flush=True,
    )

  hooks = loop.Hooks(on_log=on_log if log_means else None, on_eval=on_eval)
  step = latest_step(workdir)
  while step < max_steps:
    step = min(step + chunk, max_steps)
    config.num_train_steps = step
    chunk_start = time.time()
    result = loop.train_and_evaluate(config, workdir, stage=stage, hooks=hooks)
    wall = round(time.time() - chunk_start)
    chunks.append((result.start_step, result.step, round(result.steps_per_sec, 3), wall))
    print(
      f'[{label}] steps {result.start_step}..{result.step}: {result.steps_per_sec:.2f} steps/s '
      f'(excl. compile), {wall} s wall',
      flush=True,
    )
    if result.preempted:  # SIGTERM: the loop saved a checkpoint; rerun the same command to resume
      print(f'[{label}] preempted at step {result.step}', flush=True)
      break
    if history and done(history):
      break
    if time.time() - start > budget_s:
      print(f'[{label}] time budget of {budget_s:.0f} s used up at step {step}', flush=True)
      break
  return history, time.time() - start, chunks


def sync_summary(history: list[dict], target_sync: float, wt_target: float) -> dict:
  """When the sync term engaged and where the eval sync loss ended (below target and still falling?)."""
  engaged = [r['step'] for r in history if r.get('sync_wt', 0.0) >= np.float32(wt_target) > 0]
  syncs = [r['sync'] for r in history]
  last = syncs[-1]
  # Still falling: the last evaluation is below the mean of the two before it (one eval is noisy).
  falling = len(syncs) >= 3 and last < float(np.mean(syncs[-3:-1]))
  return {
    'sync_engaged_at_step': engaged[0] if engaged else None,
    'eval_sync_curve': {r['step']: round(r['sync'], 4) for r in history},
    'final_eval_sync': last,
    'final_still_falling': falling,
    'best_eval_sync': min(syncs),
    'target_met': last < target_sync and falling and bool(engaged),
  }


def train_expert(args, expert_cfg, expert_dir: str, steps: int) -> dict:
  """Trains the expert for `steps` (chunks of 2 evaluations) and returns its accuracy figures."""
  opt = expert_cfg.optimizer
  print(
    f'expert ({args.variant}): width {expert_cfg.model.width_multiplier}, batch '
    f'{expert_cfg.data.global_batch_size}, lr {opt.lr} ({opt.lr_schedule}, warm-up {opt.warmup_steps}, '
    f'{steps} steps), eval every {args.eval_every} steps on '
    f'{args.eval_batches * expert_cfg.data.global_batch_size} fixed held-out pairs',
    flush=True,
  )
  history, expert_wall, _ = train_until(
    expert_cfg, expert_dir, args.eval_every * 2, steps, lambda h: False, 'expert', args.expert_budget_min * 60
  )
  best = max(history, key=lambda r: r['acc'])
  final = history[-1]
  cap = oracle_cap(
    expert_cfg.data.demo_num_clips, expert_cfg.data.eval_split, expert_cfg.data.demo_frame_size
  )
  return {
    'expert_acc_curve': {r['step']: round(r['acc'], 4) for r in history},
    'expert_final_acc': final['acc'],
    'expert_best_acc': best['acc'],
    'expert_best_step': best['step'],
    'expert_steps': final['step'],
    'expert_wall_s': round(expert_wall),
    'oracle_cap': cap,
    'expert_target_met': final['acc'] >= args.target_acc,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='/tmp/lipsync_jax_learn_demo')
  parser.add_argument('--variant', default='demo', help='config variant of every stage (e.g. hd192_demo)')
  parser.add_argument('--num_clips', type=int, default=0, help='demo corpus size (0 = the config default)')
  parser.add_argument('--eval_every', type=int, default=250)
  parser.add_argument('--eval_batches', type=int, default=32, help='fixed held-out batches (x batch size)')
  parser.add_argument('--target_acc', type=float, default=0.90)
  # 4000 (~20 min at the 3.0-3.4 steps/s measured on 2 cores): the 1,500 of expert.py:demo (the README's
  # main command) gave a held-out accuracy of 0.842 at step 1,250, under the 0.90 this bench checks.
  parser.add_argument('--expert_steps', type=int, default=4000, help='the decay length (0 = the config\'s)')
  parser.add_argument('--expert_budget_min', type=float, default=30.0)
  parser.add_argument('--seed', type=int, default=-1, help='config.seed of every stage (-1 = the config\'s)')
  parser.add_argument(
    '--expert_checkpoint',
    default='',
    help='a trained expert workdir: skip the expert stage and train the second stage against it',
  )
  parser.add_argument('--second', choices=('gan', 'generator', 'none'), default='gan')
  parser.add_argument('--second_steps', type=int, default=0, help='0 = the config\'s')
  parser.add_argument('--target_sync', type=float, default=0.69)
  parser.add_argument('--second_budget_min', type=float, default=30.0)
  parser.add_argument(
    '--set', action='append', default=[], metavar='KEY=VALUE', help='a second-stage config key, repeatable'
  )
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  t0 = time.time()

  # -------------------------------------------------------------------------------------- expert ----
  expert_cfg = load_config('expert', args.variant)
  if args.num_clips:
    expert_cfg.data.demo_num_clips = args.num_clips
  steps = args.expert_steps or int(expert_cfg.num_train_steps)
  expert_cfg.optimizer.decay_steps = steps  # chunked runs below must not re-time the decay
  expert_cfg.eval_every_steps = args.eval_every
  expert_cfg.eval_batches = args.eval_batches
  expert_cfg.checkpoint_every_steps = args.eval_every
  expert_cfg.log_every_steps = args.eval_every
  if args.seed >= 0:
    expert_cfg.seed = args.seed
  expert_dir = args.expert_checkpoint or os.path.join(args.workdir, 'expert')
  summary = {}
  if args.expert_checkpoint:
    print(f'expert: the trained one in {expert_dir} (no expert stage)', flush=True)
  else:
    summary = train_expert(args, expert_cfg, expert_dir, steps)
  print('expert:', json.dumps(summary), flush=True)

  # ------------------------------------------------------------------ generator or GAN (the README's) ----
  if args.second != 'none':
    cfg = load_config(args.second, args.variant)
    cfg.data.demo_num_clips = expert_cfg.data.demo_num_clips
    cfg.expert_checkpoint = expert_dir
    if args.seed >= 0:
      cfg.seed = args.seed
    apply_overrides(cfg, args.set)
    second_steps = args.second_steps or int(cfg.num_train_steps)
    print(
      f'{args.second} ({args.variant}): width {cfg.model.width_multiplier}, batch '
      f'{cfg.data.global_batch_size}, lr {cfg.optimizer.lr} (x{cfg.optimizer.sync_lr_factor} when the sync '
      f'term enters), sync weight {cfg.loss.syncnet_wt_initial} -> {cfg.loss.syncnet_wt_target} below eval '
      f'sync {cfg.loss.sync_trigger_threshold}, discriminator from step {cfg.loss.disc_start_step}, '
      f'{second_steps} steps, eval every {cfg.eval_every_steps} on {cfg.eval_batches} batches',
      flush=True,
    )
    history, wall, _ = train_until(
      cfg,
      os.path.join(args.workdir, args.second),
      second_steps,
      second_steps,
      lambda h: False,
      args.second,
      args.second_budget_min * 60,
    )
    figures = sync_summary(history, args.target_sync, cfg.loss.syncnet_wt_target)
    figures.update(wall_s=round(wall), steps=history[-1]['step'])
    summary.update({f'{args.second}_{k}': v for k, v in figures.items()})
  summary.update(variant=args.variant, seed=int(expert_cfg.seed), overrides=args.set)
  summary['total_wall_s'] = round(time.time() - t0)
  print('RESULT', json.dumps(summary), flush=True)


if __name__ == '__main__':
  main()
