"""The grain input pipeline: TFRecord clip shards -> per-process NumPy batches of training windows.

Owns: finding a split's shards, random access to the clips inside TFRecord shards, sampling windows exactly
as the original Wav2Lip loaders did (spec section 6), the per-process slice of the global batch, the
train iterator (infinite, deterministic, checkpointable) and the fixed held-out eval batches.

Design (the choices, and why)
-----------------------------
* Random access over TFRecord, no conversion. A global shuffle of clips needs random access, and grain's
  own `grain.experimental.TFRecordIterDataset` is sequential (one file, no shuffle, no CRC checks). Clip
  records are large (a 5 s clip of 96 px JPEG crops is ~0.9 MB), so an index of (shard, offset, length) per
  record is tiny (20 bytes per clip) and costs one 12-byte header read per record to build: `ClipRecords`
  scans the TFRecord framing of every shard once (checking each length CRC; ~5 us per record from the page
  cache, 0.5 s for 100k clips) and then serves record `i` with a single `os.pread`. Converting to
  ArrayRecord would give the same random access but doubles the storage and adds a second copy to keep in
  sync; the shards stay the one format that preprocessing writes.
  Files must be on a local or FUSE-mounted file system (e.g. gcsfuse on Cloud TPU VMs).
* grain MapDataset end to end, so every element is a pure function of (seed, index):
      source(ClipRecords)[process_index::process_count]   per-process slice of the clips (every process
                                                          indexes all shards: one global clip order)
        .pipe(EpochShuffleMapDataset, seed_p)              global shuffle, a new order each epoch
        .random_map(WindowPlanner, seed_p')                per-index RNG: parse, draw a, b, label
        .repeat()                                          infinite
        .batch(global_batch_size // process_count,         batch i is a pure function of i;
               batch_fn=BatchAssembler)                    frames decoded straight into the batch
        .to_iter_dataset(ReadOptions(threads))             thread prefetch (cv2 releases the GIL)
        [.mp_prefetch(worker_count)]                       optional worker processes
  Because batching happens on the MapDataset, `mp_prefetch` hands whole batches round-robin to the workers,
  so the stream is identical for any worker or thread count (tested). Seeds are derived from (seed,
  process_index), so processes draw independent windows. The shuffle draws a new permutation per epoch
  (grain's own `shuffle` has the same semantics but is ~370 us per element on small slices, see
  EpochShuffleMapDataset) and the random_map index keeps growing across epochs, so each epoch gets a new
  order and new windows.
* Decode only what a sample uses: a record is parsed with `lipsync_jax.data.records.parse_example` (frames stay
  JPEG bytes) and only the 5 (expert) or 10 (generator) frames of the sample are decoded, straight into the
  preallocated batch arrays; channel interleaving by cv2.mixChannels (NumPy's strided writes into the
  6-channel layout cost ~0.5 ms per generator sample, as much as decoding its 10 JPEGs).
* Batches keep images uint8 (BGR, 0..255); the train step converts on device (x / 255). bench/input_bench.py
  measures it: float32 batches are 4x the bytes to build, copy between worker processes and transfer to the
  device, and converting on the host is slower than on the device.
* Errors: a shard whose framing is broken (truncated, bad length CRC, not a TFRecord) fails while indexing,
  naming the shard and byte offset; a record that does not parse or whose JPEG frames do not decode fails
  when sampled with `CorruptRecordError` naming shard, record number and offset (we fail rather than skip so
  a corrupt shard never silently changes the data; the message says to re-run preprocessing). Data CRCs
  are checked only with `verify_data_crc=True`: crc32c with crcmod costs ~1.2 ms per record, more than the
  whole per-sample budget. Clips too short for a window (<= 15 frames, or a mel that ends early) are
  skipped and counted: the sampler draws another clip of the same process slice with the same RNG (what
  the original loader did) and warns once per clip. A split with fewer clips than processes (a demo's
  held-out split) is read whole by every process, each with its own windows (warned).

Sampling (spec section 6; frame f's mel window starts at int(80 * f / 25), see lipsync_jax.windows):
  expert     a, b != a uniform over the 5-frame windows [0, N-5] (a's mel window inside the mel);
             label 1 (p = 0.5): faces = window at a, else faces = window at b; mel = window at a.
             (a is a full window start for both labels; the original checked frames a..a+4 only for
             label 1, but near a clip's end a's mel window does not fit anyway, so the ranges agree.)
  generator  a in [1, N-5] (indiv_mels use frame f-1), b != a in [0, N-5]; gt = window at a,
             inputs = concat_channels(gt with lower half zeroed, window at b); mel = window at a;
             indiv_mels[k] = mel window of frame a + k - 1, every mel window fully inside the mel.

Batches (per process; b = global_batch_size // process_count, S = img_size):
  expert:    faces (b, S/2, S, 15) uint8 (lower halves, frame-major channels), mel (b, 80, 16, 1) f32,
             label (b, 1) f32
  generator: inputs (b, 5, S, S, 6) uint8, gt (b, 5, S, S, 3) uint8, indiv_mels (b, 5, 80, 16, 1) f32,
             mel (b, 80, 16, 1) f32

Checkpointing the iterator (the trainer saves it next to the train state):
    import grain, orbax.checkpoint as ocp
    train_iter = input_pipeline.make_train_iterator(shards_dir, "train", "generator", 64, seed=0)
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(max_to_keep=3))
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(train_state),
        data_iter=grain.checkpoint.CheckpointSave(train_iter)))   # writes process_<i>-of-<n>.json
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data_iter=grain.checkpoint.CheckpointRestore(train_iter)))  # set_state on train_iter in place
  Rebuild the iterator with the same arguments before restoring (shards, split, mode, global batch, seed,
  process count, and worker_count 0 vs > 0: mp_prefetch's state has another layout; the batches themselves
  are identical for any worker/thread count). Without orbax: `state = train_iter.get_state()` (a JSON-able
  dict) and `train_iter.set_state(state)`. With worker_count > 0 call `train_iter.close()` when done, and do
  not keep batches past it (they live in shared memory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from typing import Sequence

import grain
import numpy as np

from lipsync_jax.data import records
from lipsync_jax.data.sampling import SAMPLE_WRITERS, MODES, BatchAssembler, WindowPlanner
from lipsync_jax.data.tfrecord import ClipRecords, find_shards


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


def _process_index_and_count(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
  return int(process_index), int(process_count)


_SEED_PURPOSES = {"shuffle": 0, "windows": 1}


def _derived_seed(seed: int, purpose: str, process_index: int) -> int:
  """A uint32 seed for one random op of one process, derived from the user's seed."""
  words = [int(seed) % 2**32, _SEED_PURPOSES[purpose], process_index]
  return int(np.random.SeedSequence(words).generate_state(1)[0])


def _stored_img_size(shards_dir: str, source: ClipRecords) -> int:
  info_path = os.path.join(shards_dir, "dataset_info.json")
  if os.path.exists(info_path):
    with open(info_path) as f:
      img_size = json.load(f).get("img_size")
    if img_size:
      return int(img_size)
  return records.parse_example(source[0].data).img_size


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a built dataset reads: the shards, the clips in this process's slice, the batch per process."""

  shards: tuple[str, ...]
  num_clips: int
  num_process_clips: int
  process_batch_size: int
  img_size: int


def build_dataset(shards_dir: str, split: str, mode: str, global_batch_size: int, seed: int,
                  process_index: int | None = None, process_count: int | None = None,
                  img_size: int | None = None, verify_data_crc: bool = False,
                  ) -> tuple[grain.MapDataset, DatasetInfo]:
  """The infinite MapDataset of this process's batches (batch i is a pure function of seed and i)."""
  if mode not in SAMPLE_WRITERS:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  process_index, process_count = _process_index_and_count(process_index, process_count)
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible by process_count "
                     f"{process_count}")
  source = ClipRecords(find_shards(shards_dir, split), verify_data_crc=verify_data_crc)
  img_size = int(img_size or _stored_img_size(shards_dir, source))
  clips = grain.MapDataset.source(source)
  if len(source) >= process_count:
    clips = clips[process_index::process_count]
  else:  # tiny splits (a demo's held-out set): every process reads all clips, with its own windows
    logging.warning("input_pipeline: split '%s' in %s has %d clips for %d processes: every process reads all "
                    "of them (with different windows)", split, shards_dir, len(source), process_count)
  batch_size = global_batch_size // process_count
  dataset = (clips
             .pipe(EpochShuffleMapDataset, seed=_derived_seed(seed, "shuffle", process_index))
             .random_map(WindowPlanner(mode, fallback=clips),
                         seed=_derived_seed(seed, "windows", process_index))
             .repeat()
             .batch(batch_size, drop_remainder=True, batch_fn=BatchAssembler(mode, img_size)))
  info = DatasetInfo(tuple(source.paths), len(source), len(clips), batch_size, img_size)
  return dataset, info


def make_train_iterator(shards_dir: str, split: str, mode: str, global_batch_size: int, seed: int,
                        process_index: int | None = None, process_count: int | None = None,
                        img_size: int | None = None, worker_count: int = 0, num_threads: int = 2,
                        prefetch_batches: int = 4, verify_data_crc: bool = False) -> grain.DatasetIterator:
  """Infinite, checkpointable iterator over this process's batches (see the module docstring).

  worker_count > 0 adds grain `mp_prefetch` worker processes; num_threads prefetch threads work in each
  process (0: compute batches synchronously in `next`). Neither changes the batches.
  """
  dataset, _ = build_dataset(shards_dir, split, mode, global_batch_size, seed, process_index, process_count,
                             img_size, verify_data_crc)
  threads = grain.ReadOptions(num_threads=num_threads,
                              prefetch_buffer_size=prefetch_batches if num_threads else 0)
  iter_dataset = dataset.to_iter_dataset(threads)
  if worker_count > 0:
    from absl import flags  # pylint: disable=import-outside-toplevel
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use defaults
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count,
                                     per_worker_buffer_size=max(1, prefetch_batches)))
  return iter(iter_dataset)


def make_eval_batches(shards_dir: str, split: str, mode: str, global_batch_size: int, num_batches: int,
                      seed: int = 0, process_index: int | None = None, process_count: int | None = None,
                      img_size: int | None = None) -> list[dict[str, np.ndarray]]:
  """`num_batches` fixed batches of the held-out split: the same clips, windows and labels every call."""
  dataset, _ = build_dataset(shards_dir, split, mode, global_batch_size, seed, process_index, process_count,
                             img_size)
  return [dataset[i] for i in range(num_batches)]
