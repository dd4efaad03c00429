"""Learning, proven at HD: the 192 px sync expert learns the demo corpus rendered at 256 px, on CPU.

Owns the HD expert's learning figure (issue #12 item 4): the steps, held-out accuracy curve and wall time
of `configs/expert.py:hd192_demo` (or any expert variant) until its best held-out accuracy >= --target_acc.

1. The HD demo corpus (lipsync_jax.data.demo.ensure_demo_shards at img_size 192, videos rendered at
   config.data.demo_frame_size = 256 px; cached, built on first use; the build time is printed) and the
   oracle accuracy cap of its held-out split (from the true mouth parameters).
2. The expert trained with the project's own loop (resumable chunks of
   lipsync_jax.training.loop.train_and_evaluate, as bench/learn_demo.py; train means printed every
   --log_every), evaluated every --eval_every steps on a fixed held-out pair set, until the best held-out
   accuracy >= --target_acc, --max_steps or --budget_min.
Prints every evaluation (step: acc, loss), steps/s per chunk and the wall time. A bench, not a test:

  python bench/learn_hd.py --workdir /tmp/learn_hd
  python bench/learn_hd.py --workdir /tmp/learn_hd_w16 --width 0.0625 --set optimizer.lr=3e-4
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import learn_demo  # noqa: E402  (bench/ is not a package: its helpers load the configs the same way)


def lr_override_stage(lr: float):
  """The expert stage with its Adam learning rate forced to `lr` in every train step (bench-only).

  For forking a constant-lr run's checkpoint into an lr drop (a copied workdir resumed with --lr_override):
  the restored optimizer state holds the old constant lr (stages._adam keeps it in the state), so the step
  writes the new one into the state's hyperparameters before updating. Configs use
  config.optimizer.lr_schedule instead; this exists to test a drop without retraining from scratch.
  """
  import dataclasses

  import jax.numpy as jnp

  from lipsync_jax.training import stages

  base = stages.get_stage('expert')

  def train_step(state, batch, expert_variables=None):
    hyperparams = dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
    state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))
    return base.train_step(state, batch, expert_variables)

  return dataclasses.replace(base, train_step=train_step)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default='/tmp/lipsync_jax_learn_hd')
  parser.add_argument('--variant', default='hd192_demo', help='a configs/expert.py variant')
  parser.add_argument('--width', type=float, default=0.0, help='expert width multiplier (0 = the variant)')
  parser.add_argument('--batch', type=int, default=0, help='global batch size (0 = the variant)')
  parser.add_argument('--lr', type=float, default=0.0, help='Adam learning rate (0 = the variant)')
  parser.add_argument('--num_clips', type=int, default=0, help='demo corpus size (0 = the variant)')
  parser.add_argument(
    '--lr_override', type=float, default=0.0, help='force this Adam lr (fork a copied workdir into a drop)'
  )
  parser.add_argument('--eval_every', type=int, default=250)
  parser.add_argument('--log_every', type=int, default=50, help='train means printed every this many steps')
  parser.add_argument('--eval_batches', type=int, default=0, help='fixed held-out batches (0 = the variant)')
  parser.add_argument('--chunk_evals', type=int, default=2, help='evaluations per resumed training chunk')
  parser.add_argument('--target_acc', type=float, default=0.90)
  parser.add_argument('--max_steps', type=int, default=0, help='0 = num_train_steps of the variant')
  parser.add_argument('--budget_min', type=float, default=90.0, help='training wall-time budget (minutes)')
  parser.add_argument(
    '--set', action='append', default=[], metavar='KEY=VALUE', help='any other config key, repeatable'
  )
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  t0 = time.time()

  cfg = learn_demo.load_config('expert', args.variant)
  if args.width:
    cfg.model.width_multiplier = args.width
  if args.batch:
    cfg.data.global_batch_size = args.batch
  if args.lr:
    cfg.optimizer.lr = args.lr
  if args.num_clips:
    cfg.data.demo_num_clips = args.num_clips
  if args.eval_batches:
    cfg.eval_batches = args.eval_batches
  learn_demo.apply_overrides(cfg, args.set)
  args.max_steps = args.max_steps or int(cfg.num_train_steps)
  if not cfg.optimizer.decay_steps:  # 0 = num_train_steps, which each resumed chunk below changes: pin it
    cfg.optimizer.decay_steps = args.max_steps
  cfg.eval_every_steps = cfg.checkpoint_every_steps = args.eval_every
  cfg.log_every_steps = args.log_every

  # ----------------------------------------------------------------------------------- corpus ----
  from lipsync_jax.training import loop

  start = time.time()
  shards_dir = loop.resolve_shards_dir(cfg)  # builds the HD demo corpus on first use
  cap = learn_demo.oracle_cap(
    int(cfg.data.demo_num_clips), str(cfg.data.eval_split), int(cfg.data.demo_frame_size)
  )
  corpus_s = time.time() - start
  print(
    f'corpus: {shards_dir} ({corpus_s:.0f} s incl. a first build; img_size {cfg.data.img_size}, '
    f'rendered at {cfg.data.demo_frame_size or 160} px); held-out oracle cap {cap}',
    flush=True,
  )

  # ----------------------------------------------------------------------------------- expert ----
  print(
    f'expert {args.variant}: img_size {cfg.data.img_size}, width {cfg.model.width_multiplier}, batch '
    f'{cfg.data.global_batch_size}, lr {cfg.optimizer.lr}, eval every {args.eval_every} steps on '
    f'{cfg.eval_batches * cfg.data.global_batch_size} fixed held-out pairs; overrides {args.set}',
    flush=True,
  )
  history, wall, chunks = learn_demo.train_until(
    cfg,
    args.workdir,
    args.eval_every * args.chunk_evals,
    args.max_steps,
    lambda h: max(r['acc'] for r in h) >= args.target_acc,
    'expert',
    args.budget_min * 60,
    stage=lr_override_stage(args.lr_override) if args.lr_override else None,
    log_means=('loss', 'acc'),
  )
  if not history:
    raise SystemExit(f'no evaluation ran (workdir {args.workdir} already at --max_steps {args.max_steps}?)')
  best = max(history, key=lambda r: r['acc'])
  reached = next((r['step'] for r in history if r['acc'] >= args.target_acc), None)
  summary = {
    'variant': args.variant,
    'img_size': int(cfg.data.img_size),
    'width': float(cfg.model.width_multiplier),
    'batch': int(cfg.data.global_batch_size),
    'lr': float(cfg.optimizer.lr),
    'overrides': args.set,
    'lr_override': args.lr_override or None,
    'curve': [(r['step'], round(r['acc'], 4), round(r['loss'], 4)) for r in history],
    'best_acc': round(best['acc'], 4),
    'best_step': best['step'],
    'first_step_at_target': reached,
    'last3_mean_acc': round(float(np.mean([r['acc'] for r in history[-3:]])), 4),
    'steps': history[-1]['step'],
    'train_wall_s': round(wall),
    'chunks': chunks,  # (from step, to step, steps/s excl. compile, wall s)
    'oracle_cap': cap,
    'target_met': reached is not None,
    'total_wall_s': round(time.time() - t0),
  }
  print('RESULT', json.dumps(summary), flush=True)


if __name__ == '__main__':
  main()
