"""Tests of lipsync_jax.training.checkpointing: items, reading one network, the data item as JSON, and restore
that never loses progress: transient storage errors retried (newest step kept), verifiably corrupt steps
quarantined (locally and on gs://), config mismatches refused; the 2-process agreement is in
tests/test_restore_multiprocess.py."""

from __future__ import annotations

import json
import logging
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_train import FakeStage, losses, run_fake  # the stand-in stage and data (tests/test_train.py)

from lipsync_jax import fs
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


# ---------------------------------------------------------------------------------------------------------
# restore_latest directly: a small sharded state, a grain iterator, injected storage errors.
# ---------------------------------------------------------------------------------------------------------


def _w(scale: float) -> np.ndarray:
  """Random (incompressible: stored as an OCDBT data file, not inline in a B-tree node), one per step."""
  return np.random.default_rng(int(scale)).normal(size=(64, 256)).astype(np.float32)


def _state(scale: float) -> KeyState:
  """A state whose every leaf shows which step wrote it."""
  return KeyState(
    step=jnp.int32(scale),
    params={'w': jnp.asarray(_w(scale)), 'b': jnp.arange(8.0) * scale},
    batch_stats={'m': jnp.full((8,), scale)},
    opt_state=(jnp.full((3,), scale),),
    rng=jax.random.key(int(scale)),
  )


def _shardings(state):
  """'w' split over the 8 fake devices, the rest replicated."""
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  replicated = NamedSharding(mesh, P())
  shardings = jax.tree.map(lambda _: replicated, state)
  return shardings.replace(params={'w': NamedSharding(mesh, P('data')), 'b': replicated})


def _iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())


def _save_steps(workdir, steps=(1, 2)) -> None:
  """Checkpoints at `steps`; before step s the iterator has given 10 s elements."""
  it = _iterator()
  with checkpointing.make_manager(workdir, async_save=False) as manager:
    for step in steps:
      while it.get_state()['next_index'] < 10 * step:
        next(it)
      checkpointing.save(manager, step, _state(step), it, {'stage': 'expert'})


def _restore(workdir, target=None, **kwargs):
  """restore_latest into a fresh manager and iterator -> (state, step, the iterator's next element)."""
  target = target if target is not None else _state(0)
  abstract = jax.eval_shape(lambda: target)
  it = _iterator()
  with checkpointing.make_manager(workdir, async_save=False) as manager:
    state, step = checkpointing.restore_latest(
      manager, workdir, abstract, _shardings(target), it, **{'backoff_s': 0.001, **kwargs}
    )
  return state, step, (next(it) if step is not None else None)


def _steps_on_disk(workdir) -> list[int]:
  return sorted(int(s) for s in fs.listdir(f'{workdir}/checkpoints') if s.isdigit())


def _largest_array_file(step_dir) -> str:
  """The biggest OCDBT data file of the step's model item (holds 'w')."""
  files = fs.glob(f'{step_dir}/model/ocdbt.process_*/d/*')
  assert files, f'no OCDBT data files under {step_dir}/model'
  return max(files, key=fs.size)


def _truncate(path, keep: float = 1 / 3) -> None:
  with fs.open(path, 'rb') as f:
    data = f.read()
  with fs.open(path, 'wb') as f:
    f.write(data[: int(len(data) * keep)])


def test_data_iterator_state_is_one_json_item(tmp_path):
  _save_steps(tmp_path, steps=(2,))
  data_dir = tmp_path / 'checkpoints' / '2' / 'data'
  assert json.loads((data_dir / 'metadata').read_text()) == {'next_index': 20}
  assert not [n for n in os.listdir(data_dir) if n.startswith('process_')]  # not grain's per-process files


def test_restore_latest_restores_state_step_and_iterator(tmp_path):
  assert _restore(tmp_path / 'empty')[:2] == (None, None)
  _save_steps(tmp_path)
  state, step, next_element = _restore(tmp_path)
  assert step == 2 and next_element == 20
  np.testing.assert_array_equal(state.params['w'], _w(2))
  assert state.params['w'].sharding.spec == P('data')  # restored onto the requested sharding
  np.testing.assert_array_equal(jax.random.key_data(state.rng), jax.random.key_data(jax.random.key(2)))


def _flaky(real, fails: int, marker: str, error: Exception, path_arg: int = 0):
  """`real`, except that its first `fails` calls whose path argument contains `marker` raise `error`."""
  calls = {'failed': 0}

  def wrapper(*args, **kwargs):
    if marker in os.fspath(args[path_arg]) and calls['failed'] < fails:
      calls['failed'] += 1
      raise error
    return real(*args, **kwargs)

  return wrapper, calls


def _assert_nothing_moved(workdir, steps=(1, 2)) -> None:
  assert _steps_on_disk(workdir) == list(steps)
  assert not os.path.exists(os.path.join(workdir, checkpointing.CORRUPT_DIR))


def test_transient_errors_checking_the_newest_step_are_retried(tmp_path, monkeypatch, caplog):
  _save_steps(tmp_path)
  flaky, calls = _flaky(fs.open, 3, f'checkpoints{os.sep}2', ConnectionResetError('connection reset by peer'))
  monkeypatch.setattr(fs, 'open', flaky)
  with caplog.at_level(logging.WARNING):
    _, step, next_element = _restore(tmp_path)
  assert calls['failed'] == 3 and (step, next_element) == (2, 20)  # the newest, after retries
  assert any('try 4 of 5' in r.getMessage() for r in caplog.records)
  _assert_nothing_moved(tmp_path)


def test_transient_errors_restoring_are_retried(tmp_path, monkeypatch):
  _save_steps(tmp_path)
  unavailable = ValueError('UNAVAILABLE: injected: HTTP response code: 503')  # tensorstore's form
  flaky, calls = _flaky(ocp.StandardCheckpointHandler.restore, 2, '', unavailable, path_arg=1)
  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'restore', flaky)
  _, step, _ = _restore(tmp_path)
  assert calls['failed'] == 2 and step == 2
  _assert_nothing_moved(tmp_path)


def test_persistent_transient_error_fails_loudly_and_moves_nothing(tmp_path, monkeypatch):
  _save_steps(tmp_path)
  flaky, calls = _flaky(fs.size, 10**6, f'checkpoints{os.sep}2', TimeoutError('read timed out'))
  monkeypatch.setattr(fs, 'size', flaky)
  with pytest.raises(checkpointing.CheckpointUnavailableError, match=r'step 2 .*after 3 tries'):
    _restore(tmp_path, retries=3)
  assert calls['failed'] == 3
  _assert_nothing_moved(tmp_path)
  monkeypatch.undo()
  # the same while restoring (after the checks passed): every try fails, nothing is moved either
  unavailable = ValueError('DEADLINE_EXCEEDED: injected')
  monkeypatch.setattr(
    ocp.StandardCheckpointHandler, 'restore', lambda *a, **k: (_ for _ in ()).throw(unavailable)
  )
  with pytest.raises(checkpointing.CheckpointUnavailableError, match='Restoring step 2 .*after 2 tries'):
    _restore(tmp_path, retries=2)
  _assert_nothing_moved(tmp_path)


def _delete_train_metadata(step_dir) -> None:
  fs.remove(f'{step_dir}/train/_METADATA')


def _truncate_manifest(step_dir) -> None:
  _truncate(f'{step_dir}/model/manifest.ocdbt', keep=0.5)


@pytest.mark.parametrize(
  'damage',
  [lambda d: _truncate(_largest_array_file(d)), _delete_train_metadata, _truncate_manifest],
  ids=['truncated_array_file', 'deleted_metadata', 'truncated_manifest'],
)
def test_corrupt_newest_is_quarantined_and_the_previous_step_restored(tmp_path, damage, caplog):
  _save_steps(tmp_path)
  damage(f'{tmp_path}/checkpoints/2')
  with caplog.at_level(logging.WARNING):
    state, step, next_element = _restore(tmp_path)
  assert (step, next_element) == (1, 10)
  np.testing.assert_array_equal(state.params['w'], _w(1))
  assert _steps_on_disk(tmp_path) == [1]
  kept = os.listdir(tmp_path / checkpointing.CORRUPT_DIR)
  assert len(kept) == 1 and kept[0].startswith('2-')  # moved aside, not deleted
  assert any('step 2 is corrupt' in r.getMessage() for r in caplog.records)


def test_verify_step_names_the_damaged_file(tmp_path):
  _save_steps(tmp_path, steps=(1,))
  step_dir = f'{tmp_path}/checkpoints/1'
  checkpointing.verify_step(step_dir)  # intact: no error
  array_file = _largest_array_file(step_dir)
  _truncate(array_file)
  with pytest.raises(
    checkpointing.CheckpointCorruptError, match=rf'{os.path.basename(array_file)} is truncated'
  ):
    checkpointing.verify_step(step_dir)
  fs.remove(array_file)
  with pytest.raises(checkpointing.CheckpointCorruptError, match='is missing'):
    checkpointing.verify_step(step_dir)


def test_every_step_corrupt_is_one_loud_stop(tmp_path):
  _save_steps(tmp_path)
  for step in (1, 2):
    _truncate(_largest_array_file(f'{tmp_path}/checkpoints/{step}'))
  with pytest.raises(checkpointing.CheckpointCorruptError, match='Every step'):
    _restore(tmp_path)
  assert _steps_on_disk(tmp_path) == [] and len(os.listdir(tmp_path / checkpointing.CORRUPT_DIR)) == 2
  assert _restore(tmp_path)[:2] == (None, None)  # the rerun starts from scratch


def test_config_mismatch_fails_loudly_and_moves_nothing(tmp_path):
  _save_steps(tmp_path)
  wider = _state(0).replace(params={'w': jnp.zeros((64, 512)), 'b': jnp.zeros(8)})
  with pytest.raises(
    checkpointing.CheckpointMismatchError,
    match=r'model/params/w: stored \(64, 256\), model \(64, 512\).*new --workdir',
  ):
    _restore(tmp_path, target=wider)
  with_disc = _state(0).replace(disc_params={'d': jnp.zeros(3)})
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r"items \['model', 'train'\] stored"):
    _restore(tmp_path, target=with_disc)
  _assert_nothing_moved(tmp_path)


def test_checkpoint_with_grain_per_process_data_item_still_restores(tmp_path):
  """Steps written before the JSON data item (grain's handler: data/process_0-of-1.json) restore as they are."""
  it = _iterator()
  for _ in range(7):
    next(it)
  handlers = {
    'model': ocp.StandardCheckpointHandler(),
    'train': ocp.StandardCheckpointHandler(),
    'data': grain.checkpoint.CheckpointHandler(),
    'meta': ocp.JsonCheckpointHandler(),
  }
  items = checkpointing.split_state(_state(3))
  args = {k: ocp.args.StandardSave(v) for k, v in items.items()}
  args.update(
    data=grain.checkpoint.CheckpointSave(it), meta=ocp.args.JsonSave({'stage': 'expert', 'step': 3})
  )
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  with ocp.CheckpointManager(
    checkpointing.checkpoint_dir(tmp_path), item_handlers=handlers, options=options
  ) as m:
    m.save(3, args=ocp.args.Composite(**args))
  assert os.path.exists(tmp_path / 'checkpoints' / '3' / 'data' / 'process_0-of-1.json')
  _, step, next_element = _restore(tmp_path)
  assert (step, next_element) == (3, 7)
  _assert_nothing_moved(tmp_path, steps=(3,))
  variables, meta = checkpointing.load_model_variables(tmp_path, 'expert')  # readers work on it too
  np.testing.assert_array_equal(variables['params']['w'], _w(3))


def test_corrupt_newest_on_gcs_is_quarantined(gcs_dir):
  """The same as on disk, through the GCS API (fake-gcs-server): checks via gcsfs, arrays via tensorstore,
  the quarantine a server-side copy + delete."""
  _save_steps(gcs_dir)
  _truncate(_largest_array_file(f'{gcs_dir}/checkpoints/2'))
  state, step, next_element = _restore(gcs_dir)
  assert (step, next_element) == (1, 10)
  np.testing.assert_array_equal(state.params['w'], _w(1))
  assert _steps_on_disk(gcs_dir) == [1]
  kept = fs.listdir(f'{gcs_dir}/{checkpointing.CORRUPT_DIR}')
  assert len(kept) == 1 and kept[0].startswith('2-')
  assert fs.isfile(f'{gcs_dir}/{checkpointing.CORRUPT_DIR}/{kept[0]}/_CHECKPOINT_METADATA')


@pytest.mark.parametrize(
  'error, kind',
  [
    (ConnectionResetError('reset'), checkpointing.TRANSIENT),
    (TimeoutError('timed out'), checkpointing.TRANSIENT),
    (OSError(5, 'I/O error'), checkpointing.TRANSIENT),
    (ValueError('UNAVAILABLE: HTTP 503'), checkpointing.TRANSIENT),
    (ValueError('DEADLINE_EXCEEDED: deadline'), checkpointing.TRANSIENT),
    (ValueError('DATA_LOSS: Error decoding manifest'), checkpointing.CORRUPT),
    (ValueError('OUT_OF_RANGE: Requested byte range [0, 9) is not valid'), checkpointing.CORRUPT),
    (checkpointing.CheckpointCorruptError('x'), checkpointing.CORRUPT),
    (checkpointing.CheckpointMismatchError('x'), checkpointing.MISMATCH),
    (FileNotFoundError('gone'), checkpointing.ERROR),
    (ValueError('shapes differ'), checkpointing.ERROR),
    (KeyError('params'), checkpointing.ERROR),
  ],
)
def test_classify_error(error, kind):
  assert checkpointing.classify_error(error) == kind
  try:  # the class of a wrapped error is its cause's
    raise RuntimeError('orbax wrapper') from error
  except RuntimeError as wrapped:
    assert checkpointing.classify_error(wrapped) == kind
