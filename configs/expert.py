"""Sync expert (SyncNet_color) training config: original hyper-parameters + `tiny` / `demo` variants.

python -m lipsync_jax.main --config=configs/expert.py:demo --workdir=workdirs/expert_demo
"""

from __future__ import annotations

from configs import common


def _default(c):
  """The original: Adam 1e-4 (betas 0.9, 0.999), batch 64, eval/checkpoint every 10k steps (~1400 batches)."""
  c.data.global_batch_size = 64
  c.optimizer.lr = 1e-4
  c.optimizer.b1, c.optimizer.b2 = 0.9, 0.999
  common.schedule(c, steps=500_000, eval_every=10_000, eval_batches=1400)


def _tiny(c):
  _default(c)
  common.tiny_common(c)


def _demo(c):
  """CPU-sized run on the demo corpus (1/8 width learns the corpus; see shared/DEMO_CORPUS_NOTES.md)."""
  _default(c)
  common.demo_common(c, batch=32, lr=1e-3, steps=2500, eval_every=250, eval_batches=16, log_every=50)


VARIANTS = {'default': _default, 'tiny': _tiny, 'demo': _demo}


def get_config(arg: str | None = None):
  return common.select_variant(arg, VARIANTS, common.base_config('expert'))
