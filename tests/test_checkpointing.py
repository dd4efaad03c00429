"""Tests of lipsync_jax.training.checkpointing: items, reading one network, corrupt-latest fallback, mismatches."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from test_train import FakeStage, losses, run_fake  # the stand-in stage and data (tests/test_train.py)

from lipsync_jax.training import checkpointing


class KeyState(struct.PyTreeNode):
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: tuple
  rng: jax.Array
  disc_params: dict | None = None
  disc_opt_state: tuple | None = None
  settings: str = struct.field(pytree_node=False, default='static')


def test_split_and_merge_round_trip_with_typed_keys_and_disc():
  state = KeyState(
    step=jnp.int32(3),
    params={'w': jnp.ones((2, 3))},
    batch_stats={'m': jnp.zeros(3)},
    opt_state=(jnp.ones(2),),
    rng=jax.random.key(7),
    disc_params={'d': jnp.arange(4.0)},
    disc_opt_state=(jnp.zeros(1),),
  )
  items = checkpointing.split_state(state)
  assert set(items) == {'model', 'disc', 'train'}
  assert set(items['model']) == {'params', 'batch_stats'} and set(items['disc']) == {'params'}
  assert items['train']['rng'].dtype == jnp.uint32  # stored as key data
  merged = checkpointing.merge_state(state, items)
  assert merged.settings == 'static'
  np.testing.assert_array_equal(jax.random.key_data(merged.rng), jax.random.key_data(state.rng))
  np.testing.assert_array_equal(merged.disc_params['d'], state.disc_params['d'])
  no_disc = state.replace(disc_params=None, disc_opt_state=None)
  assert set(checkpointing.split_state(no_disc)) == {'model', 'train'}


def test_load_model_variables_reads_the_trained_network(tmp_path):
  result = run_fake(tmp_path, num_train_steps=2)
  assert result.step == 2
  variables, meta = checkpointing.load_model_variables(tmp_path, 'expert')
  assert meta['stage'] == 'expert' and meta['step'] == 2 and meta['img_size'] == 96
  assert set(variables) == {'params', 'batch_stats'}
  assert variables['params']['Dense_0']['kernel'].shape == (16, 64)
  assert isinstance(variables['params']['Dense_0']['kernel'], np.ndarray)
  with pytest.raises(ValueError, match="'expert'-stage"):
    checkpointing.load_model_variables(tmp_path, 'generator')
  with pytest.raises(FileNotFoundError, match='train first'):
    checkpointing.load_model_variables(tmp_path / 'empty', 'expert')


def test_relative_workdir_trains_resumes_and_loads(tmp_path, monkeypatch):
  """The README passes --workdir=workdirs/...: a relative path must work for save, resume and load."""
  monkeypatch.chdir(tmp_path)
  assert run_fake('workdirs/run', num_train_steps=2).step == 2
  assert run_fake('workdirs/run', num_train_steps=3).start_step == 2  # resumed from the relative workdir
  variables, meta = checkpointing.load_model_variables('workdirs/run', 'expert')
  assert meta['step'] == 3 and set(variables) == {'params', 'batch_stats'}
  assert (tmp_path / 'workdirs' / 'run' / checkpointing.CHECKPOINT_DIR / '3').is_dir()


def _corrupt(step_dir):
  """Truncates every data file of the step's model and train items (a crash mid-copy / bad disk)."""
  count = 0
  for item in ('model', 'train'):
    for root, _, files in os.walk(step_dir / item):
      for name in files:
        path = os.path.join(root, name)
        if os.path.getsize(path) > 0:
          with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 3)
          count += 1
  assert count > 0


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  straight = run_fake(tmp_path / 'straight', num_train_steps=6)
  workdir = tmp_path / 'run'
  run_fake(workdir, num_train_steps=4)  # checkpoints at 2 and 4
  _corrupt(workdir / 'checkpoints' / '4')
  with caplog.at_level(logging.WARNING):
    resumed = run_fake(workdir, num_train_steps=6)
  assert resumed.start_step == 2, 'must resume from the older, intact step'
  assert any('step 4' in r.getMessage() and 'corrupt' in r.getMessage() for r in caplog.records)
  kept = os.listdir(workdir / checkpointing.CORRUPT_DIR)
  assert len(kept) == 1 and kept[0].startswith('4-')  # moved aside, not deleted
  np.testing.assert_allclose(
    [losses(resumed)[s] for s in (3, 4, 5, 6)], [losses(straight)[s] for s in (3, 4, 5, 6)], atol=1e-6
  )
  assert sorted(int(s) for s in os.listdir(workdir / 'checkpoints') if s.isdigit())[-1] == 6


def test_config_mismatch_is_an_error_not_corruption(tmp_path):
  run_fake(tmp_path, num_train_steps=2)

  class WiderStage(FakeStage):
    def init(self, config, rng):
      state = super().init(config, rng)
      return state.replace(params=jax.tree.map(lambda x: jnp.zeros(x.shape + (2,)), state.params))

  with pytest.raises(RuntimeError, match='use a new --workdir'):
    run_fake(tmp_path, stage=WiderStage(), num_train_steps=4)
  assert not (tmp_path / checkpointing.CORRUPT_DIR).exists()
  assert os.path.isdir(tmp_path / 'checkpoints' / '2')
