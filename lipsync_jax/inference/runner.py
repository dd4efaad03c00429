"""THE fixed-shape padded batch runner: one compiled function per batch shape, whatever the row count.

Owns `BatchRunner(fn, variables, batch_size)`: `fn(variables, *batch_arrays) -> pytree of arrays` with a
leading batch axis on every input and output. Every call runs `fn` on exactly `batch_size` rows: a short
(last) batch is padded by repeating its last row and the padding rows are cut from the outputs, so a clip of
any length compiles once (`trace_count` counts traces). Rows are independent in eval-mode models, so padding
never changes the real rows' outputs.

  run(*arrays)               one batch of k <= batch_size rows -> NumPy outputs with k rows
  map(num_rows, inputs_for)  num_rows rows made batch by batch by inputs_for(range of row indices) (so a
                             long clip's inputs never sit in memory all at once) -> outputs concatenated
  compile(*row_specs)        compile ahead of time for per-row ShapeDtypeStructs (e.g. to time it)

Used by the generator (lipsync_jax.inference.lipsync), SyncNet v2 features (LSE) and the expert's sync
embeddings (lipsync_jax.evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

RowKey = tuple[tuple[tuple[int, ...], np.dtype], ...]


class BatchRunner:
  """`fn(variables, *arrays)` jitted on `batch_size` rows; the variables live on the default device."""

  def __init__(self, fn: Callable[..., Any], variables: Any, batch_size: int):
    if int(batch_size) < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.fn = fn
    self.batch_size = int(batch_size)
    self.variables = jax.device_put(variables)
    self.trace_count = 0
    self._compiled: dict[RowKey, Any] = {}

  def _traced(self, variables, *arrays):
    self.trace_count += 1  # runs only while tracing
    return self.fn(variables, *arrays)

  def compile(self, *row_specs: jax.ShapeDtypeStruct) -> Any:
    """The compiled function for inputs whose rows have these shapes / dtypes (compiled once)."""
    key = tuple((tuple(int(d) for d in spec.shape), np.dtype(spec.dtype)) for spec in row_specs)
    if key not in self._compiled:
      shapes = [jax.ShapeDtypeStruct((self.batch_size,) + shape, dtype) for shape, dtype in key]
      self._compiled[key] = jax.jit(self._traced).lower(self.variables, *shapes).compile()
    return self._compiled[key]

  def run(self, *arrays: np.ndarray) -> Any:
    """One batch of k <= batch_size rows (all inputs the same k) -> outputs (NumPy) with k rows."""
    arrays = tuple(np.asarray(a) for a in arrays)
    k = len(arrays[0])
    if any(len(a) != k for a in arrays):
      raise ValueError(f"inputs have different row counts: {[len(a) for a in arrays]}")
    if k == 0 or k > self.batch_size:
      raise ValueError(f"a batch of {k} rows; need 1 .. batch_size={self.batch_size}")
    if k < self.batch_size:
      arrays = tuple(np.concatenate([a, np.repeat(a[-1:], self.batch_size - k, 0)]) for a in arrays)
    compiled = self.compile(*(jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in arrays))
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
