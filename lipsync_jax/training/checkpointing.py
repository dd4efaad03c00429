"""Training checkpoints: orbax CheckpointManager in `workdir/checkpoints`, one step = several items.

Items per step (each its own orbax item, so a reader can take just one):
  'model'  {'params', 'batch_stats'} of the trained network (expert or generator) -> load_model_variables
  'disc'   {'params'} of the quality discriminator (GAN stage only)
  'train'  everything else in the TrainState: step, optimizer states, sync weight, RNG, ...
  'data'   JSON: the input iterator's `get_state()`, one file for all processes (the pipeline's state is
           process-count invariant, so a step written by N processes resumes in M); restored with
           `set_state`. Steps written by grain's per-process handler (process_<i>-of-<n>.json) still
           restore with the same process count.
  'meta'   JSON: stage, width_multiplier, img_size, compute_dtype (for readers that build the model)

Owns: the manager (`make_manager`), TrainState <-> items, `save` / `restore_latest`, the step checks
(`verify_step`, `classify_error`), the reader other tools use (`load_model_variables`, through
lipsync_jax.weights), and preemption (`PreemptionWatch`: SIGTERM -> every process saves at the same step
and stops).

Saves are asynchronous (`enable_async_checkpointing`); the last `keep` steps are kept. The frozen expert is
never part of a checkpoint.

Restoring never throws progress away on a guess. Process 0 walks the steps from the newest and checks each
one's files through lipsync_jax.fs and tensorstore (`verify_step`: _CHECKPOINT_METADATA, each item's
_METADATA / JSON, the OCDBT manifest and every B-tree node and array byte range it references, present
and long enough), then compares the chosen step's array shapes with the model being trained. Errors are
classified (`classify_error`):
  corrupt    the files are verifiably broken (missing, truncated, undecodable): the step is moved to
             `workdir/checkpoints_corrupt/<step>-<time>` (fs.move: works on gs://; kept for inspection,
             never deleted) and the previous step is checked;
  transient  OSError / connection errors / timeouts, tensorstore UNAVAILABLE / DEADLINE_EXCEEDED / ...:
             retried with exponential backoff (RETRIES tries from BACKOFF_S), then a loud error naming the
             step; nothing is moved;
  mismatch   shapes or items differ from the model being trained: a loud error saying to use a new
             --workdir; nothing is moved.
Process 0 broadcasts its decision (the step, or the failure); every process then restores that step with
the item handlers directly and all agree on the outcome with an all-gather (a transient failure on any
process is retried by all; any other failure makes every process raise), so no process waits for one
that failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from lipsync_jax import fs

CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'checkpoints_corrupt'
MODEL_ITEM, DISC_ITEM, TRAIN_ITEM, DATA_ITEM, META_ITEM = 'model', 'disc', 'train', 'data', 'meta'
# Restoring: tries of an operation that fails with a transient error, and the first wait (then doubled).
RETRIES = 5
BACKOFF_S = 1.0
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
    DATA_ITEM: ocp.JsonCheckpointHandler(),
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
# Save.
# ---------------------------------------------------------------------------------------------------------


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict) -> bool:
  """Starts an (async) save of the train state, the data iterator state and meta at `step`.

  `data_iterator.get_state()` must be JSON-able and the same on every process (process 0 writes it).
  """
  items = split_state(state)
  args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
  if data_iterator is not None:
    args[DATA_ITEM] = ocp.args.JsonSave(data_iterator.get_state())
  args[META_ITEM] = ocp.args.JsonSave(dict(meta, step=int(step)))
  saved = manager.save(int(step), args=ocp.args.Composite(**args), force=True)
  if saved:
    logging.info(
      'checkpoint: saving step %d to %s (async=%s)',
      step,
      manager.directory,
      manager._options.enable_async_checkpointing,  # pylint: disable=protected-access
    )
  return saved


# ---------------------------------------------------------------------------------------------------------
# Errors and their classes.
# ---------------------------------------------------------------------------------------------------------


class CheckpointCorruptError(RuntimeError):
  """A step's files are verifiably broken (missing, truncated, undecodable)."""


class CheckpointMismatchError(RuntimeError):
  """A step does not fit the model being trained (items, tree structure or shapes differ)."""


class CheckpointUnavailableError(RuntimeError):
  """Storage kept failing with transient errors after every retry."""


CORRUPT, TRANSIENT, MISMATCH, ERROR = 'corrupt', 'transient', 'mismatch', 'error'
# tensorstore (orbax's array I/O) raises ValueError('<STATUS>: ...'); these statuses are storage trouble
# that may pass. DATA_LOSS / OUT_OF_RANGE / NOT_FOUND mean the files the checkpoint itself references are
# damaged or gone (they count as corruption only where this module reads the step's own structure).
_TRANSIENT_STATUS = re.compile(r'\b(UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|ABORTED):')
_CORRUPT_STATUS = re.compile(r'\b(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND):')
# Local-path answers that no retry changes.
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _exception_chain(err: BaseException) -> Iterator[BaseException]:
  """`err`, its causes / contexts and the members of exception groups (each once)."""
  seen, pending = set(), [err]
  while pending:
    e = pending.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    pending.extend([e.__cause__, e.__context__, *getattr(e, 'exceptions', ())])


def _is_transient(e: BaseException) -> bool:
  if isinstance(e, TimeoutError | ConnectionError):
    return True
  if isinstance(e, OSError) and not isinstance(e, _PERMANENT_OS_ERRORS):
    return True  # gcsfs / aiohttp / requests network errors are OSErrors
  if isinstance(e, ValueError | RuntimeError) and _TRANSIENT_STATUS.search(str(e)):
    return True
  try:  # gcsfs's own list of retriable errors (HTTP 408 / 429 / 5xx, aiohttp, auth refresh)
    from gcsfs import retry as gcsfs_retry  # pylint: disable=import-outside-toplevel

    return bool(gcsfs_retry.is_retriable(e))
  except ImportError:
    return False


def classify_error(err: BaseException) -> str:
  """CORRUPT / TRANSIENT / MISMATCH / ERROR for an exception raised while checking or restoring a step.

  The whole chain counts (orbax and tensorstore wrap errors): a mismatch anywhere wins, then corruption,
  then a transient cause; anything else is ERROR (raised as it is, nothing retried or moved).
  """
  kinds = set()
  for e in _exception_chain(err):
    if isinstance(e, CheckpointMismatchError):
      kinds.add(MISMATCH)
    elif isinstance(e, CheckpointCorruptError | json.JSONDecodeError | UnicodeDecodeError):
      kinds.add(CORRUPT)
    elif isinstance(e, CheckpointUnavailableError) or _is_transient(e):
      kinds.add(TRANSIENT)
    elif isinstance(e, ValueError) and _CORRUPT_STATUS.search(str(e)):
      kinds.add(CORRUPT)
  for kind in (MISMATCH, CORRUPT, TRANSIENT):
    if kind in kinds:
      return kind
  return ERROR


_T = TypeVar('_T')


def _retrying(fn: Callable[[], _T], what: str, retries: int, backoff_s: float) -> _T:
  """fn(), retried on transient errors (waits backoff_s, 2 backoff_s, ...); CheckpointUnavailableError
  after `retries` tries. Other errors propagate at once."""
  for attempt in range(1, retries + 1):
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      if classify_error(e) != TRANSIENT:
        raise
      if attempt == retries:
        raise CheckpointUnavailableError(
          f'{what}: storage still failing after {retries} tries ({type(e).__name__}: {e}). Nothing was '
          'moved or deleted; rerun the same command when the storage answers again.'
        ) from e
      wait = backoff_s * 2 ** (attempt - 1)
      logging.warning(
        'checkpoint: %s failed (%s: %s); try %d of %d in %.1f s.',
        what,
        type(e).__name__,
        e,
        attempt + 1,
        retries,
        wait,
      )
      time.sleep(wait)
  raise AssertionError('unreachable')


# ---------------------------------------------------------------------------------------------------------
# Checking a step's files (process 0, before anything is restored).
# ---------------------------------------------------------------------------------------------------------

# An OCDBT location in tensorstore's dump: '<kind>:<base path>:<relative path>:<offset>:<length>'
# ('btreenode::d/ab12:0:914', 'value:ocdbt.process_0/:d/cd34:0:214685').
_OCDBT_LOCATION = re.compile(r'^(btreenode|versionnode|value):([^:]*):(.+):(\d+):(\d+)$')


def _read_json(path: str) -> Any:
  """The JSON in `path`; CheckpointCorruptError if it is missing or not JSON (other I/O errors propagate:
  fs.exists / isdir are not used, gcsfs answers False to them on any error)."""
  try:
    with fs.open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError as e:
    raise CheckpointCorruptError(f'{path} is missing') from e
  try:
    return json.loads(data.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointCorruptError(f'{path} is not readable JSON ({e})') from e


def _file_size(path: str) -> int:
  try:
    return fs.size(path)
  except FileNotFoundError as e:
    raise CheckpointCorruptError(f'{path} is missing') from e


def _ocdbt_extents(item_dir: str) -> dict[str, int]:
  """{file under item_dir: bytes the item's OCDBT tree needs it to hold}, from the manifest down through
  every B-tree node of the newest version (nodes are read; array values only located, not read)."""
  import tensorstore as ts  # pylint: disable=import-outside-toplevel  (orbax's array I/O; imported by it)

  url = item_dir if fs.is_remote(item_dir) else 'file://' + os.path.abspath(item_dir)
  store = ts.KvStore.open(url.rstrip('/') + '/').result()
  # Hand-written walk: tensorstore has no "check" call; ts.ocdbt.dump decodes one node at a time.
  manifest = ts.ocdbt.dump(store).result()
  versions = manifest.get('versions') or []
  root = (versions[-1].get('root') or {}).get('location') if versions else None
  needed: dict[str, int] = {}
  pending, seen = ([root] if root else []), set()
  while pending:
    location = pending.pop()
    match = _OCDBT_LOCATION.match(location)
    if match is None:
      raise CheckpointCorruptError(f'{item_dir}: unexpected OCDBT location {location!r}')
    kind, base, relative, offset, length = match.groups()
    name = urllib.parse.unquote(base) + urllib.parse.unquote(relative)
    needed[name] = max(needed.get(name, 0), int(offset) + int(length))
    if kind != 'value' and location not in seen:
      seen.add(location)
      pending.extend(_locations(ts.ocdbt.dump(store, location).result()))
  return needed


def _locations(node: Any) -> Iterator[str]:
  """Every OCDBT location string inside a dumped node (keys and inline values are bytes, never matched)."""
  if isinstance(node, dict):
    for value in node.values():
      yield from _locations(value)
  elif isinstance(node, list):
    for value in node:
      yield from _locations(value)
  elif isinstance(node, str) and _OCDBT_LOCATION.match(node):
    yield node


def _verify_pytree_item(item_dir: str) -> None:
  metadata = _read_json(f'{item_dir}/_METADATA')
  if not isinstance(metadata, dict) or 'tree_metadata' not in metadata:
    raise CheckpointCorruptError(f'{item_dir}/_METADATA has no tree_metadata')
  if not metadata.get('use_ocdbt', True):
    return
  _file_size(f'{item_dir}/manifest.ocdbt')  # without it tensorstore would see an empty database
  for name, needed in sorted(_ocdbt_extents(item_dir).items()):
    have = _file_size(f'{item_dir}/{name}')
    if have < needed:
      raise CheckpointCorruptError(
        f'{item_dir}/{name} is truncated: {have} bytes, the OCDBT manifest references {needed}'
      )


def _verify_legacy_data_item(item_dir: str) -> None:
  """grain's per-process handler: process_<i>-of-<n>.json, each JSON."""
  names = [n for n in fs.listdir(item_dir) if n.startswith('process_') and n.endswith('.json')]
  if not names:
    raise CheckpointCorruptError(f'{item_dir} holds no process_<i>-of-<n>.json')
  for name in names:
    _read_json(f'{item_dir}/{name}')


def _step_items(step_dir: str) -> dict[str, str]:
  """{item name: handler type name} from the step's _CHECKPOINT_METADATA."""
  metadata = _read_json(f'{step_dir}/_CHECKPOINT_METADATA')
  handlers = metadata.get('item_handlers') if isinstance(metadata, dict) else None
  if not isinstance(handlers, dict) or not handlers:
    raise CheckpointCorruptError(f'{step_dir}/_CHECKPOINT_METADATA lists no items')
  return {name: str(handler) for name, handler in handlers.items()}


def verify_step(step_dir: str | os.PathLike) -> None:
  """Checks the files of one orbax step; raises CheckpointCorruptError naming the file and the fault.

  Checked: _CHECKPOINT_METADATA (JSON, lists the items); per item: pytree items' _METADATA, the OCDBT
  manifest and every node / array file it references (present, at least as long as referenced); JSON
  items' `metadata`; grain's legacy per-process files. Reads metadata only, never the arrays' bytes.
  Errors reaching the storage (connection, timeout, 5xx) propagate unchanged (`classify_error`: TRANSIENT).
  Not caught: bytes changed inside a file of the right length (the restore itself fails then).
  """
  step_dir = os.fspath(step_dir).rstrip('/')
  for item, handler in _step_items(step_dir).items():
    item_dir = f'{step_dir}/{item}'
    if 'JsonCheckpointHandler' in handler:
      _read_json(f'{item_dir}/metadata')
    elif 'grain' in handler:
      _verify_legacy_data_item(item_dir)
    else:  # StandardCheckpointHandler / PyTreeCheckpointHandler
      _verify_pytree_item(item_dir)


def _shape_tree(tree: Any) -> dict[tuple, tuple]:
  return {k: tuple(v.shape) for k, v in ocp.tree.to_flat_dict(tree).items()}


def _check_fits(step_dir: str, targets: dict[str, Any], need_data: bool) -> None:
  """CheckpointMismatchError if the step's items, tree paths or array shapes differ from `targets`."""
  items = _step_items(step_dir)
  stored = {n for n in items if n in (MODEL_ITEM, DISC_ITEM, TRAIN_ITEM)}
  problems = []
  if stored != set(targets):
    problems.append(f'items {sorted(stored)} stored, {sorted(targets)} expected')
  if need_data and DATA_ITEM not in items:
    problems.append('no input iterator state')
  handler = ocp.StandardCheckpointHandler()
  try:
    for name in sorted(stored & set(targets)):
      metadata = handler.metadata(epath.Path(f'{step_dir}/{name}'))
      have = _shape_tree(metadata.tree if hasattr(metadata, 'tree') else metadata)
      want = _shape_tree(targets[name])
      diffs = [
        f'{name}/{"/".join(map(str, k))}: stored {have.get(k, "nothing")}, model {want.get(k, "nothing")}'
        for k in sorted(set(have) | set(want), key=str)
        if have.get(k) != want.get(k)
      ]
      problems.extend(diffs[:5] + ([f'... {len(diffs) - 5} more in {name}'] if len(diffs) > 5 else []))
  finally:
    handler.close()
  if problems:
    raise CheckpointMismatchError(
      f'The checkpoint {step_dir} does not fit the model being trained: {"; ".join(problems)}. If the '
      'config changed (stage, width, image size, optimizer) since it was written, use a new --workdir.'
    )


# ---------------------------------------------------------------------------------------------------------
# Restore.
# ---------------------------------------------------------------------------------------------------------

# What process 0 broadcasts: [code, step, steps quarantined]. Codes 2.. are the failure classes.
_CODES = {'ok': 0, 'none': 1, TRANSIENT: 2, CORRUPT: 3, MISMATCH: 4, ERROR: 5}
_NAMES = {v: k for k, v in _CODES.items()}


def _step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return os.fspath(manager.directory / str(int(step)))


def _quarantine(workdir, step_dir: str, step: int, reason: BaseException) -> str:
  """Moves a corrupt step out of the manager's directory (process 0; kept for inspection)."""
  dest_root = os.path.join(fs.absolute(workdir), CORRUPT_DIR)
  fs.makedirs(dest_root)
  dest = os.path.join(dest_root, f'{step}-{int(time.time())}')
  suffix = 0
  while fs.exists(dest):
    suffix += 1
    dest = os.path.join(dest_root, f'{step}-{int(time.time())}-{suffix}')
  fs.move(step_dir, dest)
  logging.warning('checkpoint: step %d is corrupt (%s); moved to %s.', step, reason, dest)
  return dest


def _choose_step(manager, workdir, targets, need_data, retries, backoff_s):
  """Process 0: the newest step whose files check out and that fits -> (code, step, quarantined, error).
  Corrupt steps on the way are quarantined; any other failure stops the walk (nothing more moved)."""
  quarantined = 0
  try:
    manager.reload()
    steps = sorted(manager.all_steps(), reverse=True)
  except Exception as e:  # pylint: disable=broad-except
    return _CODES[classify_error(e)], -1, quarantined, e
  for step in steps:
    step_dir = _step_dir(manager, step)

    def check(step_dir=step_dir):
      verify_step(step_dir)
      _check_fits(step_dir, targets, need_data)

    try:
      _retrying(check, f'checking step {step} in {manager.directory}', retries, backoff_s)
    except Exception as e:  # pylint: disable=broad-except
      kind = classify_error(e)
      if kind != CORRUPT:
        return _CODES[kind], step, quarantined, e
      try:
        _quarantine(workdir, step_dir, step, e)
      except Exception as move_error:  # pylint: disable=broad-except
        return _CODES[ERROR], step, quarantined, move_error
      quarantined += 1
      continue
    return _CODES['ok'], step, quarantined, None
  if quarantined:  # every step was corrupt: one loud stop instead of a silent restart from step 0
    return (
      _CODES[ERROR],
      steps[-1],
      quarantined,
      CheckpointCorruptError(
        f'Every step in {manager.directory} was corrupt and is now in {CORRUPT_DIR}/ next to it (see the '
        'warnings above). Rerun to start from scratch, or inspect them first.'
      ),
    )
  return _CODES['none'], -1, quarantined, None


def _broadcast_from_0(values: list[int]) -> list[int]:
  if jax.process_count() == 1:
    return list(values)
  out = multihost_utils.broadcast_one_to_all(np.asarray(values, np.int32))
  return [int(v) for v in np.asarray(out)]


def _gather(code: int) -> list[int]:
  """Every process's code, in process order."""
  if jax.process_count() == 1:
    return [code]
  return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(code))).reshape(-1)]


def _read_data_state(step_dir: str) -> Any:
  """The input iterator state of a step: the JSON item, or this process's file of grain's legacy layout."""
  item_dir = f'{step_dir}/{DATA_ITEM}'
  handler = _step_items(step_dir).get(DATA_ITEM, '')
  if 'grain' not in handler:
    json_handler = ocp.JsonCheckpointHandler()
    try:
      return json_handler.restore(epath.Path(item_dir), args=ocp.args.JsonRestore())
    finally:
      json_handler.close()
  # Written per process by grain's CheckpointHandler (before the JSON item): usable by the same count only.
  index, count = jax.process_index(), jax.process_count()
  counts = {n.rsplit('-of-', 1)[-1][: -len('.json')] for n in fs.listdir(item_dir) if '-of-' in n}
  if counts != {str(count)}:
    raise CheckpointMismatchError(
      f'{item_dir} holds per-process input states written by {sorted(counts)} process(es); resume with '
      f'that many processes, or use a new --workdir (now {count}).'
    )
  return _read_json(f'{item_dir}/process_{index}-of-{count}.json')


def _restore_step(step_dir: str, abstract_state, targets: dict[str, Any], data_iterator):
  """Restores one step on this process through the item handlers (no cross-process barrier inside: the
  Checkpointer's restore ends in one that a failed process never reaches, leaving the others waiting)."""
  handler = ocp.StandardCheckpointHandler()
  try:
    items = {
      name: handler.restore(epath.Path(f'{step_dir}/{name}'), args=ocp.args.StandardRestore(target))
      for name, target in targets.items()
    }
  finally:
    handler.close()
  for leaf in jax.tree.leaves(items):  # surface read errors (damaged bytes) here, not at first use
    leaf.block_until_ready()
  if data_iterator is not None:
    data_iterator.set_state(_read_data_state(step_dir))
  return merge_state(abstract_state, items)


def _decision_error(
  code: int, step: int, error: BaseException | None, directory, quarantined: int
) -> BaseException:
  """The error every process raises when process 0 could not pick a step (process 0's own error, or, on
  the others, a pointer to its log)."""
  kind = _NAMES[code]
  cls = {TRANSIENT: CheckpointUnavailableError, MISMATCH: CheckpointMismatchError}.get(kind, RuntimeError)
  moved = (
    f' {quarantined} newer corrupt step(s) were moved to {CORRUPT_DIR}/ (see the log).' if quarantined else ''
  )
  advice = ' If the config changed since it was written, use a new --workdir.' if kind == MISMATCH else ''
  if error is None:
    return cls(
      f'Cannot restore from {directory}: process 0 could not pick a step ({kind} at step {step}; see its '
      f'log).{moved}{advice}'
    )
  if isinstance(error, CheckpointCorruptError) or (
    isinstance(error, cls) and os.fspath(directory) in str(error) and not moved
  ):
    return error
  return cls(f'Cannot restore step {step} in {directory}: {type(error).__name__}: {error}{moved}{advice}')


def _restore_agreed(manager, step, abstract_state, targets, data_iterator, retries, backoff_s):
  """Every process restores `step`; all agree on the outcome after each try (module docstring)."""
  step_dir = _step_dir(manager, step)
  for attempt in range(1, retries + 1):
    state, error = None, None
    try:
      state = _restore_step(step_dir, abstract_state, targets, data_iterator)
      code = _CODES['ok']
    except Exception as e:  # pylint: disable=broad-except
      error, code = e, _CODES[classify_error(e)]
    codes = _gather(code)
    if all(c == _CODES['ok'] for c in codes):
      return state
    failed = [i for i, c in enumerate(codes) if c != _CODES['ok']]
    kinds = sorted({_NAMES[codes[i]] for i in failed})
    if kinds == [TRANSIENT] and attempt < retries:
      wait = backoff_s * 2 ** (attempt - 1)
      logging.warning(
        'checkpoint: restoring step %d failed on process(es) %s (%s); try %d of %d in %.1f s.',
        step,
        failed,
        error if error is not None else 'transient',
        attempt + 1,
        retries,
        wait,
      )
      time.sleep(wait)
      continue
    detail = (
      f'{type(error).__name__}: {error}' if error is not None else 'this process succeeded; see their logs'
    )
    message = (
      f'Restoring step {step} from {manager.directory} failed on process(es) {failed} ({", ".join(kinds)}; '
      f'{detail}). Nothing was moved or deleted.'
    )
    if kinds == [TRANSIENT]:
      raise CheckpointUnavailableError(
        f'{message} The storage kept failing after {retries} tries; rerun when it answers again.'
      ) from error
    if MISMATCH in kinds:
      raise CheckpointMismatchError(
        f'{message} If the config changed since it was written, use a new --workdir.'
      ) from error
    if CORRUPT in kinds:
      message += (
        f' Its files passed the checks but a read failed as damaged data: if the step is corrupt, move '
        f'{step_dir} into {CORRUPT_DIR}/ next to {CHECKPOINT_DIR}/ and rerun to resume from the previous step.'
      )
    raise RuntimeError(message) from error
  raise AssertionError('unreachable')


def restore_latest(
  manager: ocp.CheckpointManager,
  workdir: str | os.PathLike,
  abstract_state,
  shardings,
  data_iterator=None,
  *,
  retries: int | None = None,
  backoff_s: float | None = None,
):
  """Restores the newest intact step -> (state, step), or (None, None) when there is no checkpoint.

  Call on every process. Process 0 picks the step (quarantining verifiably corrupt newer ones, retrying
  transient storage errors, refusing a step that does not fit the model), every process restores it, and
  all raise together if any fails (module docstring). The data iterator, if given, gets the step's state
  through `set_state`. `retries` / `backoff_s` default to RETRIES / BACKOFF_S.
  """
  retries = RETRIES if retries is None else int(retries)
  backoff_s = BACKOFF_S if backoff_s is None else float(backoff_s)
  targets = _abstract_items(abstract_state, shardings)
  error = None
  if jax.process_index() == 0:
    try:
      code, step, quarantined, error = _choose_step(
        manager, workdir, targets, data_iterator is not None, retries, backoff_s
      )
    except Exception as e:  # pylint: disable=broad-except  (still broadcast: the others wait for it)
      code, step, quarantined, error = _CODES[ERROR], -1, 0, e
  else:
    code, step, quarantined = 0, -1, 0
  code, step, quarantined = _broadcast_from_0([code, step, quarantined])
  if quarantined:
    manager.reload()  # forget the steps process 0 moved away
  if code == _CODES['none']:
    return None, None
  if code != _CODES['ok']:
    exc = _decision_error(code, step, error, manager.directory, quarantined)
    if exc is error:
      raise exc
    raise exc from error
  state = _restore_agreed(manager, step, abstract_state, targets, data_iterator, retries, backoff_s)
  return state, step


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
