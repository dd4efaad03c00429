"""config.mesh.deterministic: the per-device steps (sharding.fixed_order_step) and their fixed-order sums
(lipsync_jax.replicas) compute what the plain GSPMD steps compute, and the sums' order is the documented one.

Bit-identity across process layouts is tests/test_multiprocess.py's (1 process x 4 devices vs 2 x 2); here,
in one process on 4 of the 8 fake devices: the butterfly's exact association, the all-gather fallback for
device counts that are not a power of two, the identity outside a per-device step, and one train + eval
step of the expert and the GAN stage (the latter with the sync term on: BatchNorm with batch statistics in
the frozen expert, the gradient through it, the discriminator) equal to the plain step's to float rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from test_stages import expert_batch, generator_batch, make_config

from lipsync_jax import replicas
from lipsync_jax.training import sharding, stages


def _mesh(n: int):
  return sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, dcn_data=1)), jax.devices()[:n])


def _sum_per_device(mesh, values: np.ndarray) -> np.ndarray:
  """Each device's row of `values` summed over devices with replicas.psum; returns every device's result."""
  n = sharding.num_batch_shards(mesh)

  def body(x):
    with replicas.per_device(sharding.BATCH_AXES, n):
      assert replicas.count() == n
      total = replicas.psum(x[0])
      mean = replicas.pmean(x[0])
    return jnp.stack([total, mean])[None]

  fn = jax.shard_map(
    body, mesh=mesh, in_specs=P(sharding.BATCH_AXES), out_specs=P(sharding.BATCH_AXES), check_vma=False
  )
  return np.asarray(jax.jit(fn)(jnp.asarray(values)))  # (n, 2, ...): [device][sum, mean]


def test_butterfly_order_is_fixed_and_every_device_gets_the_same_bits():
  rng = np.random.default_rng(0)
  # Magnitudes spread over 8 decades: a different association changes the float32 result.
  x = (rng.standard_normal((4, 257)) * np.logspace(-4, 4, 257)).astype(np.float32)
  out = _sum_per_device(_mesh(4), x)
  expected = (x[0] + x[1]) + (x[2] + x[3])  # round 1 pairs positions differing in bit 0, round 2 in bit 1
  for device in range(4):
    np.testing.assert_array_equal(out[device, 0], expected)
    np.testing.assert_array_equal(out[device, 1], expected / np.float32(4))
  assert not np.array_equal(expected, ((x[0] + x[2]) + x[1]) + x[3])  # the order is observable


def test_non_power_of_two_devices_fold_in_position_order():
  rng = np.random.default_rng(1)
  x = (rng.standard_normal((3, 129)) * np.logspace(-4, 4, 129)).astype(np.float32)
  out = _sum_per_device(_mesh(3), x)
  for device in range(3):
    np.testing.assert_array_equal(out[device, 0], (x[0] + x[1]) + x[2])


def test_identity_outside_a_per_device_step():
  tree = {'a': jnp.arange(3.0), 'b': jnp.ones(())}
  assert replicas.count() == 1
  assert replicas.psum(tree) is tree and replicas.pmean(tree) is tree


def test_deterministic_mode_needs_replicated_params():
  with pytest.raises(ValueError, match='param_sharding'):
    sharding.fixed_order_step(stages.get_stage('expert').train_step, _mesh(4), 'fsdp')


@pytest.fixture(scope='module')
def frozen_expert():
  return stages.get_stage('expert').init(make_config('expert', width=1 / 8), jax.random.key(42)).variables


@pytest.mark.parametrize('stage_name', ['expert', 'gan'])
def test_per_device_step_equals_the_plain_step(stage_name, frozen_expert):
  mesh = _mesh(4)
  rep, rows = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  stage = stages.get_stage(stage_name)
  state = jax.device_put(stage.init(make_config(stage_name), jax.random.key(0)), rep)
  batch = sharding.shard_batch(expert_batch(8) if stage_name == 'expert' else generator_batch(8), mesh)
  expert = None if stage_name == 'expert' else jax.device_put(frozen_expert, rep)
  shardings = dict(in_shardings=(rep, rows, rep), out_shardings=(rep, rep))

  plain_state, plain = jax.jit(stage.train_step, **shardings)(state, batch, expert)
  per_device = jax.jit(sharding.fixed_order_step(stage.train_step, mesh), **shardings)
  det_state, det = per_device(state, batch, expert)

  assert set(det) == set(plain)
  for key in plain:
    # Gradient norms 3e-3: another summation order over 8 rows at width 1/32 moves the GAN's by 5e-5 to
    # 1e-3 (measured; BatchNorm over 1-channel maps, the random expert's sync gradient dominates its norm);
    # a missing or doubled cross-device sum would be off by x4 (x2 for one of the two networks).
    rtol = 3e-3 if 'grad_norm' in key else 1e-5
    np.testing.assert_allclose(float(det[key]), float(plain[key]), rtol=rtol, err_msg=key)
  # The BatchNorm running statistics are the global batch's (sync BatchNorm), not one device's.
  for a, b in zip(jax.tree.leaves(det_state.batch_stats), jax.tree.leaves(plain_state.batch_stats)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert int(det_state.step) == 1

  eval_in = dict(in_shardings=(rep, rows, rep), out_shardings=rep)
  plain_eval = jax.jit(stage.eval_step, **eval_in)(plain_state, batch, expert)
  det_eval = jax.jit(sharding.fixed_order_step(stage.eval_step, mesh), **eval_in)(plain_state, batch, expert)
  for key in plain_eval:
    np.testing.assert_allclose(float(det_eval[key]), float(plain_eval[key]), rtol=1e-5, err_msg=key)
