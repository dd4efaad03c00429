"""Tests of the training loop (lipsync_jax.training.loop), configs and main: resume, preemption, traced sync weight,
non-finite loss, unknown config keys, bf16, hooks and the metrics helper.

Most tests use a stand-in stage (a tiny linen model on a grain dataset of random vectors) so the loop,
sharding, checkpointing and preemption machinery is proven in seconds; `test_real_stage_*` run the real
stages on tiny shards. This file is also a script: `python tests/test_train.py WORKDIR STEPS` trains the
stand-in stage (used by the preemption test as a subprocess).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import pytest  # noqa: E402

from configs import common  # noqa: E402
from configs import expert as expert_config  # noqa: E402
from configs import gan as gan_config  # noqa: E402
from configs import generator as generator_config  # noqa: E402
from lipsync_jax import weights  # noqa: E402
from lipsync_jax.data import pipeline  # noqa: E402
from lipsync_jax.training import loop as train  # noqa: E402
from lipsync_jax.training import metrics as metrics_lib  # noqa: E402
from lipsync_jax.training import stages  # noqa: E402

_BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
_compiles = [0]  # XLA compilations in this process, counted by a jax.monitoring listener


def _count_compiles(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == _BACKEND_COMPILE_EVENT:
    _compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


# ---------------------------------------------------------------------------------------------------------
# A stand-in stage: same contract as lipsync_jax.training.stages (init / train_step / eval_step / sample_grid /
# scalars / schedule_update), a 2-layer MLP with BatchNorm regressing y from x.
# ---------------------------------------------------------------------------------------------------------


class FakeState(struct.PyTreeNode):
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: tuple
  sync_wt: jax.Array
  rng: jax.Array
  nan_at_step: int = struct.field(pytree_node=False, default=-1)


class TinyNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(64)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(1)(nn.relu(x))


def _fake_init(config, rng, nan_at_step=-1):
  init_rng, rng = jax.random.split(rng)
  variables = TinyNet().init(init_rng, jnp.zeros((1, 16)), train=False)
  params = variables['params']
  return FakeState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables['batch_stats'],
    opt_state=optax.adam(config.optimizer.lr).init(params),
    sync_wt=jnp.float32(config.loss.syncnet_wt_initial),
    rng=rng,
    nan_at_step=nan_at_step,
  )


def _fake_loss(params, batch_stats, batch, sync_wt, rng):
  pred, updates = TinyNet().apply(
    {'params': params, 'batch_stats': batch_stats}, batch['x'], train=True, mutable=['batch_stats']
  )
  noise = 1e-3 * jax.random.normal(rng, pred.shape)  # uses the state RNG, so it must be restored too
  mse = jnp.mean((pred + noise - batch['y']) ** 2)
  return mse * (1.0 + sync_wt), (mse, updates['batch_stats'])


def _fake_train_step(state, batch, expert_variables):
  del expert_variables
  rng, step_rng = jax.random.split(state.rng)
  (loss, (mse, stats)), grads = jax.value_and_grad(_fake_loss, has_aux=True)(
    state.params, state.batch_stats, batch, state.sync_wt, step_rng
  )
  updates, opt_state = optax.adam(1e-2).update(grads, state.opt_state, state.params)
  loss = jnp.where(state.step + 1 == state.nan_at_step, jnp.nan, loss)
  new = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=stats,
    opt_state=opt_state,
    rng=rng,
  )
  return new, {'loss': loss, 'mse': mse, 'sync_wt': state.sync_wt}


def _fake_eval_step(state, batch, expert_variables):
  del expert_variables
  pred = TinyNet().apply({'params': state.params, 'batch_stats': state.batch_stats}, batch['x'], train=False)
  return {'loss': jnp.mean((pred - batch['y']) ** 2), 'sync': jnp.mean((pred - batch['y']) ** 2)}


def _fake_sample_grid(state, batch, expert_variables):
  del state, expert_variables
  x = jnp.clip(batch['x'][:, :12].reshape(-1, 1, 12, 1), 0, 1)
  return jnp.broadcast_to(x, x.shape[:3] + (3,))


def _fake_schedule_update(state, eval_metrics, config):
  """The real stages' rule: once eval 'sync' < threshold, the sync weight becomes the target.

  jnp.float32(...) lands uncommitted on one device: the loop must put it back on the mesh (sharding.reshard).
  """
  if eval_metrics['sync'] < config.loss.sync_trigger_threshold:
    state = state.replace(sync_wt=jnp.float32(config.loss.syncnet_wt_target))
  return state, {'sync_wt': float(state.sync_wt)}


@dataclasses.dataclass(frozen=True)
class FakeStage:
  name: str = 'expert'
  data_mode: str = 'expert'
  needs_expert: bool = False
  nan_at_step: int = -1

  def init(self, config, rng):
    return _fake_init(config, rng, self.nan_at_step)

  train_step = staticmethod(_fake_train_step)
  eval_step = staticmethod(_fake_eval_step)
  sample_grid = staticmethod(_fake_sample_grid)
  scalars = staticmethod(stages.lr_scalars)
  schedule_update = staticmethod(_fake_schedule_update)


class FakeData:
  """input_pipeline stand-in: a grain MapDataset of random (x, y) pairs; this process's rows of the batch."""

  @staticmethod
  def _dataset(global_batch_size, seed, rows):
    w = np.random.default_rng(123).normal(size=(16, 1)).astype(np.float32)

    def example(i):
      x = np.random.default_rng([seed, i]).uniform(size=(16,)).astype(np.float32)
      return {'x': x, 'y': x @ w}

    start, stop = rows
    return (
      grain.MapDataset.range(10_000)
      .shuffle(seed=seed)
      .map(example)
      .batch(global_batch_size, drop_remainder=True)
      .map(lambda b: jax.tree.map(lambda a: a[start:stop], b))
    )

  def make_train_iterator(
    self, shards_dir, split, mode, global_batch_size, seed, rows, img_size=None, worker_count=0
  ):
    del shards_dir, split, mode, img_size, worker_count
    ds = self._dataset(global_batch_size, seed, rows).repeat()
    return iter(ds.to_iter_dataset())

  def make_eval_batches(
    self, shards_dir, split, mode, global_batch_size, num_batches, seed, rows, img_size=None
  ):
    del shards_dir, split, mode, img_size
    return pipeline.EvalBatches(self._dataset(global_batch_size, seed + 1, rows), num_batches)


def fake_config(**overrides):
  """The expert tiny config, pointed at the stand-in data, with loop settings for fast tests."""
  config = expert_config.get_config('tiny')
  with config.unlocked():
    config.data.shards_dir = '/unused-by-fake-data'
    config.data.global_batch_size = 8
    config.num_train_steps = 4
    config.log_every_steps = 1
    config.eval_every_steps = 1000
    config.eval_batches = 2
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 5
    config.loss.syncnet_wt_initial = 0.0
    config.loss.syncnet_wt_target = 0.5
    config.loss.sync_trigger_threshold = -1.0  # never fires unless a test says so
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


@dataclasses.dataclass
class FakeRun:
  """A run's TrainResult and what the test hooks saw (the loop itself keeps nothing per step)."""

  result: train.TrainResult | None = None
  train_history: list = dataclasses.field(default_factory=list)  # per step: {'step', metric: float}
  eval_history: list = dataclasses.field(default_factory=list)  # per eval: {'step', metric: float}
  batch_checksums: list = dataclasses.field(default_factory=list)  # per step: (step, sum of local batch)
  compiles_before_step: dict = dataclasses.field(default_factory=dict)  # step -> XLA compiles so far
  compiles_at_end: int = 0

  def hooks(self) -> train.Hooks:
    def on_batch(step, local):
      self.compiles_before_step[step] = _compiles[0]
      self.batch_checksums.append(
        (step, float(sum(np.asarray(v, np.float64).sum() for v in jax.tree.leaves(local))))
      )

    return train.Hooks(
      on_batch=on_batch,
      on_log=lambda step, rows: self.train_history.extend(rows),
      on_eval=lambda step, row: self.eval_history.append(dict(row, step=step)),
    )

  def compiles_during(self, step: int) -> int:
    """XLA compiles from the start of `step` to the start of the next one (or the end of the run)."""
    end = self.compiles_before_step.get(step + 1, self.compiles_at_end)
    return end - self.compiles_before_step[step]

  step = property(lambda self: self.result.step)
  start_step = property(lambda self: self.result.start_step)
  preempted = property(lambda self: self.result.preempted)


def run_fake(workdir, stage=None, **overrides) -> FakeRun:
  run = FakeRun()
  run.result = train.train_and_evaluate(
    fake_config(**overrides), str(workdir), stage=stage or FakeStage(), data=FakeData(), hooks=run.hooks()
  )
  run.compiles_at_end = _compiles[0]
  return run


def losses(run):
  return {row['step']: row['loss'] for row in run.train_history}


# ---------------------------------------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------------------------------------


def test_resume_gives_the_same_losses_and_batches(tmp_path):
  straight = run_fake(tmp_path / 'straight', num_train_steps=4)
  first = run_fake(tmp_path / 'resumed', num_train_steps=2)
  second = run_fake(tmp_path / 'resumed', num_train_steps=4)
  assert second.start_step == 2 and second.step == 4
  resumed = {**losses(first), **losses(second)}
  assert sorted(resumed) == [1, 2, 3, 4]
  np.testing.assert_allclose(
    [resumed[s] for s in range(1, 5)], [losses(straight)[s] for s in range(1, 5)], rtol=0, atol=1e-6
  )
  assert first.batch_checksums + second.batch_checksums == straight.batch_checksums
  assert len({c for _, c in straight.batch_checksums}) == 4  # the batches really differ per step


def _fake_program(program: float):
  """_fake_train_step, reporting which of the two programs ran (as metric 'program')."""

  def step_fn(state, batch, expert_variables):
    new, metrics = _fake_train_step(state, batch, expert_variables)
    return new, {**metrics, 'program': jnp.float32(program)}

  return step_fn


@dataclasses.dataclass(frozen=True)
class WarmupStage(FakeStage):
  """A stand-in stage with a warm-up program (the gan stage's shape: stages.gan_warmup_train_step) for
  its first 3 steps. Fresh functions per instance: each run traces (and compiles) its own programs."""

  def __post_init__(self):
    object.__setattr__(self, 'warmup_train_step', _fake_program(0.0))
    object.__setattr__(self, 'train_step', _fake_program(1.0))

  warmup_steps = staticmethod(lambda config: 3)


def programs(run):
  return {row['step']: int(row['program']) for row in run.train_history}


def test_warm_up_program_then_train_step_each_compiled_once_and_resume_crosses_the_switch(tmp_path):
  straight = run_fake(tmp_path / 'straight', stage=WarmupStage(), num_train_steps=6)
  assert programs(straight) == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1}  # the switch at warmup_steps
  # Each program compiles on its first step (1 and 4) and never again (6 also compiles the evaluation).
  assert straight.compiles_during(1) > 0 and straight.compiles_during(4) > 0
  assert [straight.compiles_during(s) for s in (2, 3, 5)] == [0, 0, 0]
  for stop in (2, 4):  # resume before the switch and after it
    first = run_fake(tmp_path / f'resumed{stop}', stage=WarmupStage(), num_train_steps=stop)
    second = run_fake(tmp_path / f'resumed{stop}', stage=WarmupStage(), num_train_steps=6)
    assert second.start_step == stop and second.step == 6
    assert {**programs(first), **programs(second)} == programs(straight)
    resumed = {**losses(first), **losses(second)}
    np.testing.assert_allclose(
      [resumed[s] for s in range(1, 7)], [losses(straight)[s] for s in range(1, 7)], rtol=0, atol=1e-6
    )


def test_state_is_sharded_over_the_mesh_and_fsdp_runs(tmp_path):
  assert jax.device_count() >= 4, 'tests/conftest.py sets 8 fake CPU devices'
  replicated = run_fake(tmp_path / 'rep', num_train_steps=3)
  fsdp = run_fake(tmp_path / 'fsdp', num_train_steps=3, **{'mesh.fsdp': 2, 'mesh.param_sharding': 'fsdp'})
  np.testing.assert_allclose(
    [r['loss'] for r in fsdp.train_history], [r['loss'] for r in replicated.train_history], rtol=1e-5
  )


def test_fsdp_shards_the_largest_divisible_dim():
  import ml_collections
  from jax.sharding import PartitionSpec as P

  from lipsync_jax.training import sharding

  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 2}))
  assert dict(mesh.shape) == {'data': jax.device_count() // 2, 'fsdp': 2}
  assert sharding.leaf_partition_spec((3, 3, 64, 128), mesh, 'fsdp') == P(None, None, None, 'fsdp')
  assert sharding.leaf_partition_spec((3, 3, 65, 127), mesh, 'fsdp') == P()
  assert sharding.leaf_partition_spec((128,), mesh, 'fsdp') == P()  # small: replicated
  assert sharding.leaf_partition_spec((3, 3, 64, 128), mesh, 'replicated') == P()
  with pytest.raises(ValueError, match='config.mesh'):
    sharding.make_mesh(ml_collections.ConfigDict({'data': 3, 'fsdp': -1}))


def test_sync_weight_change_does_not_recompile(tmp_path):
  result = run_fake(tmp_path, num_train_steps=6, eval_every_steps=2, **{'loss.sync_trigger_threshold': 10.0})
  weights = [row['sync_wt'] for row in result.train_history]
  assert weights[:2] == [0.0, 0.0] and weights[2:] == [0.5] * 4  # switched at the first eval (step 2)
  assert result.eval_history[0]['sync_wt'] == 0.5
  assert result.result.last_eval['sync_wt'] == 0.5 and result.result.last_train['sync_wt'] == 0.5
  before = _compiles[0]
  jax.jit(lambda x: x * 3 + 1)(np.ones(13))  # the counter does see compiles
  assert _compiles[0] == before + 1
  assert [result.compiles_during(s) for s in range(3, 7)] == [0, 0, 0, 0]  # new weight: no recompile


def test_non_finite_loss_stops_naming_the_step_and_saves_nothing_bad(tmp_path):
  with pytest.raises(metrics_lib.NonFiniteLossError, match='at step 3'):
    run_fake(tmp_path, stage=FakeStage(nan_at_step=3), num_train_steps=6, log_every_steps=3)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']


def test_metrics_helper_buffers_until_a_log_step_and_names_the_bad_step():
  written = []

  class Writer:
    def write_scalars(self, step, scalars):
      written.append((step, scalars))

  with metrics_lib.TrainMetrics(
    start_step=0, num_steps=10, global_batch=4, writer=Writer(), progress=True
  ) as metrics:
    for step in (1, 2, 3):
      metrics.add(step, {'loss': jnp.float32(step), 'acc': jnp.float32(0.5)})
    assert not written  # nothing fetched or written between log steps
    rows = metrics.log(3, {'lr': 0.1}, last_saved_step=None)
    assert [r['step'] for r in rows] == [1, 2, 3] and metrics.last_means == {'loss': 2.0, 'acc': 0.5}
    step, scalars = written[-1]
    assert step == 3 and scalars['train/loss'] == 2.0 and scalars['train/lr'] == 0.1
    assert scalars['train/samples_per_sec'] == pytest.approx(4 * scalars['train/steps_per_sec'])
    metrics.add(5, {'loss': jnp.float32(np.nan), 'acc': jnp.float32(0.5)})
    with pytest.raises(metrics_lib.NonFiniteLossError, match=r"\['loss'\] at step 5.*checkpoint is step 3"):
      metrics.fetch(last_saved_step=3)


def test_writes_tensorboard_scalars_and_images(tmp_path):
  run_fake(tmp_path, num_train_steps=2, eval_every_steps=2)
  events = [f for f in os.listdir(tmp_path) if f.startswith('events.out.tfevents')]
  assert events, os.listdir(tmp_path)
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={'images': 0, 'tensors': 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors']) | set(acc.Tags()['scalars'])
  for tag in (
    'train/loss',
    'train/lr',
    'train/steps_per_sec',
    'train/samples_per_sec',
    'eval/loss',
    'train/sync_wt',
  ):
    assert tag in tags, tags
  # lipsync_jax.training.summaries writes one legacy image summary per grid image: samples/image/<i>.
  assert 'samples/image/0' in set(acc.Tags()['images']), acc.Tags()['images']
  assert json.loads((tmp_path / 'config.json').read_text())['stage'] == 'expert'


def _parse_config_flags(monkeypatch, argv):
  from absl import flags
  from ml_collections import config_flags

  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads the overrides from sys.argv
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'test', flag_values=fv, lock_config=True)
  fv(argv)
  return fv.config


def test_unknown_config_keys_fail_naming_the_key(monkeypatch):
  path = os.path.join(REPO, 'configs', 'gan.py')
  config = _parse_config_flags(monkeypatch, ['prog', f'--config={path}:tiny', '--config.optimizer.lr=0.5'])
  assert config.optimizer.lr == 0.5 and config.loss.disc_wt == 0.07 and config.num_train_steps < 20
  with pytest.raises(Exception, match='lrr'):
    _parse_config_flags(monkeypatch, ['prog', f'--config={path}', '--config.optimizer.lrr=0.5'])
  config = gan_config.get_config()
  with pytest.raises(AttributeError, match='learning_rate'):
    config.optimizer.learning_rate = 1.0
  with pytest.raises(ValueError, match='huge'):
    gan_config.get_config('huge')


def test_default_configs_are_the_original_hyper_parameters():
  e, g, d = expert_config.get_config(), generator_config.get_config(), gan_config.get_config()
  assert (e.data.global_batch_size, e.optimizer.lr, e.optimizer.b1) == (64, 1e-4, 0.9)
  assert (g.data.global_batch_size, g.optimizer.lr, g.loss.syncnet_wt_target, g.eval_every_steps) == (
    16,
    1e-4,
    0.01,
    3000,
  )
  assert g.loss.sync_trigger_threshold == 0.75 and g.loss.syncnet_wt_initial == 0.0
  assert (d.optimizer.b1, d.optimizer.disc_b1, d.loss.disc_wt, d.loss.syncnet_wt_target) == (
    0.5,
    0.5,
    0.07,
    0.03,
  )
  assert {c.stage for c in (e, g, d)} == set(common.STAGES)
  for module in (expert_config, generator_config, gan_config):
    for variant in ('tiny', 'demo'):
      assert module.get_config(variant).model.width_multiplier < 1


def test_generator_stage_without_expert_fails_clearly():
  config = generator_config.get_config()
  with pytest.raises(ValueError, match='expert_checkpoint'):
    train.load_frozen_expert(config)
  with config.unlocked():
    config.expert_checkpoint = '/no/such/expert'
  with pytest.raises(weights.CheckpointError, match='/no/such/expert'):
    train.load_frozen_expert(config)


def _wait_for(predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.2)
  raise AssertionError(f'timed out waiting for {what}')


def test_sigterm_saves_at_the_current_step_and_exits_0(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  proc = subprocess.Popen(
    [sys.executable, os.path.abspath(__file__), str(tmp_path), '1000000'],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    env=env,
    cwd=REPO,
  )
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
  reader.start()
  _wait_for(
    lambda: any('step 5/' in line for line in lines) or proc.poll() is not None,
    120,
    'the run to reach step 5',
  )
  assert proc.poll() is None, ''.join(lines)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, ''.join(lines)
  reader.join(timeout=10)
  proc.stdout.close()
  out = ''.join(lines)
  result = json.loads([line for line in lines if line.startswith('RESULT ')][-1][len('RESULT ') :])
  assert result['preempted'] and 5 <= result['step'] < 1000000, out
  saved = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert saved[-1] == result['step'], (saved, out)  # checkpoint at the step it stopped, not a multiple of N
  resumed = run_fake(tmp_path, num_train_steps=result['step'] + 1)
  assert resumed.start_step == result['step'] and resumed.step == result['step'] + 1


def test_real_stage_expert_bf16_two_steps(tmp_path, tiny_shards):
  """The real expert stage on tiny shards in bfloat16: finite losses, params and optimizer state float32."""
  config = expert_config.get_config('tiny')
  with config.unlocked():
    config.data.shards_dir = tiny_shards
    config.model.compute_dtype = 'bfloat16'
    config.num_train_steps = 2
    config.eval_batches = 0  # no eval compile: keeps this under CI's time budget
    config.data.global_batch_size = 8
  rows = []
  result = train.train_and_evaluate(
    config, str(tmp_path), hooks=train.Hooks(on_log=lambda s, r: rows.extend(r))
  )
  assert result.step == 2 and [r['step'] for r in rows] == [1, 2]
  assert all(np.isfinite(r['loss']) for r in rows)
  from lipsync_jax.training import checkpointing

  variables, meta = checkpointing.load_model_variables(tmp_path, 'expert')
  assert meta['compute_dtype'] == 'bfloat16' and meta['step'] == 2
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype(np.float32)}


@pytest.fixture(scope='module')
def tiny_shards(tmp_path_factory):
  """A few random clips written straight to TFRecord shards (no video, no Beam): seconds to build."""
  from lipsync_jax.data import records, tfrecord

  root = tmp_path_factory.mktemp('tiny_shards')
  rng = np.random.default_rng(0)
  for split, count in (('train', 4), ('val', 2)):
    blobs = []
    for i in range(count):
      n = 24
      clip = records.Clip(
        clip_id=f'{split}/{i}',
        split=split,
        frames=rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8),
        mel=rng.normal(size=(80, n * 80 // 25 + 1)).astype(np.float32),
        boxes=np.tile(np.array([[0, 0, 96, 96]], np.float32), (n, 1)),
      )
      blobs.append(records.serialize_clip(clip, frame_format='raw'))
    tfrecord.write_tfrecord(os.path.join(root, records.shard_name(split, 0, 1)), blobs)
  (root / 'dataset_info.json').write_text(json.dumps({'img_size': 96}))
  return str(root)


def _main(workdir, steps):
  """Script mode: train the stand-in stage (for the preemption test); prints RESULT {json}."""
  import logging

  logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s', force=True)
  logging.getLogger('absl').setLevel(logging.WARNING)  # orbax's per-save chatter
  result = run_fake(workdir, num_train_steps=int(steps), checkpoint_every_steps=1000, log_every_steps=1)
  print('RESULT ' + json.dumps({'step': result.step, 'preempted': result.preempted}), flush=True)


if __name__ == '__main__':
  _main(*sys.argv[1:])
