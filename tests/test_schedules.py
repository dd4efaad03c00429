"""Tests of the run-time schedules in lipsync_jax.training.stages: the learning rate in the optimizer state
(constant or warm-up + cosine), its drop when the sync term enters, and the GAN's discriminator warm-up
switch. None of them may recompile the jitted step. Tiny widths, CPU."""

from __future__ import annotations

import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lipsync_jax.training import stages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from configs import common  # noqa: E402

IMG = 96


def make_config(stage: str, **optimizer) -> ml_collections.ConfigDict:
  c = common.base_config(stage)
  c.model.width_multiplier = 1 / 32
  c.model.transpose_impl = 'direct'  # compiles faster than 'phase' at tiny widths on XLA:CPU
  c.optimizer.update(dict(lr=1e-3, disc_lr=1e-3, **optimizer))
  c.loss.update(
    dict(syncnet_wt_initial=0.0, syncnet_wt_target=0.03, sync_trigger_threshold=0.75, disc_wt=0.07)
  )
  c.expert_checkpoint = 'random-init'
  return c


def generator_batch(batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  gt = rng.integers(0, 256, (batch, 5, IMG, IMG, 3), dtype=np.uint8)
  masked = gt.copy()
  masked[:, :, IMG // 2 :] = 0
  return {
    'inputs': np.concatenate([masked, gt[:, ::-1]], axis=-1),
    'gt': gt,
    'indiv_mels': rng.uniform(-4, 4, (batch, 5, 80, 16, 1)).astype(np.float32),
    'mel': rng.uniform(-4, 4, (batch, 80, 16, 1)).astype(np.float32),
  }


def max_change(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_defaults_keep_the_original_constant_lr_and_no_warm_up():
  for stage in common.STAGES:
    c = common.base_config(stage)
    settings = stages.StageSettings.from_config(c, stage)
    assert settings.lr_schedule == 'constant' and stages.lr_schedule(settings) == c.optimizer.lr
    assert c.optimizer.sync_lr_factor == 1.0 and settings.disc_start_step == 0


@pytest.mark.parametrize(
  'key,value,match',
  [('lr_schedule', 'linear', 'lr_schedule'), ('decay_steps', 5, 'decay_steps')],
)
def test_bad_schedule_settings_name_the_key(key, value, match):
  c = make_config('expert', lr_schedule='cosine', warmup_steps=10)
  c.optimizer[key] = value
  with pytest.raises(ValueError, match=match):
    stages.StageSettings.from_config(c, 'expert')


def test_cosine_lr_lives_in_the_optimizer_state_and_does_not_recompile():
  c = make_config('expert', lr_schedule='cosine', warmup_steps=2, decay_steps=6, lr_end_factor=0.1)
  settings = stages.StageSettings.from_config(c, 'expert')
  tx = stages.optimizer(settings)
  params = {'w': jnp.ones((3,))}
  opt_state = tx.init(params)

  @jax.jit
  def update(opt_state, grads):
    _, opt_state = tx.update(grads, opt_state, params)
    return opt_state, stages.current_lr(opt_state)

  expected = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 2, 6, 1e-4)
  seen = []
  for _ in range(8):
    opt_state, lr = update(opt_state, {'w': jnp.ones((3,))})
    seen.append(float(lr))
  np.testing.assert_allclose(seen, [float(expected(i)) for i in range(8)], rtol=1e-5, atol=1e-9)
  assert seen[0] == 0.0 and seen[2] == pytest.approx(1e-3) and seen[-1] == pytest.approx(1e-4)
  assert update._cache_size() == 1


def test_sync_trigger_drops_the_lr_once_without_recompiling():
  c = make_config('generator', sync_lr_factor=0.1)
  stage = stages.get_stage('generator')
  from lipsync_jax.training import loop

  expert, _ = loop.load_frozen_expert(c)
  state = stage.init(c, jax.random.key(0))
  step = jax.jit(stage.train_step)
  batch = generator_batch()

  new, metrics = step(state, batch, expert)
  # jit wrappers of the same function share one cache (other test files may have added entries): count
  # this test's compiles as the growth after its first call.
  compiled = step._cache_size()
  assert float(metrics['lr']) == pytest.approx(1e-3)
  # Adam's first update is lr * g / (|g| + eps): the largest parameter change is the lr itself.
  assert max_change(new.params, state.params) == pytest.approx(1e-3, rel=0.02)

  state, scalars = stage.schedule_update(state, {'sync': 0.9}, c)  # above the trigger: nothing changes
  assert scalars == {'sync_wt': 0.0} and float(stages.current_lr(state.opt_state)) == pytest.approx(1e-3)
  state, scalars = stage.schedule_update(state, {'sync': 0.7}, c)  # below: sync on, lr x 0.1
  assert scalars == {'sync_wt': pytest.approx(0.03)}
  assert float(stages.current_lr(state.opt_state)) == pytest.approx(1e-4)
  state, _ = stage.schedule_update(state, {'sync': 0.6}, c)  # already on: no second drop
  assert float(stages.current_lr(state.opt_state)) == pytest.approx(1e-4)

  new, metrics = step(state, batch, expert)
  assert float(metrics['lr']) == pytest.approx(1e-4) and float(metrics['sync']) > 0
  assert max_change(new.params, state.params) == pytest.approx(1e-4, rel=0.02)
  assert step._cache_size() == compiled


def test_gan_discriminator_switches_on_at_disc_start_step_without_recompiling():
  c = make_config('gan')
  c.loss.disc_start_step = 2
  stage = stages.get_stage('gan')
  from lipsync_jax.training import loop

  expert, _ = loop.load_frozen_expert(c)
  state = stage.init(c, jax.random.key(0))
  step = jax.jit(stage.train_step)
  batch = generator_batch()
  disc0, params0 = state.disc_params, state.params
  compiled = None
  for _ in range(2):  # state.step 0 and 1: D off, G on L1 only
    state, metrics = step(state, batch, expert)
    compiled = compiled or step._cache_size()  # see the test above
    assert float(metrics['disc_loss']) == 0.0 and float(metrics['perceptual']) == 0.0
  assert max_change(state.disc_params, disc0) == 0.0 and max_change(state.params, params0) > 0
  # While D is off the G loss is the generator stage's (w = 0: L1 alone).
  assert float(metrics['loss']) == pytest.approx(float(metrics['l1']), rel=1e-6)
  state, metrics = step(state, batch, expert)  # state.step 2: D on
  assert float(metrics['disc_loss']) > 0 and float(metrics['perceptual']) > 0
  assert max_change(state.disc_params, disc0) > 0
  assert int(state.step) == 3 and step._cache_size() == compiled


def test_gan_warm_up_program_trains_g_as_the_gan_step_and_leaves_d_untouched_without_computing_it():
  c = make_config('gan')
  c.loss.disc_start_step = 2
  stage = stages.get_stage('gan')
  assert stage.warmup_steps(c) == 2 and stages.get_stage('generator').warmup_steps(c) == 0
  from lipsync_jax.training import loop

  expert, _ = loop.load_frozen_expert(c)
  state = stage.init(c, jax.random.key(0))
  full, warm = jax.jit(stage.train_step), jax.jit(stage.warmup_train_step)
  batch = generator_batch()
  a = b = state
  compiled = None
  for _ in range(2):  # state.step 0 and 1: before disc_start_step
    a, full_metrics = full(a, batch, expert)
    b, warm_metrics = warm(b, batch, expert)
    compiled = compiled or (warm._cache_size(), full._cache_size())  # shared caches: count the growth
  assert sorted(warm_metrics) == sorted(full_metrics)  # the same metric keys: the loop mixes the two
  for key in ('disc_loss', 'disc_real', 'disc_fake', 'disc_grad_norm', 'perceptual'):
    assert float(warm_metrics[key]) == 0.0
  assert float(warm_metrics['loss']) == pytest.approx(float(full_metrics['loss']), rel=1e-5)
  assert max_change(b.params, a.params) < 1e-6 and max_change(b.params, state.params) > 0
  assert max_change(b.disc_params, state.disc_params) == 0.0
  assert max_change(b.disc_opt_state, state.disc_opt_state) == 0.0
  assert jax.tree.structure(b) == jax.tree.structure(a)  # same state tree: checkpoints cross the switch
  # The warm-up program does not compute the discriminator at all (the full step computes and discards it).
  flops = {
    name: fn.lower(state, batch, expert).compile().cost_analysis()['flops']
    for name, fn in (('full', full), ('warm', warm))
  }
  assert flops['warm'] < 0.8 * flops['full']
  assert (warm._cache_size(), full._cache_size()) == compiled


def _load_stage_config(name: str, variant: str):
  spec = importlib.util.spec_from_file_location(f'_cfg_{name}', os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_demo_schedules_differ_from_the_original_only_in_the_demo_variants():
  for name in ('expert', 'generator', 'gan'):
    default = _load_stage_config(name, 'default')
    assert default.optimizer.lr_schedule == 'constant' and default.optimizer.sync_lr_factor == 1.0
    assert default.loss.disc_start_step == 0
  expert = _load_stage_config('expert', 'demo')
  assert expert.optimizer.lr_schedule == 'cosine'
  for name in ('generator', 'gan'):
    demo = _load_stage_config(name, 'demo')
    assert demo.optimizer.sync_lr_factor < 1.0
  gan = _load_stage_config('gan', 'demo')
  assert 0 < gan.loss.disc_start_step < gan.num_train_steps  # the warm-up program, then D does train
