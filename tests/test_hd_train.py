"""HD training (192 and 288 px faces): every stage's train step at both sizes, and FSDP at 192.

What this file owns: that the `hd<size>_tiny` variants of configs/{expert,generator,gan}.py initialise and
take a finite, parameter-changing jitted step at tiny width (1/32) on batches of the pipeline's HD shapes,
and that `mesh.param_sharding='fsdp'` runs at 192 on the 8 fake CPU devices (tests/conftest.py) with the
single-device values. (remat's equality: tests/test_models_hd.py; the loop on the HD demo corpus, the
commands a user runs: tests/test_hd_e2e.py.)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from configs import expert as expert_config  # noqa: E402
from configs import gan as gan_config  # noqa: E402
from configs import generator as generator_config  # noqa: E402
from lipsync_jax.training import loop, sharding, stages  # noqa: E402

SIZES = (192, 288)
STAGE_NAMES = ('expert', 'generator', 'gan')
CONFIG_MODULES = {'expert': expert_config, 'generator': generator_config, 'gan': gan_config}
# XLA:CPU code generation at low optimisation: these steps run once, and compiling them dominates the
# file's time (measured: an HD expert step compiles in ~0.6x the time, same loss to 1e-6).
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
# At width 1/32 many layers have 1-2 channels, and a ReLU can silence one for the whole batch (its
# leaves then get no gradient): a step must move almost all leaves, not every one.
MIN_CHANGED_FRACTION = 0.9


def hd_tiny_config(stage_name: str, size: int, **overrides):
  """`configs/<stage>.py:hd<size>_tiny` (width 1/32, batch 8), with the sync term on from step 1 (so the
  frozen HD expert runs inside the generator steps) and a random frozen expert."""
  config = CONFIG_MODULES[stage_name].get_config(f'hd{size}_tiny')
  with config.unlocked():
    # 'direct' transposed convs: at tiny widths they compile about 2x faster than 'phase' on XLA:CPU
    # (tests/test_stages.py); the loop run below keeps the config's 'auto' (phase on CPU).
    config.model.transpose_impl = 'direct'
    if stage_name != 'expert':
      config.loss.syncnet_wt_initial = 0.03
      config.expert_checkpoint = loop.RANDOM_INIT_EXPERT
    if 'disc_start_step' in config.loss:  # gan: the discriminator steps from the first step
      config.loss.disc_start_step = 0
    for key, value in overrides.items():
      section, leaf = key.split('.')
      config[section][leaf] = value
  return config


def hd_batch(stage_name: str, batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random uint8 images / float mels of the shapes lipsync_jax.data.pipeline gives at face size `size`."""
  rng = np.random.default_rng(seed)
  mel = rng.uniform(-4, 4, (batch, 80, 16, 1)).astype(np.float32)
  if stage_name == 'expert':
    return {
      'faces': rng.integers(0, 256, (batch, size // 2, size, 15), dtype=np.uint8),
      'mel': mel,
      'label': (np.arange(batch) % 2).astype(np.float32)[:, None],
    }
  gt = rng.integers(0, 256, (batch, 5, size, size, 3), dtype=np.uint8)
  masked = gt.copy()
  masked[:, :, size // 2 :] = 0
  return {
    'inputs': np.concatenate([masked, rng.integers(0, 256, gt.shape, dtype=np.uint8)], axis=-1),
    'gt': gt,
    'indiv_mels': rng.uniform(-4, 4, (batch, 5, 80, 16, 1)).astype(np.float32),
    'mel': mel,
  }


@dataclasses.dataclass
class StepResult:
  """Host copies (NumPy) of what one step changed."""

  settings: stages.StageSettings
  step: int
  params: tuple[dict, dict]  # (before, after)
  disc_params: tuple[dict, dict] | None  # gan only
  metrics: dict[str, float]


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


@functools.cache
def one_step(stage_name: str, size: int, remat: bool = False) -> StepResult:
  """Init from the HD tiny variant and one jitted train step on one device (shared by several tests)."""
  config = hd_tiny_config(stage_name, size, **{'model.remat': remat})
  stage = stages.get_stage(stage_name)
  state = stage.init(config, jax.random.key(0))
  expert = loop.load_frozen_expert(config)[0] if stage.needs_expert else None
  params, disc_params = _host(state.params), _host(state.disc_params)
  batch = hd_batch(stage_name, int(config.data.global_batch_size), size)
  new_state, metrics = (
    jax.jit(stage.train_step).lower(state, batch, expert).compile(FAST_COMPILE)(state, batch, expert)
  )
  return StepResult(
    new_state.settings,
    int(new_state.step),
    (params, _host(new_state.params)),
    None if disc_params is None else (disc_params, _host(new_state.disc_params)),
    {k: float(v) for k, v in metrics.items()},
  )


def _changed_fraction(before, after) -> float:
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]
  return sum(changed) / len(changed)


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('stage_name', STAGE_NAMES)
def test_tiny_hd_train_step(stage_name, size):
  result = one_step(stage_name, size)
  assert result.step == 1 and result.settings.img_size == size
  assert all(np.isfinite(v) for v in result.metrics.values()), result.metrics
  assert result.metrics['grad_norm'] > 0, result.metrics
  assert _changed_fraction(*result.params) >= MIN_CHANGED_FRACTION
  if stage_name != 'expert':
    assert result.metrics['sync'] > 0, result.metrics  # the frozen HD expert ran inside the step
  if stage_name == 'gan':
    assert np.isfinite(result.metrics['disc_loss']) and result.metrics['disc_grad_norm'] > 0, result.metrics
    # The discriminator's first layers sit behind many 1-channel LeakyReLU convs at this width: their
    # gradients can fall below Adam's eps and their first update below float32 resolution.
    assert _changed_fraction(*result.disc_params) >= 0.5


def test_fsdp_at_192_on_fake_devices():
  """The generator step jitted as the loop does over a (data 4, fsdp 2) mesh with params sharded over 'fsdp':
  the single-device values, and the state keeps its FSDP layout."""
  assert jax.device_count() == 8, 'tests/conftest.py sets 8 fake CPU devices'
  config = hd_tiny_config('generator', 192, **{'mesh.fsdp': 2, 'mesh.param_sharding': 'fsdp'})
  stage = stages.get_stage('generator')
  mesh = sharding.make_mesh(config.mesh)
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 2}
  init = functools.partial(stage.init, config)
  state_shardings = sharding.state_shardings(jax.eval_shape(init, jax.random.key(0)), mesh, 'fsdp')
  state = jax.jit(init, out_shardings=state_shardings)(jax.random.key(0))
  sharded = [s for s in jax.tree.leaves(state_shardings.params) if 'fsdp' in s.spec]
  assert sharded, 'no param leaf is sharded over fsdp at width 1/32'
  replicated = sharding.replicated(mesh)
  step = jax.jit(
    stage.train_step,
    in_shardings=(state_shardings, sharding.batch_sharding(mesh), replicated),
    out_shardings=(state_shardings, replicated),
  )
  expert = sharding.put_replicated(loop.load_frozen_expert(config)[0], mesh)
  batch = sharding.shard_batch(hd_batch('generator', int(config.data.global_batch_size), 192), mesh)
  new_state, metrics = step.lower(state, batch, expert).compile(FAST_COMPILE)(state, batch, expert)
  single = one_step('generator', 192)
  for key in ('loss', 'l1', 'sync'):
    np.testing.assert_allclose(float(metrics[key]), single.metrics[key], rtol=1e-4, err_msg=key)
  # The gradient norm (dominated by the sync term through the random expert's batch statistics) sums in
  # another order over 8 devices: measured 4.4e-4 relative.
  np.testing.assert_allclose(float(metrics['grad_norm']), single.metrics['grad_norm'], rtol=2e-3)
  # (Params are not compared leaf by leaf: Adam's first step is ~lr * sign(g), which flips for gradients
  # near 0 whose reduction order differs across devices.)
  leaf_shardings = [x.sharding for x in jax.tree.leaves(new_state.params)]
  assert sum('fsdp' in s.spec for s in leaf_shardings) == len(sharded)
  assert _changed_fraction(_host(state.params), _host(new_state.params)) >= MIN_CHANGED_FRACTION
