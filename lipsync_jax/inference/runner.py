"""THE padded batch runner: a bounded set of compiled batch shapes, whatever the row count.

Owns `BatchRunner(fn, variables, batch_size, buckets=None)` and the bucket rule `bucket_sizes(batch_size)`.
`fn(variables, *batch_arrays) -> pytree of arrays` has a leading batch axis on every input and output.
Every call runs `fn` on one of the runner's batch shapes (its `buckets`): k rows run in the smallest bucket
that holds them, padded by repeating the last row, and the padding rows are cut from the outputs.
Rows are independent in eval-mode models, so padding never changes the real rows' outputs (up to float
rounding: XLA may block a different batch size differently).

  buckets=None (default)     one shape, `batch_size`: a clip of any length compiles once (LSE, sync, the
                             detectors)
  buckets=bucket_sizes(b)    powers of two below b // 8, then every b // 8 up to b (b=128: 1 2 4 8 16 32 48
                             ... 128): a short clip or a long clip's last batch pads < b // 8 rows instead of
                             up to b - 1, and across all runs there are at most ~12 shapes, so jax's
                             persistent compilation cache (lipsync_jax.compile_cache) serves every later
                             run whatever its length. Used by the generator (lipsync_jax.inference.lipsync).

  run(*arrays)               one batch of k <= batch_size rows -> NumPy outputs with k rows
  map(num_rows, inputs_for)  num_rows rows made batch by batch by inputs_for(range of row indices) (so a
                             long clip's inputs never sit in memory all at once) -> outputs concatenated;
                             full batches of batch_size, the last one in the smallest bucket that holds it
  plan(num_rows)             the batch shapes map(num_rows, ...) runs, in order
  compile(*row_specs, rows=) compile ahead of time for per-row ShapeDtypeStructs (e.g. to time it)

`trace_count` counts traces (one per compiled batch shape and row spec).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

RowKey = tuple[tuple[tuple[int, ...], np.dtype], ...]
BUCKETS_PER_BATCH = 8  # bucket_sizes: buckets are batch_size // 8 apart (see bench/infer_bench.py --sweep)


def bucket_sizes(batch_size: int, per_batch: int = BUCKETS_PER_BATCH) -> tuple[int, ...]:
  """Batch shapes for a runner of `batch_size`: powers of two below step = max(1, batch_size // per_batch),
  then the multiples of step up to batch_size, and batch_size itself.

  On CPU the generator's cost per row is flat from batch 8 to 128 (bench/infer_bench.py), so padding is
  the only waste: < step rows (and < half the rows for short inputs), with at most ~per_batch + log2(step)
  shapes in all.
  """
  batch_size = int(batch_size)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  step = max(1, batch_size // int(per_batch))
  sizes = {1 << k for k in range(step.bit_length()) if (1 << k) < step}
  sizes.update(range(step, batch_size + 1, step))
  sizes.add(batch_size)
  return tuple(sorted(sizes))


class BatchRunner:
  """`fn(variables, *arrays)` jitted on a bounded set of batch shapes; variables on the default device."""

  def __init__(
    self, fn: Callable[..., Any], variables: Any, batch_size: int, buckets: Sequence[int] | None = None
  ):
    if int(batch_size) < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.fn = fn
    self.batch_size = int(batch_size)
    buckets = sorted({int(b) for b in (buckets or ())} | {self.batch_size})
    if buckets[0] < 1 or buckets[-1] > self.batch_size:
      raise ValueError(f"buckets must lie in 1 .. batch_size={self.batch_size}, got {buckets}")
    self.buckets: tuple[int, ...] = tuple(buckets)
    self.variables = jax.device_put(variables)
    self.trace_count = 0
    self._jitted = jax.jit(self._traced)
    self._compiled: dict[tuple[int, RowKey], Any] = {}

  def _traced(self, variables, *arrays):
    self.trace_count += 1  # runs only while tracing
    return self.fn(variables, *arrays)

  def bucket(self, rows: int) -> int:
    """The smallest batch shape that holds `rows` (1 <= rows <= batch_size)."""
    if rows < 1 or rows > self.batch_size:
      raise ValueError(f"a batch of {rows} rows; need 1 .. batch_size={self.batch_size}")
    return self.buckets[bisect.bisect_left(self.buckets, rows)]

  def plan(self, num_rows: int) -> list[int]:
    """The batch shapes `map(num_rows, ...)` runs, in order (full batches, then the last one's bucket)."""
    full, rest = divmod(int(num_rows), self.batch_size)
    return [self.batch_size] * full + ([self.bucket(rest)] if rest else [])

  def compile(self, *row_specs: jax.ShapeDtypeStruct, rows: int | None = None) -> Any:
    """The compiled function for batches of `rows` (default batch_size; rounded up to its bucket) whose rows
    have these shapes / dtypes (each shape compiled once)."""
    size = self.bucket(self.batch_size if rows is None else int(rows))
    key = (size, tuple((tuple(int(d) for d in spec.shape), np.dtype(spec.dtype)) for spec in row_specs))
    if key not in self._compiled:
      shapes = [jax.ShapeDtypeStruct((size,) + shape, dtype) for shape, dtype in key[1]]
      self._compiled[key] = self._jitted.lower(self.variables, *shapes).compile()
    return self._compiled[key]

  def run(self, *arrays: np.ndarray) -> Any:
    """One batch of k <= batch_size rows (all inputs the same k) -> outputs (NumPy) with k rows."""
    arrays = tuple(np.asarray(a) for a in arrays)
    k = len(arrays[0])
    if any(len(a) != k for a in arrays):
      raise ValueError(f"inputs have different row counts: {[len(a) for a in arrays]}")
    size = self.bucket(k)
    if k < size:
      arrays = tuple(np.concatenate([a, np.repeat(a[-1:], size - k, 0)]) for a in arrays)
    compiled = self.compile(*(jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in arrays), rows=size)
    return jax.tree.map(lambda out: np.asarray(out)[:k], compiled(self.variables, *arrays))

  def map(self, num_rows: int, inputs_for: Callable[[range], Sequence[np.ndarray]]) -> Any:
    """Rows 0 .. num_rows-1 in batches: inputs_for(rows) gives each batch's inputs; outputs concatenated."""
    if num_rows < 1:
      raise ValueError(f"nothing to run: {num_rows} rows")
    outputs = [
      self.run(*inputs_for(range(start, min(num_rows, start + self.batch_size))))
      for start in range(0, num_rows, self.batch_size)
    ]
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
