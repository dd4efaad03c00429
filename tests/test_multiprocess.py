"""Multi-process training on loopback with the REAL input pipeline: the tiny GAN config as 2 processes x 2
CPU devices (jax.distributed, gloo collectives) trains on bit-identical global batches with the same
losses (to 1e-6; measured: bit-equal) as 1 process x 4 devices for 5 steps, and a checkpoint the 2
processes wrote at step 3 resumes in 1 process on the same sequence (the uninterrupted run's batches and
losses). The runs use config.mesh.deterministic (fixed-order sums over devices, lipsync_jax.replicas): with
GSPMD's all-reduces the losses drift apart by float noise after step 1 (see LOSS_RTOL).

Each process hashes every row of the batch it feeds (hooks.on_batch) and records which rows of the global
batch those are (sharding.process_batch_rows); the test puts the rows of both processes together and
compares them with the one-process run's. What is tested: the pipeline's global sample order and
per-process rows, the mesh over processes, make_array_from_process_local_data, jitted sharded steps, the
replicated frozen expert, multi-host orbax checkpoints with the process-count-invariant data item, and
process-0-only writing.
This file is also the worker script: `python tests/test_multiprocess.py worker ...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

STEPS = 5
RESUME_FROM = 3  # the 2-process run also checkpoints here; one process resumes from it
# Every loss that drives training. Not 'sync': with sync_wt 0 it does not, and with the tiny random expert
# some cosines are exactly 0 (post-ReLU 16-dim embeddings), where BCE jumps to its clamp.
LOSSES = ('loss', 'l1', 'perceptual', 'disc_real', 'disc_fake', 'disc_loss')

if __name__ != '__main__':
  from test_train import tiny_shards  # noqa: F401  (the fixture: a few random clips as TFRecord shards)


def _row_hashes(batch) -> dict[str, list[str]]:
  """{key: [sha256 of row i]} of a host batch: equal hashes <=> bit-identical rows."""
  return {
    key: [hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest()[:16] for row in value]
    for key, value in batch.items()
  }


def _worker(port, num_processes, process_id, workdir, shards_dir, out_dir, checkpoint_every, cache_dir):
  import logging

  logging.basicConfig(
    level=logging.INFO, stream=sys.stdout, force=True, format=f'[p{process_id}] %(asctime)s %(message)s'
  )
  logging.getLogger('absl').setLevel(logging.WARNING)  # orbax's per-save chatter
  import jax

  import lipsync_jax  # noqa: F401  (first, as in lipsync_jax.main: its XLA:CPU flags precede backend start)

  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if int(num_processes) > 1:
    jax.distributed.initialize(
      f'127.0.0.1:{port}', num_processes=int(num_processes), process_id=int(process_id)
    )
  from configs import gan
  from lipsync_jax import compile_cache
  from lipsync_jax.training import loop as train
  from lipsync_jax.training import sharding

  if cache_dir != '-':  # the resumed run reuses the uninterrupted run's compiled steps (same program)
    compile_cache.enable(cache_dir=cache_dir, min_compile_time_s=0)
  config = gan.get_config('tiny')
  config.data.shards_dir = shards_dir
  config.num_train_steps = STEPS
  config.log_every_steps = 1
  config.eval_batches = 0
  config.checkpoint_every_steps = int(checkpoint_every)
  config.mesh.deterministic = True
  history, batches = [], {}
  hooks = train.Hooks(
    on_batch=lambda step, local: batches.__setitem__(step, _row_hashes(local)),
    on_log=lambda step, rows: history.extend(rows),
  )
  result = train.train_and_evaluate(config, workdir, hooks=hooks)
  rows = sharding.process_batch_rows(sharding.make_mesh(config.mesh), int(config.data.global_batch_size))
  with open(os.path.join(out_dir, f'process_{jax.process_index()}.json'), 'w') as f:
    json.dump(
      {
        'process': jax.process_index(),
        'devices': jax.device_count(),
        'processes': jax.process_count(),
        'start_step': result.start_step,
        'rows': list(rows),
        'batches': batches,
        'history': history,
      },
      f,
    )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(devices, num_processes, workdir, shards_dir, out_dir, checkpoint_every=STEPS, cache_dir='-'):
  """Starts `num_processes` workers with `devices` CPU devices each; returns {name: Popen}."""
  # Low XLA:CPU optimisation: compiling the GAN step dominates this test (about -35% CPU time).
  xla_flags = (
    f'--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0 '
    '--xla_llvm_disable_expensive_passes=true'
  )
  # NPROC: XLA:CPU sizes a process's intra-op thread pool max(NPROC or the cores, local devices) and splits
  # work (and so float sums inside one device's ops) by that size: 1 process x 4 fake devices would run
  # with 4 threads and 2 x 2 with 2 on a 2-core machine, and their per-device results differ in the last
  # bit (measured; identical with equal pools). Pods have no such coupling (one program per chip).
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', NPROC='4')
  os.makedirs(out_dir, exist_ok=True)
  port = _free_port() if num_processes > 1 else 0
  procs = {}
  for process_id in range(num_processes):
    args = [os.path.abspath(__file__), 'worker', port, num_processes, process_id, workdir, shards_dir]
    args += [out_dir, checkpoint_every, cache_dir]
    procs[f'{os.path.basename(out_dir)}{process_id}'] = subprocess.Popen(
      [sys.executable] + [str(a) for a in args],
      env=env,
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
  return procs


def _wait(procs, timeout=600):
  outputs = {}
  for name, proc in procs.items():
    try:
      outputs[name] = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
      for p in procs.values():
        p.kill()
      raise
  for name, proc in procs.items():
    assert proc.returncode == 0, f'{name} failed:\n{outputs[name][-5000:]}'


def _read(out_dir):
  """The run as the test sees it: process 0's record, with the global batches {step: {key: [row hashes in
  global row order]}} put together from every process's rows."""
  runs = [json.loads(open(os.path.join(out_dir, name)).read()) for name in sorted(os.listdir(out_dir))]
  runs.sort(key=lambda r: r['rows'][0])
  stops = [0] + [r['rows'][1] for r in runs]
  assert [r['rows'] for r in runs] == [[a, b] for a, b in zip(stops, stops[1:])]  # the rows tile the batch
  batches = {}
  for run in runs:
    for step, hashes in run['batches'].items():
      for key, rows in hashes.items():
        batches.setdefault(int(step), {}).setdefault(key, []).extend(rows)
  chief = next(r for r in runs if r['process'] == 0)
  return dict(chief, batches=batches, num_files=len(runs))


def _assert_losses_close(history, reference, steps, rtol):
  by_step = {r['step']: r for r in reference}
  assert [r['step'] for r in history] == list(steps)
  for key in LOSSES:
    actual = [r[key] for r in history]
    assert np.all(np.isfinite(actual)), key
    np.testing.assert_allclose(actual, [by_step[s][key] for s in steps], rtol=rtol, atol=rtol, err_msg=key)


# Losses to 1e-6 at every step. Why config.mesh.deterministic: with GSPMD's all-reduces (the default) the
# gradient depends on the collective's summation order (gloo across processes vs XLA's in-process one;
# grad_norm ~1e-3 relative apart at step 1 already, BatchNorm over near-constant channels at width 1/32),
# and Adam turned that into losses 0, 7e-7, 1.6e-6, 6.6e-6, 1.5e-5 (relative) apart at steps 1..5
# (measured before the deterministic mode existed). The fixed-order sums make the two layouts bit-equal.
LOSS_RTOL = 1e-6


def test_two_processes_match_one_process_and_resume_in_one(tmp_path, tiny_shards):
  cache = str(tmp_path / 'jax_cache')
  procs = _launch(4, 1, tmp_path / 'single', tiny_shards, tmp_path / 'single_out', cache_dir=cache)
  procs |= _launch(
    2, 2, tmp_path / 'multi', tiny_shards, tmp_path / 'multi_out', checkpoint_every=RESUME_FROM
  )
  _wait(procs)
  single, multi = _read(tmp_path / 'single_out'), _read(tmp_path / 'multi_out')
  assert (single['devices'], single['processes'], single['num_files']) == (4, 1, 1)
  assert (multi['devices'], multi['processes'], multi['num_files']) == (4, 2, 2)
  steps = range(1, STEPS + 1)
  # The same global batches, bit for bit, row by row (both processes' rows put together).
  assert sorted(single['batches']) == sorted(multi['batches']) == list(steps)
  assert multi['batches'] == single['batches']
  assert len({h for rows in single['batches'][1].values() for h in rows}) > 1  # rows differ from each other
  _assert_losses_close(multi['history'], single['history'], steps, LOSS_RTOL)
  for key in ('grad_norm', 'disc_grad_norm'):  # the gradients too (their norms, to the same 1e-6)
    np.testing.assert_allclose(
      [r[key] for r in multi['history']], [r[key] for r in single['history']], rtol=LOSS_RTOL, err_msg=key
    )

  # Resume the 2-process checkpoint of step RESUME_FROM in ONE process: it continues the same sequence.
  checkpoints = tmp_path / 'multi' / 'checkpoints'
  assert sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit()) == [RESUME_FROM, STEPS]
  shutil.copytree(
    checkpoints, tmp_path / 'resumed' / 'checkpoints', ignore=shutil.ignore_patterns(str(STEPS))
  )
  _wait(_launch(4, 1, tmp_path / 'resumed', tiny_shards, tmp_path / 'resumed_out', cache_dir=cache))
  resumed = _read(tmp_path / 'resumed_out')
  assert resumed['start_step'] == RESUME_FROM
  after = range(RESUME_FROM + 1, STEPS + 1)
  assert resumed['batches'] == {s: single['batches'][s] for s in after}  # the uninterrupted run's batches
  # The restored state is the 2-process run's, and the resumed steps are the uninterrupted runs' (1e-6).
  _assert_losses_close(resumed['history'], multi['history'][RESUME_FROM:], after, LOSS_RTOL)
  _assert_losses_close(resumed['history'], single['history'], after, LOSS_RTOL)


if __name__ == '__main__' and sys.argv[1:2] == ['worker']:
  _worker(*sys.argv[2:])
