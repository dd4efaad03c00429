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
* Decode only what a sample uses: a record is parsed with `lipsync_jax.records.parse_example` (frames stay
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

import concurrent.futures
import dataclasses
import json
import logging
import os
import struct
import threading
from typing import Any, NamedTuple, Sequence

import crcmod.predefined
import cv2
import grain
import numpy as np

from lipsync_jax import records
from lipsync_jax import windows

MODES = ("expert", "generator")
MIN_CLIP_FRAMES = 3 * windows.SYNC_T + 1  # spec: clips need more than 3*T = 15 frames
_HEADER_BYTES = 12  # uint64 length + uint32 masked crc32c of the length
_FOOTER_BYTES = 4  # uint32 masked crc32c of the data
_MAX_RESAMPLES = 100


class ShardError(ValueError):
  """A TFRecord shard is missing, truncated or not a TFRecord file."""


class CorruptRecordError(ValueError):
  """A record inside a shard does not parse or decode as a lipsync_jax clip."""


# ------------------------------------------------------------------------------------------------------------
# TFRecord framing: writing (tests, benchmarks) and a random-access index for reading.
# ------------------------------------------------------------------------------------------------------------


_crc32c = crcmod.predefined.mkPredefinedCrcFun("crc-32c")  # C extension; the same function Beam falls back to


def _masked_crc32c(data: bytes) -> int:
  """The TFRecord format's masked CRC-32C."""
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecord(path: str, serialized_records: Sequence[bytes]) -> str:
  """Writes records to `path` with standard TFRecord framing (Beam's writer); temp name, then rename."""
  from apache_beam.io.tfrecordio import _TFRecordUtil  # pylint: disable=import-outside-toplevel
  tmp_path = f"{path}.tmp-{os.getpid()}"
  with open(tmp_path, "wb") as f:
    for record in serialized_records:
      _TFRecordUtil.write_record(f, record)
  os.replace(tmp_path, path)
  return path


def _corrupt_shard(path: str, offset: int, record: int, what: str) -> ShardError:
  return ShardError(
      f"TFRecord shard {path} is corrupt at byte {offset} (record {record}): {what}. Re-run "
      "`python -m data_pipelines.preprocess` for this split, or move the shard out of the directory.")


def index_tfrecord(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(offsets, lengths) of every record's payload in one TFRecord file; length CRCs are checked."""
  offsets, lengths = [], []
  size = os.path.getsize(path)
  fd = os.open(path, os.O_RDONLY)
  try:
    position = 0
    while position < size:
      header = os.pread(fd, _HEADER_BYTES, position)
      if len(header) != _HEADER_BYTES:
        raise _corrupt_shard(path, position, len(offsets), f"truncated record header ({len(header)} bytes)")
      length, length_crc = struct.unpack("<QI", header)
      if _masked_crc32c(header[:8]) != length_crc:
        raise _corrupt_shard(path, position, len(offsets), "length checksum mismatch (not a TFRecord file?)")
      end = position + _HEADER_BYTES + length + _FOOTER_BYTES
      if end > size:
        raise _corrupt_shard(path, position, len(offsets),
                             f"record of {length} bytes runs past the end of the file ({size} bytes)")
      offsets.append(position + _HEADER_BYTES)
      lengths.append(length)
      position = end
  finally:
    os.close(fd)
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def find_shards(shards_dir: str, split: str) -> list[str]:
  """Sorted shard paths `{split}-xxxxx-of-nnnnn.tfrecord` in `shards_dir`; a clear error if none/partial."""
  hint = ("Create them with `python -m data_pipelines.preprocess --input 'VIDEOS/**/*.mp4' --out "
          f"{shards_dir}` (or use lipsync_jax.demo_data.ensure_demo_shards() for the demo corpus).")
  if not os.path.isdir(shards_dir):
    raise FileNotFoundError(f"shards directory {shards_dir!r} does not exist. {hint}")
  found = {}
  for name in os.listdir(shards_dir):
    match = records.SHARD_PATTERN.match(name)
    if match and match["split"] == split:
      found[int(match["index"])] = (name, int(match["count"]))
  if not found:
    raise FileNotFoundError(f"no '{split}' shards ({split}-xxxxx-of-nnnnn.tfrecord) in {shards_dir!r}. "
                            f"{hint}")
  counts = {count for _, count in found.values()}
  expected = max(counts)
  missing = sorted(set(range(expected)) - set(found))
  if missing or len(counts) > 1:
    raise ShardError(f"split '{split}' in {shards_dir!r} is incomplete: {len(found)} shards present, "
                     f"'of' counts {sorted(counts)}, missing indices {missing[:10]}. Re-run preprocessing "
                     "into an empty directory.")
  return [os.path.join(shards_dir, found[i][0]) for i in sorted(found)]


class RawClip(NamedTuple):
  """One undecoded record and where it came from (for error messages)."""

  data: bytes
  location: str


class ClipRecords:
  """grain random-access source over TFRecord shards: record `i` -> RawClip (one `os.pread`).

  The index (shard, payload offset, payload length) is built once by scanning the framing of each shard in
  parallel threads. Picklable (file descriptors are reopened lazily in each process) for mp_prefetch.
  """

  def __init__(self, paths: Sequence[str], verify_data_crc: bool = False, index_threads: int = 16):
    self._paths = [str(p) for p in paths]
    self._verify_data_crc = verify_data_crc
    with concurrent.futures.ThreadPoolExecutor(max(1, min(index_threads, len(self._paths)))) as pool:
      per_shard = list(pool.map(index_tfrecord, self._paths))
    self._shard = np.concatenate(
        [np.full(len(o), i, np.int32) for i, (o, _) in enumerate(per_shard)] + [np.zeros(0, np.int32)])
    self._record_in_shard = np.concatenate(
        [np.arange(len(o), dtype=np.int64) for o, _ in per_shard] + [np.zeros(0, np.int64)])
    self._offset = np.concatenate([o for o, _ in per_shard] + [np.zeros(0, np.int64)])
    self._length = np.concatenate([n for _, n in per_shard] + [np.zeros(0, np.int64)])
    self._init_files()

  def _init_files(self):
    self._fds: dict[int, int] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_fds"], state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_files()

  def __del__(self, _close=os.close):
    for fd in getattr(self, "_fds", {}).values():
      try:
        _close(fd)
      except OSError:
        pass

  def __len__(self) -> int:
    return len(self._offset)

  def __repr__(self) -> str:
    return f"ClipRecords({len(self._paths)} shards, {len(self)} records)"

  @property
  def paths(self) -> list[str]:
    return list(self._paths)

  def location(self, index: int) -> str:
    shard = int(self._shard[index])
    return (f"shard {self._paths[shard]} record {int(self._record_in_shard[index])} "
            f"(byte {int(self._offset[index]) - _HEADER_BYTES})")

  def _fd(self, shard: int) -> int:
    fd = self._fds.get(shard)
    if fd is None:
      with self._lock:
        fd = self._fds.get(shard)
        if fd is None:
          fd = self._fds[shard] = os.open(self._paths[shard], os.O_RDONLY)
    return fd

  def __getitem__(self, index: int) -> RawClip:
    index = int(index)
    shard, offset, length = int(self._shard[index]), int(self._offset[index]), int(self._length[index])
    extra = _FOOTER_BYTES if self._verify_data_crc else 0
    data = os.pread(self._fd(shard), length + extra, offset)
    if len(data) != length + extra:
      raise CorruptRecordError(f"{self.location(index)}: short read ({len(data)} of {length + extra} bytes);"
                               " was the shard modified after indexing?")
    if self._verify_data_crc:
      data, (crc,) = data[:length], struct.unpack("<I", data[length:])
      if _masked_crc32c(data) != crc:
        raise CorruptRecordError(f"{self.location(index)}: data checksum mismatch. Re-run preprocessing for "
                                 "this split, or move the shard out of the directory.")
    return RawClip(data, self.location(index))


# ------------------------------------------------------------------------------------------------------------
# Window sampling (spec section 6).
# ------------------------------------------------------------------------------------------------------------


def last_mel_frame(mel_steps: int, num_frames: int, fps: float = windows.FPS) -> int:
  """Largest frame f < num_frames whose 16-step mel window lies inside a mel of `mel_steps` (-1 if none)."""
  frame = num_frames - 1
  while frame >= 0 and windows.mel_window_start(frame, fps) + windows.MEL_STEPS > mel_steps:
    frame -= 1
  return frame


def window_start_range(num_frames: int, mel_steps: int, mode: str,
                       fps: float = windows.FPS) -> tuple[int, int] | None:
  """Inclusive range [lo, hi] of frames a at which a sample of `mode` fits the clip, or None.

  expert: frames a..a+4 exist and a's mel window fits. generator: additionally a >= 1 and the windows of
  frames a-1..a+3 (indiv_mels) fit. Clips of <= 15 frames give None (spec: more than 3*T frames).
  """
  if num_frames < MIN_CLIP_FRAMES:
    return None
  last_window = num_frames - windows.SYNC_T
  mel_last = last_mel_frame(mel_steps, num_frames, fps)
  if mode == "expert":
    lo, hi = 0, min(last_window, mel_last)
  elif mode == "generator":
    lo, hi = 1, min(last_window, mel_last - (windows.SYNC_T - 2))
  else:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  return (lo, hi) if hi >= lo else None


def _draw_windows(rng: np.random.Generator, lo: int, hi: int, last_window: int) -> tuple[int, int]:
  """a uniform in [lo, hi]; b uniform over [0, last_window] without a."""
  a = int(rng.integers(lo, hi + 1))
  b = int(rng.integers(0, last_window))  # last_window values: all window starts but one
  return a, b + (b >= a)


class SamplePlan(NamedTuple):
  """What one sample reads: the parsed clip, the window starts a and b, and (expert) the label."""

  clip: records.EncodedClip
  location: str
  a: int
  b: int
  label: bool


def plan_sample(clip: records.EncodedClip, location: str, mode: str, rng: np.random.Generator,
                bounds: tuple[int, int]) -> SamplePlan:
  a, b = _draw_windows(rng, *bounds, clip.num_frames - windows.SYNC_T)
  label = bool(rng.random() < 0.5) if mode == "expert" else True
  return SamplePlan(clip, location, a, b, label)


def _mel_window(clip: records.EncodedClip, frame: int) -> np.ndarray:
  start = windows.mel_window_start(frame, clip.fps)
  return clip.mel[:, start:start + windows.MEL_STEPS, None]  # (80, 16, 1)


def _frame(clip: records.EncodedClip, index: int, img_size: int) -> np.ndarray:
  frame = clip.frame(index)
  if frame.shape[0] != img_size:  # the original resized every frame to img_size (cv2 default, bilinear)
    frame = cv2.resize(frame, (img_size, img_size))
  return frame


def _interleave_channels(images: Sequence[np.ndarray], out: np.ndarray):
  """out[..., 3i:3i+3] = images[i], written in place by cv2.mixChannels (contiguous `out`).

  The same frame-major channel order as `windows.stack_on_channels` / the generator's channel concat; 5x
  faster than NumPy's strided assignment into interleaved channels (its inner loop runs over 3 bytes).
  """
  channels = sum(image.shape[-1] for image in images)
  cv2.mixChannels(list(images), [out], [c for c in range(channels) for _ in range(2)])


def write_expert_sample(plan: SamplePlan, img_size: int, batch: dict[str, np.ndarray], row: int):
  """faces = lower halves of the window at a (label 1) or b (label 0); mel = window at a."""
  start = plan.a if plan.label else plan.b
  lower_halves = [windows.lower_half(_frame(plan.clip, f, img_size))
                  for f in range(start, start + windows.SYNC_T)]
  _interleave_channels(lower_halves, batch["faces"][row])  # == stack_on_channels(stack(lower_halves))
  batch["mel"][row] = _mel_window(plan.clip, plan.a)
  batch["label"][row] = float(plan.label)


def write_generator_sample(plan: SamplePlan, img_size: int, batch: dict[str, np.ndarray], row: int):
  """gt = window at a; inputs = [gt with the lower half zeroed | window at b]; mel at a; indiv at f-1."""
  gt, inputs = batch["gt"][row], batch["inputs"][row]
  for k in range(windows.SYNC_T):  # decode straight into the batch: no per-sample intermediate arrays
    gt[k] = _frame(plan.clip, plan.a + k, img_size)
    _interleave_channels([windows.mask_lower_half(gt[k]), _frame(plan.clip, plan.b + k, img_size)], inputs[k])
  batch["mel"][row] = _mel_window(plan.clip, plan.a)
  for k in range(windows.SYNC_T):
    batch["indiv_mels"][row, k] = _mel_window(plan.clip, plan.a + k - 1)


SAMPLE_WRITERS = {"expert": write_expert_sample, "generator": write_generator_sample}


def _corrupt_record(location: str, error: Exception) -> CorruptRecordError:
  return CorruptRecordError(f"{location}: {error}. Re-run preprocessing for this split, or move the shard "
                            "out of the directory.")


class WindowPlanner(grain.transforms.RandomMap):
  """RawClip + per-index RNG -> SamplePlan of `mode` (parse the record, draw a, b and the label).

  A clip without room for a sample is skipped and counted: another clip of `fallback` (this process's
  records) is drawn with the same RNG, so the stream stays a pure function of (seed, index).
  """

  def __init__(self, mode: str, fallback: grain.MapDataset):
    if mode not in SAMPLE_WRITERS:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    self.mode = mode
    self.fallback = fallback
    self.skipped = 0
    self._warned: set[str] = set()

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_warned"}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._warned = set()

  def random_map(self, element: RawClip, rng: np.random.Generator) -> SamplePlan:
    for _ in range(_MAX_RESAMPLES):
      try:
        clip = records.parse_example(element.data)
      except ValueError as e:
        raise _corrupt_record(element.location, e) from e
      bounds = window_start_range(clip.num_frames, clip.mel.shape[1], self.mode, clip.fps)
      if bounds is not None:
        return plan_sample(clip, element.location, self.mode, rng, bounds)
      self.skipped += 1
      if clip.clip_id not in self._warned:
        self._warned.add(clip.clip_id)
        logging.warning("input_pipeline: skipping clip %s (%s): %d frames / %d mel steps leave no %s window "
                        "(%d skipped draws so far in this process)", clip.clip_id, element.location,
                        clip.num_frames, clip.mel.shape[1], self.mode, self.skipped)
      element = self.fallback[int(rng.integers(len(self.fallback)))]
    raise ValueError(f"no usable clips for mode {self.mode!r}: {_MAX_RESAMPLES} draws in a row had fewer "
                     f"than {MIN_CLIP_FRAMES} frames or too short a mel")


class BatchAssembler:
  """grain batch_fn: SamplePlans -> one batch dict, decoding each sample's frames straight into it."""

  def __init__(self, mode: str, img_size: int):
    self.mode = mode
    self.img_size = img_size

  def __call__(self, plans: Sequence[SamplePlan]) -> dict[str, np.ndarray]:
    spec = element_spec(self.mode, len(plans), self.img_size)
    batch = {key: np.empty(shape, dtype) for key, (shape, dtype) in spec.items()}
    for row, plan in enumerate(plans):
      try:
        SAMPLE_WRITERS[self.mode](plan, self.img_size, batch, row)
      except ValueError as e:  # a frame that does not decode
        raise _corrupt_record(plan.location, e) from e
    return batch


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


def element_spec(mode: str, batch_size: int, img_size: int) -> dict[str, tuple[tuple[int, ...], Any]]:
  """{key: (shape, dtype)} of one batch of `mode` (for shape-only model init and tests)."""
  t, s = windows.SYNC_T, img_size
  mel = ((batch_size, windows.NUM_MELS, windows.MEL_STEPS, 1), np.float32)
  if mode == "expert":
    return {"faces": ((batch_size, s - s // 2, s, 3 * t), np.uint8), "mel": mel,  # rows S//2..S
            "label": ((batch_size, 1), np.float32)}
  if mode == "generator":
    return {"inputs": ((batch_size, t, s, s, 6), np.uint8), "gt": ((batch_size, t, s, s, 3), np.uint8),
            "indiv_mels": ((batch_size, t, windows.NUM_MELS, windows.MEL_STEPS, 1), np.float32), "mel": mel}
  raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
