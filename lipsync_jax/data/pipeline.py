"""The grain input pipeline: TFRecord clip shards -> this process's rows of every global batch.

Owns the dataset chain (`build_dataset`), the global sample order and its seeds, the per-process view of
the global batch, the train iterator (infinite, deterministic, checkpointable with a process-count-invariant
state: `make_train_iterator` -> `TrainIterator`) and the held-out batches, streamed (`make_eval_batches` ->
`EvalBatches`). The pieces it chains live next to it:
  lipsync_jax.data.tfrecord   the shard files: a split's shards, its record index (with each clip's
                              frame / mel lengths when preprocessing wrote one), random access to records
  lipsync_jax.data.sampling   which frames and mel windows a sample reads (the spec), writing samples into
                              batch arrays, the batch layouts
  lipsync_jax.data.records    the tf.train.Example schema of one clip

The GLOBAL batch is drawn first and each process materialises only its rows, so 1 process and N processes
train on bit-identical global batches (tested), and a state saved by N processes resumes in M. The chain,
grain MapDataset end to end (every element a pure function of (seed, index)):
    source(ClipRecords.for_split)                       one global clip order: every shard of the split in
      [clips with room for a window]                    shard-name order, records in file order; clips too
                                                        short for a window dropped up front (shard index)
      .pipe(EpochShuffleMapDataset, seed_shuffle)        a new permutation of the clips each epoch
      .random_map(WindowPlanner, seed_windows)           RNG keyed by the GLOBAL sample index: parse, draw
                                                         a, b, label
      .repeat()                                          infinite; global batch k = samples [kB, (k+1)B)
      .pipe(ProcessRowsMapDataset, B, (start, stop))     this process's rows: local sample j -> global
                                                         sample (j // b) * B + start + j % b
      .batch(b = stop - start,                           local batch k = rows [start, stop) of global
             batch_fn=BatchAssembler)                    batch k; only these rows are read and decoded
      [dataset[k:]] .to_iter_dataset(ReadOptions)        thread prefetch (cv2 releases the GIL), from batch k
      [.mp_prefetch(worker_count)]                       optional worker processes
Seeds are derived from the user's seed alone (never the process index); grain's random_map seeds each
element's RNG with (seed, its index), and that index is the global sample index because the per-process
view comes after it. The rows [start, stop) come from the mesh (`sharding.process_batch_rows`: the block
of the global batch this process's devices hold); without them, process p takes the block p * b.
Batching happens on the MapDataset, so `mp_prefetch` hands whole batches round-robin to the workers and the
stream is identical for any worker or thread count (tested). The shuffle draws a new permutation per epoch
(grain's own `shuffle` has the same semantics but is ~370 us per element on small splits, see
EpochShuffleMapDataset) and the random_map index keeps growing across epochs: each epoch gets a new order
and new windows. Without a shard index (shards written before it existed) clip lengths are unknown up
front: a clip without room for a window is replaced inside the planner by a clip drawn from the global
list with the same per-index RNG (still the same for any process count), and warned about.

Held-out batches: `make_eval_batches` is the same chain on the eval split (global and fixed: batch i is
global batch i's rows for this process); batch i is built when it is read (one batch decoded ahead while
iterating), so host memory does not grow with config.eval_batches, and every pass sees the same clips,
windows and labels.

Checkpointing the iterator: global batch k is a pure function of (seed, k), so the state is the next batch
index plus what identifies the stream (seed, split, mode, global batch size, number of clips): the same on
every process and for any process count. lipsync_jax.training.checkpointing saves it as one JSON item:
    train_iter = pipeline.make_train_iterator(shards_dir, "train", "generator", 64, seed=0, rows=rows)
    manager.save(step, args=ocp.args.Composite(..., data=ocp.args.JsonSave(train_iter.get_state())))
    restored = manager.restore(step, args=ocp.args.Composite(..., data=ocp.args.JsonRestore()))
    train_iter.set_state(restored["data"])    # rebuilds the grain iterator at that batch
`set_state` refuses a state of another stream (naming what differs). With worker_count > 0 call
`train_iter.close()` when done, and do not keep batches past it (they live in shared memory).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from lipsync_jax.data import dataset_info, records
from lipsync_jax.data.sampling import (
  MIN_CLIP_FRAMES,
  MODES,
  SAMPLE_WRITERS,
  BatchAssembler,
  WindowPlanner,
  window_start_range,
)
from lipsync_jax.data.tfrecord import ClipRecords

# ------------------------------------------------------------------------------------------------------------
# Datasets and iterators.
# ------------------------------------------------------------------------------------------------------------


class EpochShuffleMapDataset(grain.MapDataset):
  """Global shuffle with a new permutation per epoch: element i -> parent[epoch * n + perm_epoch[i % n]].

  Same contract as grain's `MapDataset.shuffle` (deterministic for a seed, reshuffled each epoch, indices
  past len() select later epochs), but one NumPy permutation per epoch instead of grain's per-index
  `index_shuffle`, which costs ~370 us CPU per call on a 48-clip slice (20 us at 1000 clips; measured with
  grain 0.2.18) -- a third of the whole per-sample budget on small corpora such as the demo corpus.
  """

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._init_cache()

  def _init_cache(self):
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_permutations"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_cache()

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"EpochShuffleMapDataset(seed={self._seed})"

  def _permutation(self, epoch: int) -> np.ndarray:
    permutation = self._permutations.get(epoch)
    if permutation is None:
      permutation = np.random.default_rng([self._seed, epoch]).permutation(len(self._parent))
      with self._lock:
        if len(self._permutations) >= 4:  # threads work on neighbouring epochs only
          self._permutations.pop(min(self._permutations))
        self._permutations[epoch] = permutation
    return permutation

  def _shuffled_index(self, index: int) -> int:
    epoch, index_in_epoch = divmod(int(index), len(self._parent))
    return epoch * len(self._parent) + int(self._permutation(epoch)[index_in_epoch])

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._shuffled_index(index)]

  def _getitems(self, indices: Sequence[int]):
    parent_indices = [self._shuffled_index(i) for i in indices]
    return self._parent._getitems(parent_indices)  # pylint: disable=protected-access


class ProcessRowsMapDataset(grain.MapDataset):
  """This process's rows of every global batch: local sample j -> global sample (j // b) * B + start + j % b.

  `parent` holds the global samples in order (global batch k = samples [k B, (k + 1) B)); with
  b = stop - start, `.batch(b)` on this view gives rows [start, stop) of global batch k as local batch k.
  Hand-written: grain's per-process views (`dataset[p::n]`, `grain.experimental.ElasticIterator`) stride the
  samples, so process p would hold rows p, p + n, ... of each global batch, while
  `jax.make_array_from_process_local_data` with the mesh's batch sharding needs the contiguous block that
  `sharding.process_batch_rows` names.
  """

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, global_batch_size: int, rows: tuple[int, int]):
    super().__init__(parent)
    self._global_batch_size = int(global_batch_size)
    self._start, stop = int(rows[0]), int(rows[1])
    self._rows = stop - self._start
    if not 0 <= self._start < stop <= self._global_batch_size:
      raise ValueError(
        f"rows {tuple(rows)} are not a block of a global batch of {global_batch_size}: expected "
        "0 <= start < stop <= global_batch_size (sharding.process_batch_rows gives them)"
      )

  def __len__(self) -> int:
    return len(self._parent) // self._global_batch_size * self._rows

  def __str__(self) -> str:
    stop = self._start + self._rows
    return f"ProcessRowsMapDataset(rows [{self._start}, {stop}) of {self._global_batch_size})"

  def _global_index(self, index: int) -> int:
    batch, row = divmod(int(index), self._rows)
    return batch * self._global_batch_size + self._start + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global_index(index)]

  def _getitems(self, indices: Sequence[int]):
    parent_indices = [self._global_index(i) for i in indices]
    return self._parent._getitems(parent_indices)  # pylint: disable=protected-access


class _Subset:
  """grain random-access source: records `indices` of `source`, in that order (the usable clips)."""

  def __init__(self, source: ClipRecords, indices: np.ndarray):
    self._source = source
    self._indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __repr__(self) -> str:
    return f"_Subset({len(self)} of {self._source!r})"

  def __getitem__(self, index: int):
    return self._source[int(self._indices[index])]


def _rows(
  global_batch_size: int, rows: tuple[int, int] | None, process_index: int | None, process_count: int | None
) -> tuple[int, int]:
  """This process's rows [start, stop) of the global batch: `rows`, or the block process_index * b."""
  if rows is not None:
    return int(rows[0]), int(rows[1])
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
  if global_batch_size % process_count:
    raise ValueError(
      f"global_batch_size {global_batch_size} is not divisible by process_count {process_count}"
    )
  per_process = global_batch_size // process_count
  return process_index * per_process, (process_index + 1) * per_process


_SEED_PURPOSES = {"shuffle": 0, "windows": 1}


def _derived_seed(seed: int, purpose: str) -> int:
  """A uint32 seed for one random op, derived from the user's seed (the same in every process)."""
  words = [int(seed) % 2**32, _SEED_PURPOSES[purpose]]
  return int(np.random.SeedSequence(words).generate_state(1)[0])


def _stored_img_size(shards_dir: str, source: ClipRecords) -> int:
  img_size = (dataset_info.read(shards_dir) or {}).get("img_size")
  if img_size:
    return int(img_size)
  return records.parse_example(source[0].data).img_size


def _usable_clips(source: ClipRecords, mode: str) -> np.ndarray | None:
  """Indices of the records with room for a `mode` window (from the shard index), or None without one."""
  if source.num_frames is None:
    return None
  fits = [
    window_start_range(int(n), int(m), mode, float(f)) is not None
    for n, m, f in zip(source.num_frames, source.mel_steps, source.fps)
  ]
  return np.flatnonzero(np.asarray(fits, bool))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a built dataset reads: the shards, the split's clips (all, and those in the global order), this
  process's rows of the global batch, the image size."""

  shards: tuple[str, ...]
  num_records: int
  num_clips: int  # in the global order: with a shard index, the clips with room for a window
  rows: tuple[int, int]
  img_size: int

  @property
  def process_batch_size(self) -> int:
    return self.rows[1] - self.rows[0]


def build_dataset(
  shards_dir: str,
  split: str,
  mode: str,
  global_batch_size: int,
  seed: int,
  rows: tuple[int, int] | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  img_size: int | None = None,
  verify_data_crc: bool = False,
) -> tuple[grain.MapDataset, DatasetInfo]:
  """The infinite MapDataset of this process's batches: batch k = rows [start, stop) of global batch k, a
  pure function of (seed, k) whatever the process count.

  rows: this process's rows of the global batch (`sharding.process_batch_rows(mesh, global_batch_size)`);
  None = the block process_index * b, b = global_batch_size // process_count (default: jax's); given rows
  win over process_index / process_count.
  """
  if mode not in SAMPLE_WRITERS:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  rows = _rows(global_batch_size, rows, process_index, process_count)
  source = ClipRecords.for_split(shards_dir, split, verify_data_crc=verify_data_crc)
  img_size = int(img_size or _stored_img_size(shards_dir, source))
  usable = _usable_clips(source, mode)
  if usable is None:
    clips = grain.MapDataset.source(source)  # lengths unknown: WindowPlanner replaces short clips
  else:
    if not len(usable):
      raise ValueError(
        f"no clip of split '{split}' in {shards_dir} has room for a {mode} window ({len(source)} clips, "
        f"all too short: at least {MIN_CLIP_FRAMES} frames and a mel that covers them are needed); add "
        "longer clips or use another split"
      )
    if len(usable) < len(source):
      logging.warning(
        "input_pipeline: split '%s' in %s: %d of %d clips are too short for a %s window and are skipped",
        split,
        shards_dir,
        len(source) - len(usable),
        len(source),
        mode,
      )
    clips = grain.MapDataset.source(_Subset(source, usable))
  dataset = (
    clips.pipe(EpochShuffleMapDataset, seed=_derived_seed(seed, "shuffle"))
    .random_map(WindowPlanner(mode, fallback=clips), seed=_derived_seed(seed, "windows"))
    .repeat()
    .pipe(ProcessRowsMapDataset, global_batch_size=global_batch_size, rows=rows)
    .batch(rows[1] - rows[0], drop_remainder=True, batch_fn=BatchAssembler(mode, img_size))
  )
  info = DatasetInfo(tuple(source.paths), len(source), len(clips), rows, img_size)
  return dataset, info


class TrainIterator(grain.DatasetIterator):
  """This process's train batches, in order, with a process-count-invariant state (module docstring).

  `get_state()` -> {'next_batch': k, 'seed', 'split', 'mode', 'global_batch_size', 'num_clips'} (JSON-able,
  the same on every process); `set_state(state)` restarts the grain iterator at batch k (checking the
  state is of this stream). Batch k depends only on (seed, k), never on worker or thread counts.
  """

  def __init__(
    self,
    dataset: grain.MapDataset,
    stream: dict[str, Any],
    read_options: grain.ReadOptions,
    multiprocessing_options: grain.MultiprocessingOptions | None = None,
  ):
    super().__init__()
    self._dataset = dataset
    self._stream = dict(stream)
    self._read_options = read_options
    self._multiprocessing_options = multiprocessing_options
    self._next_batch = 0
    self._iterator: grain.DatasetIterator | None = None

  def _start(self) -> grain.DatasetIterator:
    iter_dataset = self._dataset[self._next_batch :].to_iter_dataset(self._read_options)
    if self._multiprocessing_options is not None:
      from absl import flags  # pylint: disable=import-outside-toplevel

      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use defaults
        flags.FLAGS.mark_as_parsed()
      iter_dataset = iter_dataset.mp_prefetch(self._multiprocessing_options)
    return iter(iter_dataset)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      self._iterator = self._start()
    batch = next(self._iterator)
    self._next_batch += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"next_batch": self._next_batch, **self._stream}

  def set_state(self, state: dict[str, Any]) -> None:
    state = dict(state)
    if "next_batch" not in state:
      raise ValueError(
        f"input pipeline state {state} has no 'next_batch': it was not written by "
        "lipsync_jax.data.pipeline.TrainIterator.get_state (an older per-process grain state?); resume "
        "from a checkpoint written by this version, or start a new --workdir"
      )
    differ = {k: (state.get(k), v) for k, v in self._stream.items() if state.get(k) != v}
    if differ:
      details = ", ".join(f"{k}: saved {saved!r}, now {now!r}" for k, (saved, now) in differ.items())
      raise ValueError(
        f"input pipeline state is of another data stream ({details}); restore it with the same data "
        "config (seed, split, stage, global batch size, shards), or start a new --workdir"
      )
    self.close()
    self._next_batch = int(state["next_batch"])

  def close(self) -> None:
    """Stops the prefetch threads / worker processes (a later `next` starts them again)."""
    iterator, self._iterator = self._iterator, None
    if iterator is not None and hasattr(iterator, "close"):
      iterator.close()

  def __str__(self) -> str:
    return f"TrainIterator(next_batch={self._next_batch}, {self._stream})"


def make_train_iterator(
  shards_dir: str,
  split: str,
  mode: str,
  global_batch_size: int,
  seed: int,
  rows: tuple[int, int] | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  img_size: int | None = None,
  worker_count: int = 0,
  num_threads: int = 2,
  prefetch_batches: int = 4,
  verify_data_crc: bool = False,
) -> TrainIterator:
  """Infinite, checkpointable iterator over this process's rows of the global batches (module docstring).

  rows / process_index / process_count: see `build_dataset`. worker_count > 0 adds grain `mp_prefetch`
  worker processes; num_threads prefetch threads work in each process (0: compute batches synchronously in
  `next`). Neither changes the batches.
  """
  dataset, info = build_dataset(
    shards_dir,
    split,
    mode,
    global_batch_size,
    seed,
    rows,
    process_index,
    process_count,
    img_size,
    verify_data_crc,
  )
  stream = {
    "seed": int(seed),
    "split": str(split),
    "mode": str(mode),
    "global_batch_size": int(global_batch_size),
    "num_clips": info.num_clips,
  }
  read_options = grain.ReadOptions(
    num_threads=num_threads, prefetch_buffer_size=prefetch_batches if num_threads else 0
  )
  multiprocessing = (
    grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=max(1, prefetch_batches))
    if worker_count > 0
    else None
  )
  return TrainIterator(dataset, stream, read_options, multiprocessing)


class EvalBatches:
  """The fixed held-out batches, streamed: batch i is built when it is read, never all of them at once.

  `iter(eval_batches)` is one pass in order, decoding one batch ahead in a thread (host memory: about two
  batches, whatever `len`); `eval_batches[i]` reads one batch. Batch i is a pure function of (seed, i):
  every pass, every call and every run sees the same clips, windows and labels.
  """

  def __init__(self, dataset: grain.MapDataset, num_batches: int):
    self._dataset = dataset[:num_batches]

  def __len__(self) -> int:
    return len(self._dataset)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(f"eval batch {index} out of range: there are {len(self)}")
    return self._dataset[index]

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return iter(self._dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)))


def make_eval_batches(
  shards_dir: str,
  split: str,
  mode: str,
  global_batch_size: int,
  num_batches: int,
  seed: int = 0,
  rows: tuple[int, int] | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  img_size: int | None = None,
) -> EvalBatches:
  """`num_batches` fixed batches of the held-out split, streamed (`EvalBatches`): batch i is this process's
  rows of global batch i, i.e. batch i of `build_dataset` with the same arguments."""
  dataset, _ = build_dataset(
    shards_dir, split, mode, global_batch_size, seed, rows, process_index, process_count, img_size
  )
  return EvalBatches(dataset, num_batches)
