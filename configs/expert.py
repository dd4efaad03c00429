"""Sync expert (SyncNet_color) training config: original hyper-parameters + `tiny` / `demo` variants.

  python -m lipsync_jax.main --config=configs/expert.py:demo --workdir=workdirs/expert_demo
"""

from __future__ import annotations

try:
  from configs import common
except ModuleNotFoundError:  # loaded by path (config_flags) from outside the repository root
  import importlib.util as _ilu, pathlib as _pl
  _spec = _ilu.spec_from_file_location('configs.common', _pl.Path(__file__).with_name('common.py'))
  common = _ilu.module_from_spec(_spec)
  _spec.loader.exec_module(common)


def _default(c):
  """The original: Adam 1e-4 (betas 0.9, 0.999), batch 64, eval/checkpoint every 10k steps (~1400 batches)."""
  c.data.global_batch_size = 64
  c.optimizer.lr = 1e-4
  c.optimizer.b1, c.optimizer.b2 = 0.9, 0.999
  c.num_train_steps = 500_000
  c.eval_every_steps = 10_000
  c.eval_batches = 1400
  c.checkpoint_every_steps = 10_000


def _tiny(c):
  _default(c)
  common.tiny_common(c)


def _demo(c):
  """CPU-sized run on the demo corpus (1/8 width learns the corpus; see shared/DEMO_CORPUS_NOTES.md)."""
  _default(c)
  c.model.width_multiplier = 1 / 8
  c.data.global_batch_size = 32
  c.optimizer.lr = 1e-3
  c.num_train_steps = 2500
  c.log_every_steps = 50
  c.eval_every_steps = 250
  c.eval_batches = 16
  c.checkpoint_every_steps = 250


VARIANTS = {'default': _default, 'tiny': _tiny, 'demo': _demo}


def get_config(arg: str | None = None):
  return common.select_variant(arg, VARIANTS, common.base_config('expert'))
