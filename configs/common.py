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
  # Rematerialise (nn.remat) the encoder/decoder blocks: activations are recomputed in the backward pass
  # instead of stored (less accelerator memory at HD sizes, ~1/3 more compute). Same values either way.
  c.model.remat = False

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
  c.data.demo_frame_size = 0  # its rendered video side in px (0 = 160; HD variants render larger)

  # Optimisers (optax Adam). grad_clip 0 = off.
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.disc_lr = 1e-4
  c.optimizer.disc_b1 = 0.5
  c.optimizer.disc_b2 = 0.999
  c.optimizer.grad_clip = 0.0
  # Learning-rate schedule of the trained network (G in the gan stage; D keeps disc_lr): 'constant' (the
  # original) or 'cosine' (optax warm-up from 0 over warmup_steps, then cosine decay from lr to
  # lr * lr_end_factor at decay_steps; 0 = num_train_steps). The value lives in the optimizer state.
  c.optimizer.lr_schedule = 'constant'
  c.optimizer.warmup_steps = 0
  c.optimizer.decay_steps = 0
  c.optimizer.lr_end_factor = 0.0
  # generator / gan: the lr is multiplied by this when the sync trigger switches the sync weight on
  # (1.0 = unchanged, the original). A traced value in the optimizer state: nothing recompiles.
  c.optimizer.sync_lr_factor = 1.0

  # Losses and the sync-weight schedule (spec section 7).
  c.loss = ml_collections.ConfigDict()
  c.loss.syncnet_wt_initial = 0.0
  c.loss.syncnet_wt_target = 0.0
  c.loss.sync_trigger_threshold = 0.75  # eval sync loss below this switches the weight to the target
  c.loss.disc_wt = 0.0
  # gan: the discriminator (perceptual term and D's own step) is off before this step, G trains on
  # L1 (+ sync once triggered) as in the generator stage; 0 = on from the start (the original).
  c.loss.disc_start_step = 0
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
  # True: the train/eval steps run per device (shard_map) and every sum across devices is a fixed-order
  # butterfly (lipsync_jax.replicas): bit-identical runs on 1 process x 4 devices and 2 processes x 2 (same
  # device count, any process layout). Costs log2(devices) gradient-sized exchanges instead of one
  # all-reduce; needs param_sharding='replicated'. False: GSPMD all-reduces (float-equal up to the order).
  c.mesh.deterministic = False

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


HD_SIZES = (192, 288)


def hd(c: ml_collections.ConfigDict, img_size: int) -> None:
  """An HD face size (lipsync_jax.models: extra stride-2 stages keep the 1x1 bottleneck; docs/models.md).

  The demo corpus (used when data.shards_dir is '') is rendered at 4/3 of the crop size (256 px videos for
  192 px crops, 384 for 288) so that crops are not upscaled from the 160 px default renders.
  """
  if img_size not in HD_SIZES:
    raise ValueError(f'HD img_size must be one of {HD_SIZES}, got {img_size}')
  c.data.img_size = img_size
  c.data.demo_frame_size = img_size * 4 // 3


def with_hd_variants(variants: dict[str, Callable[[ml_collections.ConfigDict], None]]) -> dict:
  """Adds `hd192`, `hd288` (and `hd192_tiny`, `hd288_tiny`, `hd192_demo`, ...) for every base variant:
  `<base>` at that face size, `hd<size>` alone being the default variant at that size."""
  out = dict(variants)
  for size in HD_SIZES:
    for base, fn in variants.items():
      if base.startswith('hd'):  # a stage file's own HD variant: not scaled again
        continue
      name = f'hd{size}' if base == 'default' else f'hd{size}_{base}'
      if name in out:  # a stage file's own HD variant wins
        continue

      def variant(c, fn=fn, size=size):
        fn(c)
        hd(c, size)

      out[name] = variant
  return out
