"""Device mesh and shardings: how batches and train state are laid out over devices.

The mesh has two axes, ('data', 'fsdp'). Batches are split on their leading dimension over both axes (every
device gets a different slice of the global batch). Train-state leaves are either replicated, or - with
`config.mesh.param_sharding = 'fsdp'` - sharded over 'fsdp' on their largest dimension that the 'fsdp'
size divides (leaves with no such dimension, and small leaves, stay replicated). The same code runs on one
CPU, an 8-GPU host and a TPU pod: each process hands in its own slice of the batch and
`jax.make_array_from_process_local_data` assembles the global array.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ('data', 'fsdp')
BATCH_AXES = ('data', 'fsdp')  # the leading (batch) dimension is split over both axes
PARAM_SHARDING_MODES = ('replicated', 'fsdp')
# Leaves with fewer elements than this stay replicated under FSDP (biases, norms, scalars).
FSDP_MIN_SIZE = 2**12


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int]:
  """Resolves the ('data', 'fsdp') sizes from config; at most one -1 (= fill with the remaining devices)."""
  sizes = [int(mesh_config.data), int(mesh_config.fsdp)]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh: at most one of data/fsdp may be -1, got data={sizes[0]} fsdp={sizes[1]}.')
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
    raise ValueError(
      f'config.mesh: data={sizes[0]} x fsdp={sizes[1]} does not fit {num_devices} devices; '
      'use sizes whose product divides the device count (-1 = fill).'
    )
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f'config.mesh: data={sizes[0]} x fsdp={sizes[1]} = {math.prod(sizes)} devices, '
      f'but {num_devices} are available; set one size to -1 to fill.'
    )
  return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> Mesh:
  """Builds the ('data', 'fsdp') Mesh over all (global) devices, topology-aware via jax.make_mesh."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading dimension split over ('data', 'fsdp'); other dimensions whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def num_batch_shards(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def leaf_partition_spec(shape: tuple[int, ...], mesh: Mesh, mode: str) -> P:
  """'replicated' -> P(); 'fsdp' -> the largest dimension divisible by the fsdp size goes over 'fsdp'."""
  if mode not in PARAM_SHARDING_MODES:
    raise ValueError(f'config.mesh.param_sharding={mode!r}; expected one of {PARAM_SHARDING_MODES}.')
  fsdp = mesh.shape['fsdp']
  if mode == 'replicated' or fsdp == 1 or math.prod(shape) < FSDP_MIN_SIZE:
    return P()
  candidates = [(size, -i) for i, size in enumerate(shape) if size % fsdp == 0]
  if not candidates:
    return P()
  dim = -max(candidates)[1]
  spec = [None] * len(shape)
  spec[dim] = 'fsdp'
  return P(*spec)


def state_shardings(abstract_state: Any, mesh: Mesh, mode: str) -> Any:
  """NamedSharding per leaf of an (abstract, e.g. jax.eval_shape) train state."""
  return jax.tree.map(
    lambda x: NamedSharding(mesh, leaf_partition_spec(tuple(x.shape), mesh, mode)), abstract_state
  )


def check_global_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Validates the batch split and returns this process's share of the global batch."""
  shards, procs = num_batch_shards(mesh), jax.process_count()
  if global_batch_size % shards or global_batch_size % procs:
    raise ValueError(
      f'config.data.global_batch_size={global_batch_size} must be divisible by the number of '
      f'batch shards ({shards} = data x fsdp) and processes ({procs}).'
    )
  return global_batch_size // procs


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
  """This process's slice of the batch (pytree of NumPy arrays) -> global jax.Arrays split over the mesh."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Host values (identical on every process) -> replicated global arrays (e.g. the frozen expert)."""
  sharding = replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx, x=x: np.asarray(x)[idx]), tree
  )


def reshard(tree: Any, shardings: Any) -> Any:
  """Leaves whose sharding differs from the target (e.g. a value a host-side schedule replaced) -> put
  there; leaves already laid out as asked are returned as they are (no copy, no compile)."""

  def put(x, s):
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(s, x.ndim):
      return x
    value = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(value.shape, s, lambda idx: value[idx])

  return jax.tree.map(put, tree, shardings)


def describe(mesh: Mesh) -> str:
  return (
    f'mesh {dict(mesh.shape)} over {mesh.devices.size} {jax.devices()[0].platform} devices, '
    f'{jax.process_count()} process(es)'
  )


def log_state_layout(shardings: Any) -> None:
  counts: dict[str, int] = {}
  for s in jax.tree.leaves(shardings):
    key = str(s.spec)
    counts[key] = counts.get(key, 0) + 1
  logging.info('train-state leaf shardings: %s', counts)
