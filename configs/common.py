"""The one config schema all training stages share (expert, generator, gan).

Every key any stage, the train loop or the input pipeline reads is declared here, with its default, so a
typo in a stage file or on the command line (`--config.optimizer.lrr=1`) fails naming the key: the
returned ConfigDict is locked. Stage files (`configs/expert.py`, ...) call `base_config(stage)`, set the
original Wav2Lip hyper-parameters, and offer variants through `get_config(arg)`:

  python -m lipsync_jax.main --config=configs/gan.py:tiny --workdir=/tmp/w
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

STAGES = ('expert', 'generator', 'gan')


def base_config(stage: str) -> ml_collections.ConfigDict:
  """Returns the full, unlocked schema with neutral defaults for `stage`."""
  if stage not in STAGES:
    raise ValueError(f'Unknown stage {stage!r}; expected one of {STAGES}.')
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.seed = 0

  # Models (lipsync_jax.models): channel width fraction and compute precision (params stay float32).
  c.model = ml_collections.ConfigDict()
  c.model.width_multiplier = 1.0
  c.model.compute_dtype = 'float32'  # 'float32' | 'bfloat16'
  c.model.expert_width_multiplier = 0.0  # the frozen expert's width; 0 = inferred from its variables
  # How transposed convolutions are computed (Wav2Lip's decoder, and every strided conv's input gradient):
  # 'direct' (XLA's own; GPU/TPU), 'phase' (stride-1 convs + depth-to-space; much faster on XLA:CPU),
  # 'auto' = phase on CPU, direct elsewhere. Same values either way.
  c.model.transpose_impl = 'auto'

  # Data (lipsync_jax.data.pipeline). shards_dir '' = the built-in demo corpus, built into the cache dir
  # ($LIPSYNC_JAX_CACHE or ~/.cache/lipsync_jax) on first use.
  c.data = ml_collections.ConfigDict()
  c.data.shards_dir = ''
  c.data.train_split = 'train'
  c.data.eval_split = 'val'
  c.data.img_size = 96
  c.data.global_batch_size = 16
  c.data.worker_count = 0  # grain worker processes per host (0 = in the main process)
  c.data.demo_num_clips = 120  # size of the built-in demo corpus when shards_dir is ''

  # Optimisers (optax Adam). grad_clip 0 = off.
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.disc_lr = 1e-4
  c.optimizer.disc_b1 = 0.5
  c.optimizer.disc_b2 = 0.999
  c.optimizer.grad_clip = 0.0

  # Losses and the sync-weight schedule (spec section 7).
  c.loss = ml_collections.ConfigDict()
  c.loss.syncnet_wt_initial = 0.0
  c.loss.syncnet_wt_target = 0.0
  c.loss.sync_trigger_threshold = 0.75  # eval sync loss below this switches the weight to the target
  c.loss.disc_wt = 0.0
  c.loss.expert_bn = 'batch'  # 'batch' (the original: batch statistics) | 'running'

  # Device mesh (lipsync_jax.training.sharding). Sizes -1 = all remaining devices. Batches are split over
  # ('data', 'fsdp'); params are replicated, or sharded over 'fsdp' with param_sharding='fsdp'.
  # Multi-slice TPU (slices over DCN): dcn_data = the number of slices (-1 = all), data parallelism across
  # slices; data and fsdp then size the mesh inside one slice (fsdp never spans slices) and the 'data' axis
  # is dcn_data x data. dcn_data must match the slices the devices form (1 on one slice, CPU and GPU).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.dcn_data = 1
  c.mesh.param_sharding = 'replicated'  # 'replicated' | 'fsdp'

  # The frozen sync expert the generator stages need: a lipsync_jax variables dir
  # (lipsync_jax.weights.save_variables), an expert training workdir, or an official .pth.
  # 'random-init' = a freshly initialised expert (smoke tests only; the sync loss is then meaningless).
  c.expert_checkpoint = ''

  # Loop.
  c.num_train_steps = 100_000
  c.log_every_steps = 100
  c.eval_every_steps = 3000
  c.eval_batches = 300  # 0 = no evaluation (and no sync-weight trigger)
  c.sample_grid_rows = 4
  c.checkpoint_every_steps = 3000
  c.keep_checkpoints = 3
  c.async_checkpointing = True
  return c


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config: from here on unknown keys (also `--config.x=y`) raise, naming the key."""
  config.lock()
  return config


def select_variant(
  arg: str | None,
  variants: dict[str, Callable[[ml_collections.ConfigDict], None]],
  config: ml_collections.ConfigDict,
) -> ml_collections.ConfigDict:
  """Applies the variant named by `arg` (None / '' = 'default') in place and returns the locked config."""
  name = arg or 'default'
  if name not in variants:
    raise ValueError(
      f'Unknown config variant {name!r} for stage {config.stage!r}; '
      f'choose one of {sorted(variants)} (e.g. configs/{config.stage}.py:tiny).'
    )
  variants[name](config)
  return finalize(config)


def schedule(
  c: ml_collections.ConfigDict,
  *,
  steps: int,
  eval_every: int,
  eval_batches: int,
  checkpoint_every: int | None = None,
  log_every: int | None = None,
) -> None:
  """The loop's cadence in one call: train steps, eval every / how many batches, checkpoint and log every."""
  c.num_train_steps = steps
  c.eval_every_steps = eval_every
  c.eval_batches = eval_batches
  c.checkpoint_every_steps = eval_every if checkpoint_every is None else checkpoint_every
  if log_every is not None:
    c.log_every_steps = log_every


def demo_common(
  c: ml_collections.ConfigDict,
  *,
  batch: int,
  lr: float,
  steps: int,
  eval_every: int,
  eval_batches: int,
  log_every: int,
) -> None:
  """Shared settings of the `demo` variants: a 1/8-width model on the built-in demo corpus (CPU-sized)."""
  c.model.width_multiplier = 1 / 8
  c.data.global_batch_size = batch
  c.optimizer.lr = lr
  schedule(c, steps=steps, eval_every=eval_every, eval_batches=eval_batches, log_every=log_every)


def tiny_common(c: ml_collections.ConfigDict) -> None:
  """Shared settings of the `tiny` variants: a few steps of a 1/32-width model on a tiny demo corpus."""
  c.model.width_multiplier = 1 / 32
  c.data.global_batch_size = 8
  c.data.demo_num_clips = 12
  schedule(c, steps=6, eval_every=3, eval_batches=2, log_every=2)
  c.sample_grid_rows = 2
  c.keep_checkpoints = 2
