"""Restore in 2 processes on loopback (jax.distributed, gloo; 2 processes x 2 CPU devices, 'w' sharded over
all 4): process 0 decides, every process restores the same step, and a failure on one process makes both
raise instead of leaving the other waiting.

Scenarios, in one pair of worker processes: the newest step's array file written by process 1 truncated ->
both restore the previous step (and the iterator state) and the newest is quarantined once; a transient
error on process 1 only -> both retry and succeed; a persistent one on process 1 only -> both raise
CheckpointUnavailableError; a non-transient one on process 1 only -> both raise at once. A hang fails the
test through the timeout. This file is also the worker script: `python tests/test_restore_multiprocess.py
worker ...`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

TIMEOUT_S = 300


def _w(scale: int):
  import numpy as np

  return np.random.default_rng(scale).normal(size=(64, 256)).astype(np.float32)  # incompressible


def _worker(port, process_id, workdir, out_path):
  import logging

  logging.basicConfig(
    level=logging.WARNING, stream=sys.stdout, force=True, format=f'[p{process_id}] %(message)s'
  )
  import jax

  import lipsync_jax  # noqa: F401  (first: EPATH_USE_TF and the XLA:CPU flags)

  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2, process_id=int(process_id))
  import grain
  import numpy as np
  import orbax.checkpoint as ocp
  from flax import struct
  from jax.experimental import multihost_utils
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from lipsync_jax import fs
  from lipsync_jax.training import checkpointing

  class State(struct.PyTreeNode):
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: tuple

  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  def global_array(value, sharding):
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  def state(scale):
    return State(
      step=global_array(np.int32(scale), replicated),
      params={'w': global_array(_w(scale), split), 'b': global_array(np.arange(8.0) * scale, replicated)},
      batch_stats={'m': global_array(np.full(8, scale, np.float32), replicated)},
      opt_state=(global_array(np.full(3, scale, np.float32), replicated),),
    )

  shardings = State(
    step=replicated,
    params={'w': split, 'b': replicated},
    batch_stats={'m': replicated},
    opt_state=(replicated,),
  )

  def restore(**kwargs):
    it = iter(grain.MapDataset.range(1000).to_iter_dataset())
    abstract = jax.eval_shape(lambda: state(0))
    with checkpointing.make_manager(workdir, async_save=False) as manager:
      restored, step = checkpointing.restore_latest(
        manager, workdir, abstract, shardings, it, **{'backoff_s': 0.01, **kwargs}
      )
    w = restored.params['w']
    w_ok = all(np.array_equal(np.asarray(s.data), _w(step)[s.index]) for s in w.addressable_shards)
    return {
      'step': step,
      'next': int(next(it)),
      'w_ok': bool(w_ok),
      'local_shards': len(w.addressable_shards),
    }

  def outcome(fn):
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      return {'raised': type(e).__name__, 'message': str(e)}

  def inject_on_process_1(error, fails):
    """Makes this process's first `fails` item restores raise `error` (process 1 only)."""
    real = ocp.StandardCheckpointHandler.restore
    calls = {'n': 0}

    def flaky(self, *args, **kwargs):
      if jax.process_index() == 1 and calls['n'] < fails:
        calls['n'] += 1
        raise error
      return real(self, *args, **kwargs)

    ocp.StandardCheckpointHandler.restore = flaky
    return lambda: setattr(ocp.StandardCheckpointHandler, 'restore', real)

  # Two steps; before step s the iterator has given 10 s elements.
  it = iter(grain.MapDataset.range(1000).to_iter_dataset())
  with checkpointing.make_manager(workdir, async_save=False) as manager:
    for step in (1, 2):
      while it.get_state()['next_index'] < 10 * step:
        next(it)
      checkpointing.save(manager, step, state(step), it, {'stage': 'test'})
  multihost_utils.sync_global_devices('saved')
  if jax.process_index() == 0:  # damage what process 1 wrote of step 2
    files = fs.glob(f'{workdir}/checkpoints/2/model/ocdbt.process_1/d/*')
    victim = max(files, key=fs.size)
    with fs.open(victim, 'rb') as f:
      data = f.read()
    with fs.open(victim, 'wb') as f:
      f.write(data[: len(data) // 3])
  multihost_utils.sync_global_devices('damaged')

  result = {'corrupt_newest': outcome(restore)}
  undo = inject_on_process_1(ValueError('UNAVAILABLE: injected 503'), fails=1)
  result['transient_once_on_p1'] = outcome(restore)
  undo()
  undo = inject_on_process_1(ValueError('UNAVAILABLE: injected 503'), fails=10**6)
  result['transient_always_on_p1'] = outcome(lambda: restore(retries=2))
  undo()
  undo = inject_on_process_1(KeyError('injected'), fails=10**6)
  result['error_on_p1'] = outcome(restore)
  undo()
  result['steps_left'] = sorted(int(s) for s in fs.listdir(f'{workdir}/checkpoints') if s.isdigit())
  result['quarantined'] = fs.listdir(f'{workdir}/{checkpointing.CORRUPT_DIR}')
  multihost_utils.sync_global_devices('done')
  with open(out_path, 'w') as f:
    json.dump(result, f)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_agree_on_the_step_and_on_failures(tmp_path):
  port = _free_port()
  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=2',
    JAX_PLATFORMS='cpu',
    TF_CPP_MIN_LOG_LEVEL='2',
  )
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        os.path.abspath(__file__),
        'worker',
        str(port),
        str(i),
        str(tmp_path / 'run'),
        str(tmp_path / f'p{i}.json'),
      ],
      env=env,
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = []
  for proc in procs:
    try:
      outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise AssertionError(f'a worker hung for {TIMEOUT_S} s') from None
  for i, proc in enumerate(procs):
    assert proc.returncode == 0, f'process {i} failed:\n{outputs[i][-5000:]}'
  results = [json.loads((tmp_path / f'p{i}.json').read_text()) for i in range(2)]
  for i, r in enumerate(results):
    # the previous step on both, each with its own shards of 'w' and the iterator state of step 1
    assert r['corrupt_newest'] == {'step': 1, 'next': 10, 'w_ok': True, 'local_shards': 2}, (i, r)
    assert r['transient_once_on_p1'] == r['corrupt_newest'], (i, r)  # retried by both, then restored
    assert r['transient_always_on_p1']['raised'] == 'CheckpointUnavailableError', (i, r)
    assert 'failed on process(es) [1]' in r['transient_always_on_p1']['message'], (i, r)
    assert r['error_on_p1']['raised'] == 'RuntimeError', (i, r)
    assert 'failed on process(es) [1]' in r['error_on_p1']['message'], (i, r)
    assert r['steps_left'] == [1], (i, r)  # nothing moved after the one corrupt step
    assert len(r['quarantined']) == 1 and r['quarantined'][0].startswith('2-'), (i, r)
  assert 'KeyError' in results[1]['error_on_p1']['message']  # the failing process names its own error


if __name__ == '__main__' and sys.argv[1:2] == ['worker']:
  _worker(*sys.argv[2:])
