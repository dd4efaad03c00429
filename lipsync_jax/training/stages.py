"""The three training stages as pure functions: expert, generator (L1 + sync) and gan (+ quality disc).

Owns: `StageSettings` (the static settings a step reads, from the locked config), `TrainState`, the
per-stage `init` / `train_step` (+ an optional warm-up program) / `eval_step` / `sample_grid` functions,
the host-side `schedule_update` (run after each evaluation) and `scalars` (logged at log steps) of each
stage, and the `STAGES` registry (`get_stage(name)`). The train loop (lipsync_jax.training.loop) jits
these with shardings and never branches on a stage's name; nothing here knows about devices, meshes or
files.

Spec (WAV2LIP_REFERENCE.md sections 2-4, 6, 7):
- expert: BCE(cosine(audio_emb, face_emb), label) in train mode (batch statistics); eval in eval mode.
- generator: loss = w * sync + (1 - w) * L1. sync = BCE(expert(mel, lower halves of the 5 generated
  frames stacked on channels), 1). Gradients flow through the expert into the generator; the expert's
  variables are an argument of the step, wrapped in stop_gradient and never differentiated (we take the
  gradient with respect to the generator's params only). The expert's BatchNorm uses batch statistics
  (config.loss.expert_bn='batch', the original, the updates dropped) or its running statistics ('running').
  w = state.sync_wt is a traced float32 scalar: `sync_schedule` raises it from syncnet_wt_initial to
  syncnet_wt_target once an eval sync loss is below sync_trigger_threshold, without recompiling.
- gan: G loss = w * sync + disc_wt * perceptual + (1 - w - disc_wt) * L1, perceptual = BCE(D(G(x)), 1);
  then, in the same step, the discriminator: BCE(D(y), 1) + BCE(D(stop_gradient(G(x))), 0), own Adam.
  Before config.loss.disc_start_step the loop runs the gan stage's warm-up program instead
  (`gan_warmup_train_step`: G alone, D passed through; `Stage.warmup_train_step` / `warmup_steps`).

Batches (lipsync_jax.data.pipeline): images uint8 BGR, turned into float x/255 inside the step (float
images are taken as already scaled to [0, 1]). expert: faces (B, S/2, S, 15), mel (B, 80, 16, 1),
label (B, 1). generator/gan (time-major): inputs (B, 5, S, S, 6), gt (B, 5, S, S, 3),
indiv_mels (B, 5, 80, 16, 1), mel (B, 80, 16, 1).

Steps are written for the global batch (GSPMD makes their reductions global). Where a value leaves a
per-example computation (gradients, losses, metrics) it passes `replicas.pmean`: the identity under plain jit,
the fixed-order mean over devices when the loop runs the step per device (`config.mesh.deterministic`).

Precision: params and optimizer states float32; models compute in config.model.compute_dtype; every loss
is computed in float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax import lax

from lipsync_jax import replicas, weights, windows
from lipsync_jax.training import losses

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
LR_SCHEDULES = ('constant', 'cosine')
# config.loss.expert_bn -> the `train` flag of the frozen expert's forward pass.
EXPERT_BN_MODES = {'batch': True, 'running': False}
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StageSettings:
  """What a step needs from the config, as hashable static data (part of the TrainState's tree definition).

  Run-time values that change during training (the sync weight) are NOT here: they are traced arrays in
  the state, so changing them never recompiles.
  """

  stage: str
  img_size: int
  width_multiplier: float
  compute_dtype: str
  expert_width_multiplier: float | None  # None: the generator's width (or inferred from the variables)
  lr: float
  b1: float
  b2: float
  disc_lr: float
  disc_b1: float
  disc_b2: float
  grad_clip: float
  # The learning-rate schedule (config.optimizer.lr_schedule / warmup_steps / decay_steps / lr_end_factor);
  # the value itself lives in the optimizer state (optax.inject_hyperparams), see `_adam`.
  lr_schedule: str
  warmup_steps: int
  decay_steps: int
  lr_end_factor: float
  disc_wt: float
  disc_start_step: int  # gan: the discriminator (its loss term and its own step) is off before this step
  expert_bn: str
  # Transposed convs (Wav2Lip's decoder, and every strided conv's input gradient): 'direct'|'phase'|'auto'
  transpose_impl: str
  remat: bool = False  # nn.remat on the networks' blocks (config.model.remat)

  @classmethod
  def from_config(cls, config, stage: str) -> StageSettings:
    """Reads the locked config (configs/common.py is the schema and holds every default) and checks it."""
    model, opt, loss = config.model, config.optimizer, config.loss
    compute_dtype = str(model.compute_dtype)
    if compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(
        f'config.model.compute_dtype={compute_dtype!r} is not supported; use one of {sorted(COMPUTE_DTYPES)}.'
      )
    expert_bn = str(loss.expert_bn)
    if expert_bn not in EXPERT_BN_MODES:
      raise ValueError(
        f'config.loss.expert_bn={expert_bn!r} is not supported; use one of {sorted(EXPERT_BN_MODES)}.'
      )
    img_size = int(config.data.img_size)
    if img_size % 2:
      raise ValueError(f'config.data.img_size={img_size} must be even (the expert sees the lower half).')
    expert_width = float(model.expert_width_multiplier)
    lr_schedule = str(opt.lr_schedule)
    if lr_schedule not in LR_SCHEDULES:
      raise ValueError(
        f'config.optimizer.lr_schedule={lr_schedule!r} is not supported; use one of {LR_SCHEDULES}.'
      )
    decay_steps = int(opt.decay_steps) or int(config.num_train_steps)
    if lr_schedule == 'cosine' and decay_steps <= int(opt.warmup_steps):
      raise ValueError(
        f'config.optimizer.decay_steps={decay_steps} (0 = num_train_steps) must exceed '
        f'config.optimizer.warmup_steps={int(opt.warmup_steps)} for the cosine schedule.'
      )
    return cls(
      stage=stage,
      img_size=img_size,
      width_multiplier=float(model.width_multiplier),
      compute_dtype=compute_dtype,
      expert_width_multiplier=expert_width or None,
      lr=float(opt.lr),
      b1=float(opt.b1),
      b2=float(opt.b2),
      disc_lr=float(opt.disc_lr),
      disc_b1=float(opt.disc_b1),
      disc_b2=float(opt.disc_b2),
      grad_clip=float(opt.grad_clip),
      lr_schedule=lr_schedule,
      warmup_steps=int(opt.warmup_steps),
      decay_steps=decay_steps,
      lr_end_factor=float(opt.lr_end_factor),
      disc_wt=float(loss.disc_wt),
      disc_start_step=int(loss.disc_start_step),
      expert_bn=expert_bn,
      transpose_impl=str(model.transpose_impl),
      remat=bool(model.remat),
    )

  @property
  def dtype(self):
    return COMPUTE_DTYPES[self.compute_dtype]


class TrainState(struct.PyTreeNode):
  """Everything a stage's train step reads and writes. `settings` is static (tree definition)."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  sync_wt: jax.Array  # float32 scalar, traced: the sync-loss weight w
  rng: jax.Array
  disc_params: Any = None
  disc_opt_state: Any = None
  settings: StageSettings | None = struct.field(pytree_node=False, default=None)

  @property
  def variables(self) -> dict[str, Any]:
    """The trained model's flax variables ({'params', 'batch_stats'})."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


# ------------------------------------------------------------------------------------------------------
# Models and optimisers (built from the static settings; cheap Python objects, rebuilt at trace time)
# ------------------------------------------------------------------------------------------------------


def _models():
  from lipsync_jax import models  # imported late: the models package is heavy and optional for configs

  return models


def generator_model(settings: StageSettings) -> nn.Module:
  return _models().Wav2Lip(
    width_multiplier=settings.width_multiplier,
    compute_dtype=settings.dtype,
    transpose_impl=settings.transpose_impl,
    remat=settings.remat,
  )


def expert_model(settings: StageSettings, width: float | None = None) -> nn.Module:
  width = settings.width_multiplier if width is None else width
  return _models().SyncNet(
    width_multiplier=width,
    compute_dtype=settings.dtype,
    transpose_impl=settings.transpose_impl,
    remat=settings.remat,
  )


def disc_model(settings: StageSettings) -> nn.Module:
  return _models().QualityDisc(
    width_multiplier=settings.width_multiplier,
    compute_dtype=settings.dtype,
    transpose_impl=settings.transpose_impl,
    remat=settings.remat,
  )


def lr_schedule(settings: StageSettings) -> optax.Schedule | float:
  """The trained network's learning rate: a constant (the original) or optax's warm-up + cosine decay
  from settings.lr to lr * lr_end_factor over decay_steps (a function of the optimizer's step count)."""
  if settings.lr_schedule == 'constant':
    return settings.lr
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0 if settings.warmup_steps else settings.lr,
    peak_value=settings.lr,
    warmup_steps=settings.warmup_steps,
    decay_steps=settings.decay_steps,
    end_value=settings.lr * settings.lr_end_factor,
  )


def _adam(lr: optax.Schedule | float, b1: float, b2: float, grad_clip: float) -> optax.GradientTransformation:
  """Adam (after global-norm clipping when grad_clip > 0) at lr x lr_scale, both in the optimizer state.

  optax.inject_hyperparams keeps the current learning rate (a schedule's value at the step count) and
  `lr_scale` (1.0; set by `sync_schedule` when the sync term enters) as traced arrays in the state:
  changing them never recompiles the step. The state tree is InjectStatefulHyperparamsState (checkpoints
  written before these schedules held plain Adam state and do not restore into it).
  """

  def scaled_adam(learning_rate, lr_scale):
    adam = optax.adam(learning_rate * lr_scale, b1=b1, b2=b2)
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam) if grad_clip > 0 else adam

  return optax.inject_hyperparams(scaled_adam)(learning_rate=lr, lr_scale=1.0)


def optimizer(settings: StageSettings) -> optax.GradientTransformation:
  return _adam(lr_schedule(settings), settings.b1, settings.b2, settings.grad_clip)


def disc_optimizer(settings: StageSettings) -> optax.GradientTransformation:
  return _adam(settings.disc_lr, settings.disc_b1, settings.disc_b2, settings.grad_clip)


def current_lr(opt_state) -> jax.Array:
  """The learning rate the last update used (`_adam`'s state): learning_rate x lr_scale, float32."""
  hp = opt_state.hyperparams
  return _f32(hp['learning_rate']) * _f32(hp['lr_scale'])


# ------------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------------


def to_float_image(images: jax.Array) -> jax.Array:
  """uint8 0..255 -> float32 x/255; float images are taken as already in [0, 1]."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _f32(x) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def _shape_signature(tree) -> tuple:
  """((key path, shape), ...) of a variables tree: compares dicts and FrozenDicts, arrays and shapes."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return tuple(sorted((jax.tree_util.keystr(path), tuple(np.shape(leaf))) for path, leaf in leaves))


def _expert_width(settings: StageSettings, expert_variables) -> float:
  """The frozen expert's width: config.model.expert_width_multiplier if set, else read off its variables
  (lipsync_jax.weights.infer_width), checked against the whole variables tree at settings.img_size."""
  width = settings.expert_width_multiplier
  if width is None:
    try:
      width = weights.infer_width('syncnet', expert_variables)
    except weights.CheckpointError as err:
      raise ValueError(f'The frozen expert variables are not a SyncNet: {err}') from err
  shapes = jax.eval_shape(
    expert_model(settings, width).init, jax.random.key(0), *dummy_expert_inputs(settings)
  )
  if _shape_signature(shapes) != _shape_signature(expert_variables):
    raise ValueError(
      f'The frozen expert variables do not match a SyncNet of width x{width:g} at img_size '
      f'{settings.img_size}; check config.data.img_size and config.model.expert_width_multiplier.'
    )
  return width


_EXPERT_WIDTH_CACHE: dict[tuple[StageSettings, tuple], float] = {}


def _expert_for(settings: StageSettings, expert_variables) -> nn.Module:
  """The SyncNet module matching the frozen expert's variables (width looked up once per shape set)."""
  key = (settings, _shape_signature(expert_variables))
  if key not in _EXPERT_WIDTH_CACHE:
    _EXPERT_WIDTH_CACHE[key] = _expert_width(settings, expert_variables)
  return expert_model(settings, _EXPERT_WIDTH_CACHE[key])


def sync_loss(settings: StageSettings, expert_variables, mel: jax.Array, generated: jax.Array) -> jax.Array:
  """BCE(expert(mel, lower halves of the T generated frames stacked on channels), 1).

  generated: (B, T, S, S, 3) in [0, 1]; mel (B, 80, 16, 1). The expert's variables are frozen
  (stop_gradient); gradients flow through the expert's computation into `generated`.
  """
  if expert_variables is None:
    raise ValueError(
      f'Stage {settings.stage!r} needs the frozen expert\'s variables; got None '
      '(set config.expert_checkpoint).'
    )
  expert = _expert_for(settings, expert_variables)
  frozen = jax.lax.stop_gradient(expert_variables)
  faces = windows.stack_on_channels(windows.lower_half(generated))
  # 'batch': batch statistics (the original's train-mode expert); batch_stats is not mutable here, so the
  # running-statistics update is not even computed. 'running': the expert's stored statistics.
  audio_emb, face_emb = expert.apply(frozen, mel, faces, train=EXPERT_BN_MODES[settings.expert_bn])
  return losses.cosine_bce(audio_emb, face_emb, 1.0)


def random_expert_variables(config) -> dict[str, Any]:
  """A freshly initialised frozen expert (config.expert_checkpoint='random-init', smoke tests only) at
  config.model.expert_width_multiplier (0: the generator's width), seed config.seed + 1, as NumPy arrays."""
  settings = StageSettings.from_config(config, config.stage)
  model = expert_model(settings, settings.expert_width_multiplier or settings.width_multiplier)
  variables = model.init(jax.random.key(config.seed + 1), *dummy_expert_inputs(settings), train=False)
  return jax.device_get(variables)  # eager init: nothing compiled


def _disc_logits(settings: StageSettings, disc_params, faces: jax.Array) -> jax.Array:
  """Quality-discriminator logits of (N, S, S, 3) faces, float32."""
  logits = disc_model(settings).apply({'params': disc_params}, faces, train=False, return_logits=True)
  return logits.astype(jnp.float32)


def _fold_time(x: jax.Array) -> jax.Array:
  return x.reshape((-1,) + x.shape[2:])


def _check_batch(batch, keys: tuple[str, ...], stage: str) -> None:
  missing = [k for k in keys if k not in batch]
  if missing:
    raise KeyError(
      f'Stage {stage!r} batch is missing {missing}; it has {sorted(batch)} '
      f'(make the input pipeline in the stage\'s data_mode).'
    )


def _apply_gradients(state: TrainState, grads, batch_stats) -> TrainState:
  """One optimizer step of the trained network: Adam on `grads`, the new BatchNorm statistics, step + 1."""
  updates, opt_state = optimizer(state.settings).update(grads, state.opt_state, state.params)
  return state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=batch_stats,
    opt_state=opt_state,
  )


def _new_state(settings: StageSettings, variables, rng, sync_wt: float, disc_params=None) -> TrainState:
  params = variables['params']
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get('batch_stats', {}),
    opt_state=optimizer(settings).init(params),
    sync_wt=_f32(sync_wt),
    rng=rng,
    disc_params=disc_params,
    disc_opt_state=None if disc_params is None else disc_optimizer(settings).init(disc_params),
    settings=settings,
  )


def dummy_expert_inputs(settings: StageSettings):
  s = settings.img_size
  return (
    jnp.zeros((1, windows.NUM_MELS, windows.MEL_STEPS, 1), jnp.float32),
    jnp.zeros((1, s // 2, s, 3 * windows.SYNC_T), jnp.float32),
  )


def _dummy_generator_inputs(settings: StageSettings):
  s = settings.img_size
  return (
    jnp.zeros((1, windows.NUM_MELS, windows.MEL_STEPS, 1), jnp.float32),
    jnp.zeros((1, s, s, 6), jnp.float32),
  )


def _bgr_to_rgb(images: jax.Array) -> jax.Array:
  return images[..., ::-1]


# ------------------------------------------------------------------------------------------------------
# Expert stage
# ------------------------------------------------------------------------------------------------------


def expert_init(config, rng: jax.Array) -> TrainState:
  settings = StageSettings.from_config(config, 'expert')
  init_rng, state_rng = jax.random.split(rng)
  variables = expert_model(settings).init(init_rng, *dummy_expert_inputs(settings), train=False)
  return _new_state(settings, variables, state_rng, sync_wt=0.0)


def _expert_inputs(batch):
  _check_batch(batch, ('faces', 'mel', 'label'), 'expert')
  return _f32(batch['mel']), to_float_image(batch['faces']), _f32(batch['label'])


def expert_train_step(state: TrainState, batch, expert_variables=None) -> tuple[TrainState, Metrics]:
  del expert_variables  # the expert stage trains the expert itself
  settings = state.settings
  model = expert_model(settings)
  mel, faces, label = _expert_inputs(batch)

  def loss_fn(params):
    (audio_emb, face_emb), updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats}, mel, faces, train=True, mutable=['batch_stats']
    )
    loss = losses.cosine_bce(audio_emb, face_emb, label)
    cos = losses.cosine_similarity(audio_emb, face_emb)
    return loss, (updates['batch_stats'], losses.sync_accuracy(cos, label))

  (loss, (batch_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads, loss, acc = replicas.pmean((grads, loss, acc))  # identity under plain jit (see lipsync_jax.replicas)
  new_state = _apply_gradients(state, grads, batch_stats)
  metrics = {'loss': loss, 'acc': acc, 'grad_norm': optax.tree.norm(grads)}
  return new_state, {**metrics, 'lr': current_lr(new_state.opt_state)}


def expert_eval_step(state: TrainState, batch, expert_variables=None) -> Metrics:
  del expert_variables
  mel, faces, label = _expert_inputs(batch)
  audio_emb, face_emb = expert_model(state.settings).apply(state.variables, mel, faces, train=False)
  cos = losses.cosine_similarity(audio_emb, face_emb)
  metrics = {'loss': losses.cosine_bce(audio_emb, face_emb, label), 'acc': losses.sync_accuracy(cos, label)}
  return replicas.pmean(metrics)


def expert_sample_grid(state: TrainState, batch, expert_variables=None) -> jax.Array:
  """(B, S/2, 5*S, 3) RGB strip of the 5 lower-half frames the expert sees."""
  del state, expert_variables
  faces = to_float_image(jnp.asarray(batch['faces']))  # (B, S/2, S, 15)
  b, h, w, c = faces.shape
  frames = faces.reshape(b, h, w, c // 3, 3).transpose(0, 1, 3, 2, 4).reshape(b, h, (c // 3) * w, 3)
  return _bgr_to_rgb(frames)


# ------------------------------------------------------------------------------------------------------
# Generator and GAN stages
# ------------------------------------------------------------------------------------------------------


def _generator_inputs(batch, stage: str):
  _check_batch(batch, ('inputs', 'gt', 'indiv_mels', 'mel'), stage)
  return (
    to_float_image(batch['inputs']),
    to_float_image(batch['gt']),
    _f32(batch['indiv_mels']),
    _f32(batch['mel']),
  )


def _generate(settings: StageSettings, variables, batch, stage: str, train: bool):
  """Runs G on the (B, 5, ...) window; returns (generated (B, 5, S, S, 3) float32, new batch_stats)."""
  inputs, gt, indiv_mels, mel = _generator_inputs(batch, stage)
  model = generator_model(settings)
  if train:
    generated, updates = model.apply(variables, indiv_mels, inputs, train=True, mutable=['batch_stats'])
    new_stats = updates['batch_stats']
  else:
    generated, new_stats = model.apply(variables, indiv_mels, inputs, train=False), None
  return generated.astype(jnp.float32), new_stats, gt, mel


def generator_losses(
  settings: StageSettings,
  params,
  batch_stats,
  batch,
  expert_variables,
  sync_wt,
  disc_params=None,
  train: bool = True,
  disc_on=1.0,
):
  """Weighted generator loss and its parts (also the function the tests differentiate).

  disc_on (traced 0/1, gan only) scales the perceptual weight: 0 before config.loss.disc_start_step.
  Returns (loss, (parts dict, new batch_stats, generated (B, 5, S, S, 3))).
  """
  stage = settings.stage
  generated, new_stats, gt, mel = _generate(
    settings, {'params': params, 'batch_stats': batch_stats}, batch, stage, train
  )
  w = _f32(sync_wt)
  if train:
    # As the original: while w == 0 the expert is not run at all (lax.cond executes one branch; w is
    # traced, so switching it on does not recompile). The train 'sync' metric reads 0 until then; the
    # eval step (train=False) always computes it, since it drives the trigger.
    # Per device (replicas.count() > 1) the expert's BatchNorm exchanges statistics between devices, and
    # XLA:CPU mismatches collectives inside conditional branches across devices (measured: rendezvous
    # check failures / a hang): there it is always computed (the expert's cost while w == 0) and reads 0.
    if replicas.count() > 1:
      sync = jnp.where(w > 0, sync_loss(settings, expert_variables, mel, generated), 0.0)
    else:
      sync = lax.cond(
        w > 0,
        lambda: sync_loss(settings, expert_variables, mel, generated),
        lambda: jnp.zeros((), jnp.float32),
      )
  else:
    sync = sync_loss(settings, expert_variables, mel, generated)
  parts = {'l1': losses.l1(generated, gt), 'sync': sync}
  if disc_params is not None:
    disc_wt = _f32(settings.disc_wt) * _f32(disc_on)
    fake_logits = _disc_logits(settings, jax.lax.stop_gradient(disc_params), _fold_time(generated))
    parts['perceptual'] = losses.bce_with_logits(fake_logits, 1.0)
    loss = w * parts['sync'] + disc_wt * parts['perceptual'] + (1.0 - w - disc_wt) * parts['l1']
  else:
    loss = w * parts['sync'] + (1.0 - w) * parts['l1']
  return loss, (parts, new_stats, generated)


def _generator_update(state: TrainState, batch, expert_variables, with_disc: bool, disc_on=1.0):
  settings = state.settings
  grad_fn = jax.value_and_grad(generator_losses, argnums=1, has_aux=True)
  (loss, (parts, batch_stats, generated)), grads = grad_fn(
    settings,
    state.params,
    state.batch_stats,
    batch,
    expert_variables,
    state.sync_wt,
    state.disc_params if with_disc else None,
    True,
    disc_on,
  )
  grads, loss, parts = replicas.pmean((grads, loss, parts))
  new_state = _apply_gradients(state, grads, batch_stats)
  metrics = {'loss': loss, **parts, 'grad_norm': optax.tree.norm(grads), 'sync_wt': state.sync_wt}
  metrics['lr'] = current_lr(new_state.opt_state)
  return new_state, metrics, generated


def generator_train_step(state: TrainState, batch, expert_variables) -> tuple[TrainState, Metrics]:
  new_state, metrics, _ = _generator_update(state, batch, expert_variables, with_disc=False)
  return new_state, metrics


def _disc_losses(settings: StageSettings, disc_params, real: jax.Array, fake: jax.Array):
  real_logits = _disc_logits(settings, disc_params, _fold_time(real))
  fake_logits = _disc_logits(settings, disc_params, _fold_time(jax.lax.stop_gradient(fake)))
  disc_real = losses.bce_with_logits(real_logits, 1.0)
  disc_fake = losses.bce_with_logits(fake_logits, 0.0)
  return disc_real + disc_fake, {'disc_real': disc_real, 'disc_fake': disc_fake}


def gan_train_step(state: TrainState, batch, expert_variables) -> tuple[TrainState, Metrics]:
  """G step (L1 + sync + perceptual), then the D step on real vs the same (detached) generated frames.

  Before step settings.disc_start_step (config.loss.disc_start_step; 0 = from the start, the original) the
  discriminator is off: its perceptual weight is 0 (G trains on w * sync + (1 - w) * L1, as the generator
  stage does), D's params and Adam state keep their values, and the D metrics read 0. The switch is a
  traced 0/1 from the traced step, so it does not recompile. (The D step is computed and discarded while
  off: a lax.cond over the two whole steps ran ~4x slower on XLA:CPU than the full GAN step.)
  """
  settings = state.settings
  if settings.disc_start_step <= 0:
    return _gan_step(state, batch, expert_variables, None)
  on = state.step >= settings.disc_start_step
  return _gan_step(state, batch, expert_variables, on)


def gan_warmup_train_step(state: TrainState, batch, expert_variables) -> tuple[TrainState, Metrics]:
  """The GAN stage's program while the discriminator is off (state.step < config.loss.disc_start_step).

  G trains on w * sync + (1 - w) * L1 (the loss gan_train_step computes there: its perceptual weight is 0),
  the discriminator is neither run nor differentiated, its params and Adam state pass through unchanged,
  and the D metrics read 0. Same state tree and metric keys as gan_train_step, so the loop switches from
  this program to that one at disc_start_step (`gan_warmup_steps`) and checkpoints resume across the
  switch. Why a second program: computing-and-discarding D (gan_train_step's traced switch) costs a full
  GAN step, and a lax.cond over the two whole steps ran ~4x slower than that on XLA:CPU.
  """
  state, metrics, _ = _generator_update(state, batch, expert_variables, with_disc=False)
  zero = jnp.zeros((), jnp.float32)
  metrics.update({k: zero for k in ('perceptual', 'disc_real', 'disc_fake', 'disc_loss', 'disc_grad_norm')})
  return state, metrics


def gan_warmup_steps(config) -> int:
  """How many first steps run gan_warmup_train_step: config.loss.disc_start_step (0 = none)."""
  return max(int(config.loss.disc_start_step), 0)


def no_warmup_steps(config) -> int:
  """Stages without a warm-up program run train_step from the first step."""
  del config
  return 0


def _gan_step(state: TrainState, batch, expert_variables, on) -> tuple[TrainState, Metrics]:
  """One GAN step; `on` None (always on) or a traced bool: whether D and its perceptual term count."""
  settings = state.settings
  disc_on = 1.0 if on is None else on.astype(jnp.float32)
  state, metrics, generated = _generator_update(state, batch, expert_variables, True, disc_on)
  real = to_float_image(batch['gt'])
  (disc_loss, disc_parts), disc_grads = jax.value_and_grad(_disc_losses, argnums=1, has_aux=True)(
    settings, state.disc_params, real, generated
  )
  disc_grads, disc_loss, disc_parts = replicas.pmean((disc_grads, disc_loss, disc_parts))
  updates, disc_opt_state = disc_optimizer(settings).update(
    disc_grads, state.disc_opt_state, state.disc_params
  )
  disc_params = optax.apply_updates(state.disc_params, updates)
  metrics.update(disc_parts, disc_loss=disc_loss, disc_grad_norm=optax.tree.norm(disc_grads))
  if on is not None:
    keep = lambda new, old: jnp.where(on, new, old)  # noqa: E731
    disc_params = jax.tree.map(keep, disc_params, state.disc_params)
    disc_opt_state = jax.tree.map(keep, disc_opt_state, state.disc_opt_state)
    for key in ('perceptual', 'disc_real', 'disc_fake', 'disc_loss', 'disc_grad_norm'):
      metrics[key] = metrics[key] * disc_on
  state = state.replace(disc_params=disc_params, disc_opt_state=disc_opt_state)
  return state, metrics


def generator_eval_step(state: TrainState, batch, expert_variables) -> Metrics:
  with_disc = state.disc_params is not None
  loss, (parts, _, generated) = generator_losses(
    state.settings,
    state.params,
    state.batch_stats,
    batch,
    expert_variables,
    state.sync_wt,
    state.disc_params if with_disc else None,
    train=False,
  )
  metrics = {'loss': loss, **parts}
  if with_disc:
    _, disc_parts = _disc_losses(state.settings, state.disc_params, to_float_image(batch['gt']), generated)
    metrics.update(disc_parts)
  return replicas.pmean(metrics)


def generator_sample_grid(state: TrainState, batch, expert_variables=None) -> jax.Array:
  """(B, S, 4*S, 3) RGB in [0, 1]: reference | masked input | generated | ground truth (middle frame)."""
  del expert_variables
  generated, _, gt, _ = _generate(state.settings, state.variables, batch, state.settings.stage, False)
  inputs = to_float_image(jnp.asarray(batch['inputs']))
  mid = inputs.shape[1] // 2
  row = jnp.concatenate(
    [inputs[:, mid, ..., 3:6], inputs[:, mid, ..., 0:3], generated[:, mid], gt[:, mid]], axis=2
  )
  return jnp.clip(_bgr_to_rgb(row), 0.0, 1.0)


def generator_init(config, rng: jax.Array) -> TrainState:
  settings = StageSettings.from_config(config, 'generator')
  init_rng, state_rng = jax.random.split(rng)
  variables = generator_model(settings).init(init_rng, *_dummy_generator_inputs(settings), train=False)
  return _new_state(settings, variables, state_rng, sync_wt=float(config.loss.syncnet_wt_initial))


def gan_init(config, rng: jax.Array) -> TrainState:
  settings = StageSettings.from_config(config, 'gan')
  g_rng, d_rng, state_rng = jax.random.split(rng, 3)
  variables = generator_model(settings).init(g_rng, *_dummy_generator_inputs(settings), train=False)
  s = settings.img_size
  disc_vars = disc_model(settings).init(d_rng, jnp.zeros((1, s, s, 3), jnp.float32), train=False)
  return _new_state(
    settings,
    variables,
    state_rng,
    sync_wt=float(config.loss.syncnet_wt_initial),
    disc_params=disc_vars['params'],
  )


# ------------------------------------------------------------------------------------------------------
# Host side: the schedule step after each evaluation, and the scalars each stage reports
# ------------------------------------------------------------------------------------------------------


def sync_schedule(state: TrainState, eval_metrics, config) -> tuple[TrainState, dict[str, float]]:
  """Sync-weight trigger: once the eval sync loss is below the threshold, w becomes the target (and stays).

  Returns (state, {'sync_wt': w from now on}). Only the traced `sync_wt` value changes (same shape, dtype
  and sharding), so nothing recompiles.
  """
  current = float(np.asarray(jax.device_get(state.sync_wt)))
  if 'sync' not in eval_metrics:
    return state, {'sync_wt': current}
  target = float(np.float32(config.loss.syncnet_wt_target))  # as stored: 0.03 != float32(0.03) in Python
  eval_sync = float(np.asarray(eval_metrics['sync']))
  if eval_sync < float(config.loss.sync_trigger_threshold) and current != target:
    # An op on the old value keeps its sharding and its committed-ness (jit's cache key includes both;
    # a fresh device_put would be committed and cost one recompile when the state was not).
    state = state.replace(sync_wt=jnp.zeros_like(state.sync_wt) + np.float32(target))
    factor = float(config.optimizer.sync_lr_factor)
    if factor != 1.0:  # the lr drops with the sync term: lr_scale in the optimizer state, traced
      hp = dict(state.opt_state.hyperparams)
      hp['lr_scale'] = hp['lr_scale'] * float(
        factor
      )  # a Python float keeps the aval (weak type too): no recompile
      state = state.replace(opt_state=state.opt_state._replace(hyperparams=hp))
    return state, {'sync_wt': target}
  return state, {'sync_wt': current}


def no_schedule(state: TrainState, eval_metrics, config) -> tuple[TrainState, dict[str, float]]:
  """The expert stage has no schedule: the state as it is, nothing to report."""
  del eval_metrics, config
  return state, {}


def lr_scalars(config) -> dict[str, float]:
  """The configured learning rate as a constant scalar (for stages whose step does not report its lr)."""
  return {'lr': float(config.optimizer.lr)}


def no_scalars(config) -> dict[str, float]:
  """Nothing constant to add: the trained network's learning rate (schedule x lr_scale, read off the
  optimizer state) is a metric of every step (train/lr), as the generator stages' sync weight is."""
  del config
  return {}


def gan_scalars(config) -> dict[str, float]:
  """The discriminator's (constant) learning rate, written next to the train metrics at log steps."""
  return {'disc_lr': float(config.optimizer.disc_lr)}


# ------------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage: pure functions the train loop jits, and its host-side hooks.

  scalars(config) -> {name: float}: constant scalars the loop writes as train/<name> at log steps.
  schedule_update(state, eval_means, config) -> (state, {name: float}): the step after each evaluation
  (e.g. the sync-weight trigger); the returned scalars are logged with the eval metrics.
  """

  name: str
  data_mode: str  # lipsync_jax.data.pipeline mode: 'expert' | 'generator'
  needs_expert: bool
  init: Callable[[Any, jax.Array], TrainState]
  train_step: Callable[[TrainState, Any, Any], tuple[TrainState, Metrics]]
  eval_step: Callable[[TrainState, Any, Any], Metrics]
  sample_grid: Callable[[TrainState, Any, Any], jax.Array]
  scalars: Callable[[Any], dict[str, float]]
  schedule_update: Callable[[TrainState, Any, Any], tuple[TrainState, dict[str, float]]]
  # Optional cheaper program for the first warmup_steps(config) steps (gan: G alone while D is off), same
  # state tree and metric keys as train_step; the loop picks one per step on the host, each compiles once.
  warmup_train_step: Callable[[TrainState, Any, Any], tuple[TrainState, Metrics]] | None = None
  warmup_steps: Callable[[Any], int] = no_warmup_steps


STAGES: dict[str, Stage] = {
  'expert': Stage(
    'expert',
    'expert',
    False,
    expert_init,
    expert_train_step,
    expert_eval_step,
    expert_sample_grid,
    no_scalars,
    no_schedule,
  ),
  'generator': Stage(
    'generator',
    'generator',
    True,
    generator_init,
    generator_train_step,
    generator_eval_step,
    generator_sample_grid,
    no_scalars,
    sync_schedule,
  ),
  'gan': Stage(
    'gan',
    'generator',
    True,
    gan_init,
    gan_train_step,
    generator_eval_step,
    generator_sample_grid,
    gan_scalars,
    sync_schedule,
    gan_warmup_train_step,
    gan_warmup_steps,
  ),
}


def get_stage(name: str) -> Stage:
  if name not in STAGES:
    raise ValueError(f'Unknown training stage {name!r}; choose one of {sorted(STAGES)} (config.stage).')
  return STAGES[name]
