"""Sums over data-parallel replicas: the one place that decides how a reduction that crosses devices is done.

Under plain `jax.jit` with the batch sharded over the mesh (the default) a step is written for the GLOBAL
batch and GSPMD turns its batch reductions (BatchNorm moments, loss means, weight gradients) into
all-reduces whose summation order belongs to the collective: XLA's in-process all-reduce, gloo, NCCL and
ICI add the per-device partial sums in different orders. So the same global batch gives float-different
gradients on 1 process x 4 devices and on 2 processes x 2 devices (measured: ~1e-3 relative in the
gradient norm of the tiny GAN at step 1, BatchNorm over near-constant channels), and Adam turns that into
losses that drift apart by ~1e-5 within 5 steps.

`config.mesh.deterministic = True` runs the train and eval steps per device instead (`jax.shard_map` over
the batch axes; `lipsync_jax.training.sharding.fixed_order_step`): each device computes on its own rows and
every sum across devices is `psum` below, a butterfly of exact exchanges (`lax.ppermute`): in round k every
device adds the value of the device whose mesh position differs in bit k. Float addition is commutative, so
both partners get the same bits, and the association is fixed by the mesh positions alone: the sum's bits
depend on the number of devices and on nothing about processes, hosts or the collective library. Device
counts that are not a power of two all-gather the partial sums and add them in position order (memory: one
copy per device; fine for statistics, costly for gradients of large models). The price against XLA's
all-reduce: log2(D) full-size exchanges instead of one ring all-reduce, and BatchNorm's moments become
small exchanges of their own; it is opt-in, for reproducing a run bit for bit on another process layout.

The step code calls `psum` / `pmean` / `count` unconditionally: outside `per_device` (plain jit) they are
the identity and 1, so the default program is unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
from jax import lax


@dataclasses.dataclass(frozen=True)
class _Replicas:
  axis_names: tuple[str, ...]
  size: int


_CURRENT: contextvars.ContextVar[_Replicas | None] = contextvars.ContextVar("replicas", default=None)


@contextlib.contextmanager
def per_device(axis_names: Sequence[str], size: int) -> Iterator[None]:
  """While tracing a step under jax.shard_map over `axis_names` (`size` devices in all): `psum` / `pmean`
  reduce over those devices in a fixed order and `count()` is `size`."""
  token = _CURRENT.set(_Replicas(tuple(axis_names), int(size)))
  try:
    yield
  finally:
    _CURRENT.reset(token)


def count() -> int:
  """Number of replicas the current step's batch is split over (1 under plain jit)."""
  current = _CURRENT.get()
  return 1 if current is None else current.size


def psum(tree: Any) -> Any:
  """Sum of every leaf over the replicas, in a fixed order (identity under plain jit)."""
  current = _CURRENT.get()
  if current is None or current.size == 1:
    return tree
  return jax.tree.map(lambda x: _fixed_order_sum(x, current), tree)


def pmean(tree: Any) -> Any:
  """Mean of every leaf over the replicas (the global mean of equal-sized per-device means)."""
  n = count()
  if n == 1:
    return tree
  return jax.tree.map(lambda x: x / n, psum(tree))


def _fixed_order_sum(x: jax.Array, replicas: _Replicas) -> jax.Array:
  n, axes = replicas.size, replicas.axis_names
  if n & (n - 1) == 0:  # power of two: butterfly, 2x the leaf's memory
    k = 1
    while k < n:
      x = x + lax.ppermute(x, axes, perm=[(i, i ^ k) for i in range(n)])
      k *= 2
    return x
  gathered = lax.all_gather(x, axes)  # (n, ...) in mesh-position order on every device
  total = gathered[0]
  for i in range(1, n):
    total = total + gathered[i]
  return total
