"""Training checkpoints: orbax CheckpointManager in `workdir/checkpoints`, one step = several items.

Items per step (each its own orbax item, so a reader can take just one):
  'model'  {'params', 'batch_stats'} of the trained network (expert or generator) -> load_model_variables
  'disc'   {'params'} of the quality discriminator (GAN stage only)
  'train'  everything else in the TrainState: step, optimizer states, sync weight, RNG, ...
  'data'   the grain iterator state of this process (grain's orbax handler, one JSON file per process)
  'meta'   JSON: stage, width_multiplier, img_size, compute_dtype (for readers that build the model)

Owns: the manager (`make_manager`), TrainState <-> items, `save` / `restore_latest` (with the corrupt-step
fallback), the reader other tools use (`load_model_variables`, through lipsync_jax.weights), and preemption
(`PreemptionWatch`: SIGTERM -> every process saves at the same step and stops).

Saves are asynchronous (`enable_async_checkpointing`); the last `keep` steps are kept. The frozen expert is
never part of a checkpoint. Restoring walks from the newest step back: a step that fails to restore while an
older one restores fine is treated as corrupt, moved to `workdir/checkpoints_corrupt/<step>` (kept for
inspection, never deleted) and reported with a warning. If every step fails, the newest error is raised
(that is a config mismatch, not corruption).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import time
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from lipsync_jax import fs

CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'checkpoints_corrupt'
MODEL_ITEM, DISC_ITEM, TRAIN_ITEM, DATA_ITEM, META_ITEM = 'model', 'disc', 'train', 'data', 'meta'
_MODEL_FIELDS = ('params', 'batch_stats')
_DISC_FIELDS = {'disc_params': 'params'}
# Which item holds which network, for load_model_variables(workdir, which).
_WHICH = {
  'expert': (MODEL_ITEM, ('expert',)),
  'generator': (MODEL_ITEM, ('generator', 'gan')),
  'disc': (DISC_ITEM, ('gan',)),
}


def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
  """The orbax directory of a workdir, made absolute (orbax refuses relative paths, and the README's
  commands pass `--workdir=workdirs/...`); remote paths (gs://...) are left as they are."""
  return fs.path(fs.absolute(workdir)) / CHECKPOINT_DIR


def make_manager(
  workdir: str | os.PathLike, *, keep: int = 3, async_save: bool = True, read_only: bool = False
) -> ocp.CheckpointManager:
  """CheckpointManager over `workdir/checkpoints` with the items above (saving decided by the caller)."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=None if read_only else keep,
    save_interval_steps=0 if read_only else 1,
    create=not read_only,
    read_only=read_only,
    enable_async_checkpointing=async_save,
    cleanup_tmp_directories=not read_only,
  )
  handlers = {
    MODEL_ITEM: ocp.StandardCheckpointHandler(),
    DISC_ITEM: ocp.StandardCheckpointHandler(),
    TRAIN_ITEM: ocp.StandardCheckpointHandler(),
    DATA_ITEM: grain.checkpoint.CheckpointHandler(),
    META_ITEM: ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(
    checkpoint_dir(workdir), item_names=tuple(handlers), item_handlers=handlers, options=options
  )


# ---------------------------------------------------------------------------------------------------------
# TrainState <-> items. TrainState is a flax.struct dataclass; fields are split by name so the stages can
# add fields (e.g. the GAN's disc_opt_state) without this module changing.
# ---------------------------------------------------------------------------------------------------------


def _is_key(x) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_impl(x):
  """The PRNG implementation of a (concrete or abstract) typed key."""
  if isinstance(x, jax.Array):
    return jax.random.key_impl(x)
  return x.dtype._impl  # pylint: disable=protected-access  (abstract keys: jax.ShapeDtypeStruct)


def _keys_to_data(tree):
  """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _array_fields(state) -> dict[str, Any]:
  """The TrainState's pytree fields that hold something (static fields like `settings` and None skipped)."""
  return {
    f.name: getattr(state, f.name)
    for f in dataclasses.fields(state)
    if f.metadata.get('pytree_node', True) and getattr(state, f.name) is not None
  }


def split_state(state) -> dict[str, dict[str, Any]]:
  """TrainState -> {'model': {...}, 'disc': {...} (GAN only), 'train': {...}} of arrays."""
  fields = _array_fields(state)
  items = {MODEL_ITEM: {k: fields.pop(k) for k in _MODEL_FIELDS if k in fields}}
  disc = {short: fields.pop(name) for name, short in _DISC_FIELDS.items() if name in fields}
  if disc:
    items[DISC_ITEM] = disc
  items[TRAIN_ITEM] = _keys_to_data(fields)
  return items


def merge_state(template, items: dict[str, dict[str, Any]]):
  """Inverse of split_state; `template` (a concrete or abstract TrainState) tells which leaves are keys."""
  fields = dict(items[TRAIN_ITEM])
  fields.update(items[MODEL_ITEM])
  for name, short in _DISC_FIELDS.items():
    if DISC_ITEM in items and short in items[DISC_ITEM]:
      fields[name] = items[DISC_ITEM][short]
  for name, ref in _array_fields(template).items():
    fields[name] = jax.tree.map(
      lambda r, v: jax.random.wrap_key_data(v, impl=_key_impl(r)) if _is_key(r) else v, ref, fields[name]
    )
  return template.replace(**fields)


def _abstract_items(abstract_state, shardings) -> dict[str, Any]:
  """ShapeDtypeStructs (with shardings) per item: the restore targets."""

  def to_struct(x, s):
    if _is_key(x):
      shape = jax.eval_shape(jax.random.key_data, x).shape
      return jax.ShapeDtypeStruct(shape, np.uint32, sharding=s)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

  return split_state(jax.tree.map(to_struct, abstract_state, shardings))


# ---------------------------------------------------------------------------------------------------------
# Save / restore.
# ---------------------------------------------------------------------------------------------------------


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict) -> bool:
  """Starts an (async) save of the train state, the data iterator state and meta at `step`."""
  items = split_state(state)
  args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
  if data_iterator is not None:
    args[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
  args[META_ITEM] = ocp.args.JsonSave(dict(meta, step=int(step)))
  saved = manager.save(int(step), args=ocp.args.Composite(**args), force=True)
  if saved:
    logging.info(
      'checkpoint: saving step %d to %s (async=%s)',
      step,
      manager.directory,
      manager._options.enable_async_checkpointing,
    )  # pylint: disable=protected-access
  return saved


def _restore_step(manager, step, abstract_state, shardings, data_iterator):
  targets = _abstract_items(abstract_state, shardings)
  args = {name: ocp.args.StandardRestore(t) for name, t in targets.items()}
  if data_iterator is not None:
    args[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  items = {name: restored[name] for name in targets}
  for leaf in jax.tree.leaves(items):  # surface read errors (truncated files) here, not at first use
    leaf.block_until_ready()
  return merge_state(abstract_state, items)


def restore_latest(manager: ocp.CheckpointManager, workdir, abstract_state, shardings, data_iterator=None):
  """Restores the newest readable step -> (state, step) or (None, None) when there is no checkpoint.

  Newer steps that fail while an older one restores are moved to workdir/checkpoints_corrupt/ with a
  warning. The data iterator (if given) is restored in place.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None, None
  failures = []
  for step in steps:
    try:
      state = _restore_step(manager, step, abstract_state, shardings, data_iterator)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning(
        'checkpoint: step %d in %s could not be restored (%s: %s); trying the previous step.',
        step,
        manager.directory,
        type(e).__name__,
        e,
      )
      failures.append((step, e))
      continue
    if failures:
      _quarantine(manager, workdir, [s for s, _ in failures])
    return state, step
  step, err = failures[0]
  raise RuntimeError(
    f'No checkpoint in {manager.directory} could be restored (steps {steps}); the newest (step {step}) '
    f'failed with {type(err).__name__}: {err}. If the config changed (width, image size, stage) since '
    'these were written, use a new --workdir.'
  ) from err


def _quarantine(manager, workdir, steps) -> None:
  """Moves unreadable steps out of the manager's directory (kept for inspection) so training can go on."""
  if jax.process_index() == 0:
    dest_root = fs.path(workdir) / CORRUPT_DIR
    fs.makedirs(dest_root)
    for step in steps:
      src = manager.directory / str(step)
      dest = dest_root / f'{step}-{int(time.time())}'
      shutil.move(os.fspath(src), os.fspath(dest))
      logging.warning(
        'checkpoint: step %d is corrupt; moved to %s and resumed from an older step.', step, dest
      )
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('lipsync_jax_checkpoint_quarantine')
  manager.reload()


# ---------------------------------------------------------------------------------------------------------
# Readers for other tools (inference, export, the generator stage's frozen expert).
# ---------------------------------------------------------------------------------------------------------


def _read_meta(manager, workdir, step):
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
      f'No checkpoint under {checkpoint_dir(workdir)}; train first '
      '(python -m lipsync_jax.main --config=... --workdir=...).'
    )
  meta = manager.restore(step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))[META_ITEM]
  return dict(meta), step


def load_model_variables(
  workdir: str | os.PathLike, which: str = 'generator', step: int | None = None
) -> tuple[dict, dict]:
  """Reads only one network's variables from a training workdir's latest (or given) step.

  which: 'expert' (an expert-stage workdir), 'generator' (generator/gan workdir) or 'disc' (gan workdir).
  Returns (variables {'params', 'batch_stats'?} as NumPy arrays, meta incl. stage, width_multiplier,
  img_size, compute_dtype, step).
  """
  if which not in _WHICH:
    raise ValueError(f'which={which!r}; expected one of {sorted(_WHICH)}.')
  item, stages = _WHICH[which]
  with make_manager(workdir, async_save=False, read_only=True) as manager:
    meta, step = _read_meta(manager, workdir, step)
    if meta.get('stage') not in stages:
      raise ValueError(
        f'{workdir} holds a {meta.get("stage")!r}-stage checkpoint; the {which!r} network is '
        f'in a workdir of stage {" / ".join(stages)}.'
      )
    structure = manager.item_metadata(step)[item]
    structure = structure.tree if hasattr(structure, 'tree') else structure
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), structure)
    restored = manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(target)}))
  variables = {k: jax.tree.map(np.asarray, v) for k, v in dict(restored[item]).items() if v}
  return variables, meta


# ---------------------------------------------------------------------------------------------------------
# Preemption.
# ---------------------------------------------------------------------------------------------------------


class PreemptionWatch:
  """SIGTERM (TPU preemption, SLURM/Kubernetes stop) -> every process stops at the same step.

  Multi-process: jax's preemption sync service (it catches SIGTERM itself and agrees on a step across
  hosts); if that service is disabled, our own SIGTERM flag, agreed with an all-gather every step.
  Single process: our own SIGTERM flag. A context manager: leaving it restores the previous handler.
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
    """Whether to save at `step` and stop (the same answer on every process)."""
    if self._use_jax_service:
      self.requested = multihost_utils.reached_preemption_sync_point(step)
      return self.requested
    if jax.process_count() > 1:
      flags = multihost_utils.process_allgather(np.int32(self.requested))
      return bool(np.any(flags))
    return self.requested

  def close(self) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None

  def __enter__(self) -> PreemptionWatch:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
