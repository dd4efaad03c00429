"""The training loop for every stage (expert, generator, gan): one function that reads top to bottom.

Owns `train_and_evaluate(config, workdir)`, in sections: mesh -> data (this process's rows of every
global batch, the rows the mesh puts on its devices; the held-out batches streamed) -> state (init or
resume, the data iterator with it) -> frozen expert -> jitted steps -> loop (train step, log, eval + the
stage's schedule step, checkpoint, preemption). Also `Hooks` (probes for tests and benchmarks),
`TrainResult` and `load_frozen_expert`.

Step s trains on global batch s - 1 of the input pipeline, a pure function of (seed, s - 1): any process
count sees the same global batches, and a checkpoint written by N processes resumes in M.

What a stage computes lives in lipsync_jax.training.stages, metrics buffering / the non-finite check /
throughput / the progress bar in .metrics, checkpoints and preemption in .checkpointing, meshes and
shardings in .sharding. The same program runs on one CPU, an 8-GPU host and a TPU pod; lipsync_jax.main
sets up jax.distributed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers

from lipsync_jax import fs, weights
from lipsync_jax.data import pipeline
from lipsync_jax.training import checkpointing, sharding, stages, summaries
from lipsync_jax.training import metrics as metrics_lib

RANDOM_INIT_EXPERT = 'random-init'


@dataclasses.dataclass(frozen=True)
class Hooks:
  """Probes for tests, benchmarks and tools (all optional); the loop keeps nothing of what they see.

  on_batch(step, local_batch)  before each train step: this process's host batch (NumPy arrays)
  on_log(step, rows)           at each log step: the per-step rows since the previous log,
                               [{'step': s, metric: float}] (every process)
  on_eval(step, row)           after each evaluation: {eval metric: mean, stage schedule scalar: value}
  """

  on_batch: Callable[[int, Any], None] | None = None
  on_log: Callable[[int, list[dict[str, float]]], None] | None = None
  on_eval: Callable[[int, dict[str, float]], None] | None = None


@dataclasses.dataclass
class TrainResult:
  """What a run did, in O(1) (per-step figures go to TensorBoard and to Hooks)."""

  step: int = 0
  start_step: int = 0
  preempted: bool = False
  steps_per_sec: float = 0.0  # over the run, excluding the first (compiling) step
  last_train: dict[str, float] = dataclasses.field(default_factory=dict)  # means at the last log step
  last_eval: dict[str, float] = dataclasses.field(default_factory=dict)  # the last evaluation's row


def resolve_shards_dir(config: ml_collections.ConfigDict) -> str:
  """config.data.shards_dir, or the built-in demo corpus (built into the cache dir on first use)."""
  if config.data.shards_dir:
    return str(config.data.shards_dir)
  from lipsync_jax.data import demo  # pylint: disable=import-outside-toplevel  (builds videos: heavy)

  return demo.ensure_demo_shards(
    num_clips=config.data.demo_num_clips,
    img_size=config.data.img_size,
    frame_size=config.data.demo_frame_size,
  )


def load_frozen_expert(config: ml_collections.ConfigDict) -> tuple[Any, str]:
  """The frozen expert of the generator stages as NumPy arrays -> (variables, where they came from).

  config.expert_checkpoint: anything lipsync_jax.weights.load reads as a 'syncnet' (an expert training
  workdir, a variables dir, an official lipsync_expert.pth), or 'random-init' (smoke tests only).
  """
  source = str(config.expert_checkpoint)
  if not source:
    raise ValueError(
      f'Stage {config.stage!r} trains against a frozen lip-sync expert, but config.expert_checkpoint is '
      'empty. Train one first (python -m lipsync_jax.main --config=configs/expert.py:demo '
      '--workdir=workdirs/expert) and pass --config.expert_checkpoint=workdirs/expert (or an official '
      f"lipsync_expert.pth, or {RANDOM_INIT_EXPERT!r} for a smoke test)."
    )
  if source == RANDOM_INIT_EXPERT:
    logging.warning(
      'Using a RANDOMLY INITIALISED expert (config.expert_checkpoint=%r): the sync loss is '
      'meaningless; for smoke tests only.',
      RANDOM_INIT_EXPERT,
    )
    return stages.random_expert_variables(config), RANDOM_INIT_EXPERT
  variables, meta = weights.load(source, 'syncnet')
  step = f', step {meta["step"]}' if 'step' in meta else ''
  return variables, f'{meta["source"]} (width x{meta["width_multiplier"]:g}{step})'


def _validate(config: ml_collections.ConfigDict) -> None:
  for key in ('num_train_steps', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    if int(config[key]) <= 0:
      raise ValueError(f'config.{key}={config[key]} must be a positive number of steps.')


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  stage: stages.Stage | None = None,
  data: Any = None,
  hooks: Hooks | None = None,
) -> TrainResult:
  """Trains `config.stage` in `workdir` (resuming from its checkpoints) and returns a TrainResult.

  `stage` defaults to stages.get_stage(config.stage), `data` (anything with make_train_iterator and
  make_eval_batches) to lipsync_jax.data.pipeline; tests pass stand-ins, and `hooks` to watch the run.
  """
  _validate(config)
  stage = stage or stages.get_stage(config.stage)
  data = data or pipeline
  hooks = hooks or Hooks()
  workdir = os.fspath(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    fs.makedirs(workdir)
    with fs.open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  result = TrainResult()
  with contextlib.ExitStack() as cleanup:  # closed in reverse: metrics, preemption, checkpoints, data, writer
    # TensorBoard on the chief only; the console gets the loop's own lines (no per-scalar echo).
    writer = (
      metric_writers.AsyncMultiWriter([summaries.SummaryWriter(workdir)])
      if is_chief
      else metric_writers.MultiWriter([])
    )
    cleanup.callback(writer.close)

    # ---------------------------------------------------------------------------------------- mesh ----
    mesh = sharding.make_mesh(config.mesh)
    global_batch = int(config.data.global_batch_size)
    sharding.check_global_batch_size(global_batch, mesh)
    batch_rows = sharding.process_batch_rows(mesh, global_batch)  # what this process's devices hold
    logging.info(
      '%s; global batch %d (this process: rows %d..%d)', sharding.describe(mesh), global_batch, *batch_rows
    )

    # ---------------------------------------------------------------------------------------- data ----
    # The pipeline draws each global batch from one seeded global order and materialises only `batch_rows`.
    shards_dir = resolve_shards_dir(config)
    train_iter = data.make_train_iterator(
      shards_dir,
      config.data.train_split,
      stage.data_mode,
      global_batch,
      config.seed,
      rows=batch_rows,
      img_size=config.data.img_size,
      worker_count=config.data.worker_count,
    )
    cleanup.callback(getattr(train_iter, 'close', lambda: None))  # worker processes, prefetch threads
    eval_batches = (
      data.make_eval_batches(
        shards_dir,
        config.data.eval_split,
        stage.data_mode,
        global_batch,
        config.eval_batches,
        seed=config.seed,
        rows=batch_rows,
        img_size=config.data.img_size,
      )
      if config.eval_batches > 0
      else []
    )
    logging.info(
      'data: %s (train split %r, eval split %r: %d batches, streamed)',
      shards_dir,
      config.data.train_split,
      config.data.eval_split,
      len(eval_batches),
    )

    # ------------------------------------------------------------------------ state: init or resume ----
    init_fn = lambda rng: stage.init(config, rng)  # pylint: disable=unnecessary-lambda-assignment
    rng = jax.random.key(config.seed)
    abstract_state = jax.eval_shape(init_fn, rng)
    state_shardings = sharding.state_shardings(abstract_state, mesh, config.mesh.param_sharding)
    sharding.log_state_layout(state_shardings)
    manager = checkpointing.make_manager(
      workdir, keep=config.keep_checkpoints, async_save=config.async_checkpointing
    )
    cleanup.callback(manager.close)
    cleanup.callback(manager.wait_until_finished)
    state, start_step = checkpointing.restore_latest(
      manager, workdir, abstract_state, state_shardings, train_iter
    )
    if state is None:
      state, start_step = jax.jit(init_fn, out_shardings=state_shardings)(rng), 0
      logging.info('state: initialised %s (seed %d)', stage.name, config.seed)
    else:
      logging.info('state: resumed from %s at step %d', manager.directory, start_step)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state.params))
    logging.info(
      '%s model: %s parameters (width x%s, %s)',
      stage.name,
      f'{num_params:,}',
      config.model.width_multiplier,
      config.model.compute_dtype,
    )
    meta = {
      'stage': stage.name,
      'width_multiplier': float(config.model.width_multiplier),
      'img_size': int(config.data.img_size),
      'compute_dtype': str(config.model.compute_dtype),
      'config': json.loads(config.to_json_best_effort()),
    }

    # --------------------------------------------------- frozen expert (an argument, never trained) ----
    expert = None
    if stage.needs_expert:
      host_expert, source = load_frozen_expert(config)
      expert = sharding.put_replicated(host_expert, mesh)
      logging.info('frozen expert: %s', source)

    # ---------------------------------------------------------------------------------- jitted steps ----
    replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    step_in = (state_shardings, batch_sharding, replicated)
    # config.mesh.deterministic: per device, fixed-order sums over devices (lipsync_jax.replicas).
    jit_step = dict(
      mesh=mesh,
      state_shardings=state_shardings,
      deterministic=bool(config.mesh.deterministic),
      param_sharding=config.mesh.param_sharding,
    )
    train_step = sharding.jit_train_step(stage.train_step, **jit_step)
    # Loop steps 1..warmup_steps run the stage's warm-up program if it has one (gan: G alone while the
    # discriminator is off), picked on the host from the Python step number; each compiles on first use.
    warmup_fn = getattr(stage, 'warmup_train_step', None)  # stand-in stages may lack the two fields
    warmup_steps = int(stage.warmup_steps(config)) if warmup_fn is not None else 0
    warmup_step = sharding.jit_train_step(warmup_fn, **jit_step) if warmup_steps > 0 else None
    eval_step = sharding.jit_eval_step(stage.eval_step, **jit_step)
    if config.mesh.deterministic:
      logging.info(
        'steps: per device, sums over the %d devices in a fixed order (config.mesh.deterministic)',
        sharding.num_batch_shards(mesh),
      )
    sample_grid = jax.jit(stage.sample_grid, in_shardings=step_in, out_shardings=replicated)

    def evaluate(state, step: int):
      """Means over the held-out batches (streamed), sample grids of the first, then the stage's schedule."""
      sums = None
      for i, local in enumerate(eval_batches):
        batch = sharding.shard_batch(local, mesh)
        step_metrics = eval_step(state, batch, expert)
        sums = step_metrics if sums is None else jax.tree.map(lambda a, b: a + b, sums, step_metrics)
        if i == 0:
          grid = np.asarray(jax.device_get(sample_grid(state, batch, expert)))
          writer.write_images(step, {'samples': np.clip(grid[: config.sample_grid_rows], 0.0, 1.0)})
      means = {k: float(np.asarray(v)) / len(eval_batches) for k, v in jax.device_get(sums).items()}
      state, scheduled = stage.schedule_update(state, means, config)
      state = sharding.reshard(state, state_shardings)
      writer.write_scalars(step, {f'eval/{k}': v for k, v in means.items()})
      logging.info(
        'eval @ step %d: %s',
        step,
        ', '.join(f'{k}={v:.4f}' for k, v in sorted(means.items()))
        + ''.join(f'; {k}={v:g}' for k, v in sorted(scheduled.items())),
      )
      return state, {**means, **scheduled}

    # ------------------------------------------------------------------------------------------ loop ----
    num_steps = int(config.num_train_steps)
    preemption = cleanup.enter_context(checkpointing.PreemptionWatch())
    metrics = cleanup.enter_context(
      metrics_lib.TrainMetrics(
        start_step=start_step,
        num_steps=num_steps,
        global_batch=global_batch,
        writer=writer,
        progress=is_chief,
      )
    )
    last_saved = start_step or None
    result.start_step = step = start_step
    if start_step >= num_steps:
      logging.info('Nothing to do: checkpoint step %d >= num_train_steps %d.', start_step, num_steps)
    for step in range(start_step + 1, num_steps + 1):
      with metrics.timed('data'):
        local = next(train_iter)
      if hooks.on_batch:
        hooks.on_batch(step, local)
      step_fn = warmup_step if step <= warmup_steps else train_step
      state, step_metrics = step_fn(state, sharding.shard_batch(local, mesh), expert)
      metrics.add(step, step_metrics)
      preempted = preemption.should_stop(step)
      is_last = step == num_steps

      if step % config.log_every_steps == 0 or is_last or preempted:
        rows = metrics.log(step, stage.scalars(config), last_saved)
        if hooks.on_log:
          hooks.on_log(step, rows)

      if eval_batches and (step % config.eval_every_steps == 0 or is_last):
        with metrics.timed('eval'):
          state, result.last_eval = evaluate(state, step)
        if hooks.on_eval:
          hooks.on_eval(step, result.last_eval)

      if step % config.checkpoint_every_steps == 0 or is_last or preempted:
        metrics.fetch(last_saved)  # never save a state whose step had a non-finite loss
        with metrics.timed('checkpoint'):
          checkpointing.save(manager, step, state, train_iter, meta)
        last_saved = step

      if preempted:
        logging.warning(
          'Preempted: checkpoint at step %d written to %s; exiting cleanly.', step, manager.directory
        )
        result.preempted = True
        break
    result.step, result.last_train = step, metrics.last_means
  result.steps_per_sec = metrics.steps_per_sec(result.step)  # after the last checkpoint write finished
  return result
