"""Wav2Lip GAN ("hq") training config: generator + visual-quality discriminator, original
hyper-parameters + `tiny` / `demo` variants. Needs an expert:
--config.expert_checkpoint=<expert workdir | variables dir | official .pth>.

  python -m lipsync_jax.main --config=configs/gan.py --workdir=DIR --config.expert_checkpoint=EXPERT
  python -m lipsync_jax.main --config=configs/gan.py:tiny --workdir=/tmp/gan_tiny   # random expert, smoke
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
  """The original: G and D Adam 1e-4 betas (0.5, 0.999), batch 16, loss = w*sync + 0.07*perceptual +
  (1-w-0.07)*L1 with w 0 -> 0.03 once eval sync loss < 0.75, eval every 3000 steps (~300 batches)."""
  c.data.global_batch_size = 16
  c.optimizer.lr = 1e-4
  c.optimizer.b1, c.optimizer.b2 = 0.5, 0.999
  c.optimizer.disc_lr = 1e-4
  c.optimizer.disc_b1, c.optimizer.disc_b2 = 0.5, 0.999
  c.loss.syncnet_wt_initial = 0.0
  c.loss.syncnet_wt_target = 0.03
  c.loss.sync_trigger_threshold = 0.75
  c.loss.disc_wt = 0.07
  c.loss.expert_bn = 'batch'
  c.num_train_steps = 260_000
  c.eval_every_steps = 3000
  c.eval_batches = 300
  c.checkpoint_every_steps = 3000


def _tiny(c):
  _default(c)
  common.tiny_common(c)
  c.expert_checkpoint = 'random-init'


def _demo(c):
  _default(c)
  c.model.width_multiplier = 1 / 8
  c.data.global_batch_size = 8
  c.optimizer.lr = 5e-4
  c.optimizer.disc_lr = 1e-4  # at 5e-4 the discriminator collapsed to a constant 0.5 by step ~700
  c.num_train_steps = 1000
  c.log_every_steps = 25
  c.eval_every_steps = 200
  c.eval_batches = 8
  c.checkpoint_every_steps = 200


VARIANTS = {'default': _default, 'tiny': _tiny, 'demo': _demo}


def get_config(arg: str | None = None):
  return common.select_variant(arg, VARIANTS, common.base_config('gan'))
