"""The training loop for every stage (expert, generator, gan): one readable function, in sections.

  mesh -> data (this process's slice) -> state (init or resume) -> frozen expert -> jitted steps -> loop:
  train step, metrics, eval + sync-weight schedule + sample grids, checkpoints, preemption.

The same program runs on one CPU, an 8-GPU host and a TPU pod; lipsync_jax.main sets up jax.distributed.
What a stage computes lives in lipsync_jax.training.stages; this file only moves data, state and metrics around.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions
from etils import epath
from jax.experimental import multihost_utils

from lipsync_jax.training import checkpointing, sharding

COMPUTE_DTYPES = ('float32', 'bfloat16')
RANDOM_INIT_EXPERT = 'random-init'
_BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
_backend_compiles = [0]  # XLA compilations in this process (a jax.monitoring listener counts them)


def _count_compiles(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == _BACKEND_COMPILE_EVENT:
    _backend_compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


class NonFiniteLossError(FloatingPointError):
  """A training loss became NaN/inf; raised before anything from that step on is saved."""


@dataclasses.dataclass
class TrainResult:
  """What a run did (for tests, benchmarks and callers; TensorBoard has the same numbers)."""
  step: int = 0
  start_step: int = 0
  preempted: bool = False
  train_history: list = dataclasses.field(default_factory=list)  # per step: {'step', metric: float}
  eval_history: list = dataclasses.field(default_factory=list)  # per eval: {'step', metric: float}
  batch_checksums: list = dataclasses.field(default_factory=list)  # per step: (step, sum of local batch)
  compiles_by_step: dict = dataclasses.field(default_factory=dict)  # step -> XLA compiles during it
  steps_per_sec: float = 0.0  # over the run, excluding the first (compiling) step


# ---------------------------------------------------------------------------------------------------------
# Helpers: data source, frozen expert, preemption, metrics.
# ---------------------------------------------------------------------------------------------------------

def resolve_shards_dir(config) -> str:
  """config.data.shards_dir, or the built-in demo corpus (built into the cache dir on first use)."""
  if config.data.shards_dir:
    return str(config.data.shards_dir)
  from lipsync_jax.data import demo as demo_data  # pylint: disable=g-import-not-at-top
  return demo_data.ensure_demo_shards(num_clips=config.data.demo_num_clips, img_size=config.data.img_size)


def _expert_shapes(config):
  """Abstract SyncNet variables at the config's expert width (for shape checks and random init)."""
  from lipsync_jax.training import stages  # pylint: disable=g-import-not-at-top
  settings = stages.StageSettings.from_config(config, config.stage)
  width = settings.expert_width_multiplier or settings.width_multiplier
  model = stages.expert_model(settings, width)
  return model, stages.dummy_expert_inputs(settings)


def load_expert_variables(config) -> tuple[Any, str]:
  """The frozen expert for the generator stages, as host (NumPy) arrays -> (variables, description).

  config.expert_checkpoint: an official Wav2Lip `.pth` (lipsync_jax.convert.load_torch_checkpoint), a
  lipsync_jax variables dir (lipsync_jax.convert.save_variables), an expert training workdir, or
  'random-init' (smoke tests only).
  """
  source = str(config.expert_checkpoint)
  if not source:
    raise ValueError(
        f'Stage {config.stage!r} trains against a frozen lip-sync expert, but config.expert_checkpoint is '
        "empty. Train one first (python -m lipsync_jax.main --config=configs/expert.py:demo "
        '--workdir=workdirs/expert) and pass --config.expert_checkpoint=workdirs/expert (or an official '
        "lipsync_expert.pth, or 'random-init' for a smoke test).")
  if source == RANDOM_INIT_EXPERT:
    model, dummy = _expert_shapes(config)
    variables = model.init(jax.random.key(config.seed + 1), *dummy, train=False)  # eager: no compile
    logging.warning('Using a RANDOMLY INITIALISED expert (config.expert_checkpoint=%r): the sync loss is '
                    'meaningless; for smoke tests only.', RANDOM_INIT_EXPERT)
    return jax.device_get(variables), 'random-init'
  path = epath.Path(source)
  if not path.exists():
    raise FileNotFoundError(f'config.expert_checkpoint={source!r} does not exist; give an expert training '
                            'workdir, a lipsync_jax variables dir or an official .pth file.')
  from lipsync_jax import convert  # pylint: disable=g-import-not-at-top
  if path.is_file():
    if path.suffix not in ('.pth', '.pt', '.tar'):
      raise ValueError(f'config.expert_checkpoint={source!r}: expected a PyTorch .pth file or a directory.')
    return convert.load_torch_checkpoint(os.fspath(path), 'syncnet'), f'official checkpoint {path}'
  if (path / checkpointing.CHECKPOINT_DIR).exists():
    variables, meta = checkpointing.load_model_variables(path, 'expert')
    return variables, f'expert workdir {path} (step {meta["step"]})'
  variables, meta = convert.load_variables(os.fspath(path))
  if meta.get('kind') not in (None, 'syncnet'):
    raise ValueError(f'config.expert_checkpoint={source!r} holds {meta.get("kind")!r} variables; '
                     'the generator stages need a syncnet (expert).')
  return variables, f'variables dir {path}'


class PreemptionWatch:
  """SIGTERM (TPU preemption, SLURM/Kubernetes stop) -> every process stops at the same step.

  Multi-process: jax's preemption sync service (it catches SIGTERM itself and agrees on a step across
  hosts); if that service is disabled, our own SIGTERM flag, agreed with an all-gather every step.
  Single process: our own SIGTERM flag.
  """

  def __init__(self):
    self.requested = False
    self._use_jax_service = False
    self._previous_handler = None
    if jax.process_count() > 1:
      try:
        multihost_utils.reached_preemption_sync_point(0)
        self._use_jax_service = True
      except RuntimeError:
        pass
    if not self._use_jax_service:
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the end of this step, then exiting.')
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if self._use_jax_service:
      self.requested = multihost_utils.reached_preemption_sync_point(step)
      return self.requested
    if jax.process_count() > 1:
      flags = multihost_utils.process_allgather(np.int32(self.requested))
      return bool(np.any(flags))
    return self.requested

  def close(self):
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)


def _fetch_and_check(pending: list, last_saved_step: int | None) -> list[dict]:
  """Device metrics of the steps since the last fetch -> host floats; raises on the first non-finite loss."""
  host = jax.device_get(pending)
  rows = []
  for step, metrics in host:
    row = {k: float(np.asarray(v)) for k, v in metrics.items()}
    bad = [k for k, v in row.items() if not np.isfinite(v)]
    if bad:
      raise NonFiniteLossError(
          f'Non-finite training metric(s) {bad} at step {step}: {row}. Nothing from step {step} on was '
          f'saved; the last good checkpoint is step {last_saved_step}. Lower config.optimizer.lr, set '
          'config.optimizer.grad_clip, or check the data, then rerun with the same --workdir to resume.')
    rows.append(dict(row, step=step))
  pending.clear()
  return rows


def _mean_rows(rows: list[dict]) -> dict[str, float]:
  keys = [k for k in rows[0] if k != 'step']
  return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def _reshard(tree, shardings):
  """Leaves whose sharding differs from the target (e.g. a new sync weight from schedule_update) -> put."""
  def put(x, s):
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(s, x.ndim):
      return x
    value = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(value.shape, s, lambda idx: value[idx])
  return jax.tree.map(put, tree, shardings)


def _validate(config) -> None:
  if config.model.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f'config.model.compute_dtype={config.model.compute_dtype!r}; use one of '
                     f'{COMPUTE_DTYPES}.')
  for key in ('num_train_steps', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    if int(config[key]) <= 0:
      raise ValueError(f'config.{key}={config[key]} must be a positive number of steps.')


# ---------------------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, stage=None,
                       data=None, record_batch_checksums: bool = False) -> TrainResult:
  """Trains `config.stage` in `workdir` (resuming from its checkpoints) and returns a TrainResult.

  `stage` (a stages.Stage) and `data` (a module-like object with make_train_iterator / make_eval_batches)
  default to lipsync_jax.training.stages.get_stage(config.stage) and lipsync_jax.data.pipeline.
  `record_batch_checksums` records a per-step sum of each local batch in the result (for tests that
  prove resumed runs see the same data; it costs a host pass over every batch, so it is off by default).
  """
  _validate(config)
  if stage is None:
    from lipsync_jax.training import stages  # pylint: disable=g-import-not-at-top
    stage = stages.get_stage(config.stage)
  if data is None:
    data = importlib.import_module('lipsync_jax.data.pipeline')
  workdir = os.fspath(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    (epath.Path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief, asynchronous=True)
  result = TrainResult()

  # ------------------------------------------------------------------------------------------ mesh ----
  mesh = sharding.make_mesh(config.mesh)
  global_batch = int(config.data.global_batch_size)
  local_batch = sharding.check_global_batch_size(global_batch, mesh)
  logging.info('%s; global batch %d (%d per process)', sharding.describe(mesh), global_batch, local_batch)

  # ------------------------------------------------------------------------------------------ data ----
  shards_dir = resolve_shards_dir(config)
  proc = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = data.make_train_iterator(
      shards_dir, config.data.train_split, stage.data_mode, global_batch, config.seed,
      img_size=config.data.img_size, worker_count=config.data.worker_count, **proc)
  eval_batches = data.make_eval_batches(
      shards_dir, config.data.eval_split, stage.data_mode, global_batch, config.eval_batches,
      seed=config.seed, img_size=config.data.img_size, **proc) if config.eval_batches > 0 else []
  logging.info('data: %s (train split %r, eval split %r: %d batches)', shards_dir,
               config.data.train_split, config.data.eval_split, len(eval_batches))

  # ------------------------------------------------------------------------ state: init or resume ----
  init_fn = lambda rng: stage.init(config, rng)  # pylint: disable=unnecessary-lambda-assignment
  rng = jax.random.key(config.seed)
  abstract_state = jax.eval_shape(init_fn, rng)
  state_shardings = sharding.state_shardings(abstract_state, mesh, config.mesh.param_sharding)
  sharding.log_state_layout(state_shardings)
  manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints,
                                       async_save=config.async_checkpointing)
  state, start_step = checkpointing.restore_latest(manager, workdir, abstract_state, state_shardings,
                                                   train_iter)
  if state is None:
    state = jax.jit(init_fn, out_shardings=state_shardings)(rng)
    start_step = 0
    logging.info('state: initialised %s (seed %d)', stage.name, config.seed)
  else:
    logging.info('state: resumed from %s at step %d', manager.directory, start_step)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state.params))
  logging.info('%s model: %s parameters (width x%s, %s)', stage.name, f'{num_params:,}',
               config.model.width_multiplier, config.model.compute_dtype)
  meta = {'stage': stage.name, 'width_multiplier': float(config.model.width_multiplier),
          'img_size': int(config.data.img_size), 'compute_dtype': str(config.model.compute_dtype),
          'config': json.loads(config.to_json_best_effort())}

  # ----------------------------------------------------- frozen expert (argument, never trained) ----
  replicated = sharding.replicated(mesh)
  expert = None
  if stage.needs_expert:
    host_expert, source = load_expert_variables(config)
    expert = sharding.put_replicated(host_expert, mesh)
    logging.info('frozen expert: %s', source)

  # ------------------------------------------------------------------------------ jitted steps ----
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(stage.train_step, in_shardings=(state_shardings, batch_sharding, replicated),
                       out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  eval_step = jax.jit(stage.eval_step, in_shardings=(state_shardings, batch_sharding, replicated),
                      out_shardings=replicated)
  sample_grid = jax.jit(stage.sample_grid, in_shardings=(state_shardings, batch_sharding, replicated),
                        out_shardings=replicated)

  def evaluate(state, step):
    sums = None
    for local in eval_batches:
      metrics = eval_step(state, sharding.shard_batch(local, mesh), expert)
      sums = metrics if sums is None else jax.tree.map(lambda a, b: a + b, sums, metrics)
    means = {k: float(np.asarray(v)) / len(eval_batches) for k, v in jax.device_get(sums).items()}
    state = _reshard(stage.schedule_update(state, means, config), state_shardings)
    sync_wt = float(np.asarray(jax.device_get(state.sync_wt)))
    writer.write_scalars(step, {f'eval/{k}': v for k, v in means.items()})
    grid = np.asarray(jax.device_get(sample_grid(state, sharding.shard_batch(eval_batches[0], mesh),
                                                 expert)))
    writer.write_images(step, {'samples': np.clip(grid[:config.sample_grid_rows], 0.0, 1.0)})
    logging.info('eval @ step %d: %s; sync_wt=%g', step,
                 ', '.join(f'{k}={v:.4f}' for k, v in sorted(means.items())), sync_wt)
    result.eval_history.append(dict(means, step=step, sync_wt=sync_wt))
    return state

  # ---------------------------------------------------------------------------------------- loop ----
  num_steps = int(config.num_train_steps)
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=config.log_every_steps, every_secs=None)
  preemption = PreemptionWatch()
  pending: list = []  # (step, device metrics) not fetched yet
  unlogged: list = []  # fetched host rows not written yet
  last_saved = start_step if start_step else None
  log_t0, log_step0, run_t0 = time.perf_counter(), start_step, None
  result.start_step = step = start_step
  if start_step >= num_steps:
    logging.info('Nothing to do: checkpoint step %d >= num_train_steps %d.', start_step, num_steps)
  try:
    for step in range(start_step + 1, num_steps + 1):
      compiles_before = _backend_compiles[0]
      with report.timed('data', wait_jax_async_dispatch=False):
        local = next(train_iter)
      if record_batch_checksums:  # off by default: a full host pass over the batch every step
        result.batch_checksums.append(
            (step, float(sum(np.asarray(v, np.float64).sum() for v in jax.tree.leaves(local)))))
      state, metrics = train_step(state, sharding.shard_batch(local, mesh), expert)
      pending.append((step, metrics))
      if step == start_step + 1:
        jax.block_until_ready(metrics)  # compile time stays out of the steps/s figures
        run_t0, log_t0, log_step0 = time.perf_counter(), time.perf_counter(), step
      report(step)
      preempted = preemption.should_stop(step)
      is_last = step == num_steps

      if step % config.log_every_steps == 0 or is_last or preempted:
        unlogged.extend(_fetch_and_check(pending, last_saved))
        rows, unlogged = unlogged, []
        now = time.perf_counter()
        steps_per_sec = (step - log_step0) / max(now - log_t0, 1e-9) if step > log_step0 else 0.0
        log_t0, log_step0 = now, step
        result.train_history.extend(rows)
        scalars = {f'train/{k}': v for k, v in _mean_rows(rows).items()}
        scalars.update({'train/lr': float(config.optimizer.lr), 'train/steps_per_sec': steps_per_sec,
                        'train/samples_per_sec': steps_per_sec * global_batch})
        if 'train/sync_wt' not in scalars:  # stages that do not report it as a metric
          scalars['train/sync_wt'] = float(np.asarray(jax.device_get(state.sync_wt)))
        if stage.name == 'gan':
          scalars['train/disc_lr'] = float(config.optimizer.disc_lr)
        writer.write_scalars(step, scalars)
        logging.info('step %d/%d: %s | %.2f steps/s, %.1f samples/s', step, num_steps,
                     ', '.join(f'{k}={v:.4f}' for k, v in sorted(_mean_rows(rows).items())),
                     steps_per_sec, steps_per_sec * global_batch)

      if eval_batches and (step % config.eval_every_steps == 0 or is_last):
        with report.timed('eval'):
          state = evaluate(state, step)

      if step % config.checkpoint_every_steps == 0 or is_last or preempted:
        unlogged.extend(_fetch_and_check(pending, last_saved))  # never save a bad state
        with report.timed('checkpoint', wait_jax_async_dispatch=False):
          checkpointing.save(manager, step, state, train_iter, meta)
        last_saved = step

      result.compiles_by_step[step] = _backend_compiles[0] - compiles_before
      if preempted:
        logging.warning('Preempted: checkpoint at step %d written to %s; exiting cleanly.', step,
                        manager.directory)
        result.preempted = True
        break
    result.step = step
  finally:
    preemption.close()
    manager.wait_until_finished()
    manager.close()
    writer.flush()
    writer.close()
  if run_t0 is not None and step > result.start_step + 1:
    result.steps_per_sec = (step - result.start_step - 1) / (time.perf_counter() - run_t0)
  return result
