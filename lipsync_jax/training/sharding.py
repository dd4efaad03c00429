"""Device mesh and shardings: how batches and train state are laid out over devices, and which rows of
the global batch each process feeds.

The mesh has two axes, ('data', 'fsdp'). Batches are split on their leading dimension over both axes (every
device gets a different slice of the global batch). Train-state leaves are either replicated, or - with
`config.mesh.param_sharding = 'fsdp'` - sharded over 'fsdp' on their largest dimension that the 'fsdp'
size divides (leaves with no such dimension, and small leaves, stay replicated). The same code runs on one
CPU, an 8-GPU host, a TPU pod slice and several slices: each process hands in its own rows of the batch and
`jax.make_array_from_process_local_data` assembles the global array.

Building the mesh (`make_mesh`):
- One slice (devices without `slice_index`, or all with the same one; `config.mesh.dcn_data` = 1 or -1):
  `jax.make_mesh` with (data, fsdp) from `config.mesh.data` / `config.mesh.fsdp` (topology-aware order).
- Several slices over DCN (`config.mesh.dcn_data` = the number of slices, or -1): data parallelism across
  slices. `mesh_utils.create_hybrid_device_mesh` places a (data, fsdp) mesh inside each slice (ICI;
  `config.mesh.data` / `fsdp` size it per slice) and stacks the slices along 'data' (DCN shape
  (dcn_data, 1)): the 'data' axis is slices x in-slice data, slice s holds the s-th contiguous block of it,
  every fsdp group stays inside one slice, and only the gradient all-reduce over 'data' crosses DCN.

The batch-row rule: with the batch split over ('data', 'fsdp'), the device at mesh position (d, f) holds
rows block d * fsdp + f of the global batch, i.e. the blocks follow the row-major (flattened) mesh order.
`make_mesh` orders the devices so that each process's devices are consecutive in that order (and slices
stay whole blocks), so each process holds one contiguous range of rows, `process_batch_rows(mesh, n)` =
[start, stop): the input pipeline materialises exactly those rows. When the topology-aware order
interleaves processes (a pod's physical order does, hosts being 2x2 tiles of the torus), the devices are
reordered: first inside each fsdp group and between groups (the groups stay as built), and only if that
cannot make every process contiguous, by a stable sort on (slice, process) of the flattened order (then an
fsdp group is consecutive processes of one slice). A single process (and any order that is already
contiguous) is left exactly as built. Slices come in slice_index order, but inside a slice the blocks follow
the mesh, not necessarily the process index: a process asks `process_batch_rows` for its rows, it never
assumes process_index * rows_per_process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lipsync_jax import replicas

MESH_AXES = ('data', 'fsdp')
BATCH_AXES = ('data', 'fsdp')  # the leading (batch) dimension is split over both axes
PARAM_SHARDING_MODES = ('replicated', 'fsdp')
# Leaves with fewer elements than this stay replicated under FSDP (biases, norms, scalars).
FSDP_MIN_SIZE = 2**12


def mesh_shape(mesh_config, num_devices: int, scope: str = '') -> tuple[int, int]:
  """Resolves the ('data', 'fsdp') sizes from config; at most one -1 (= fill with the remaining devices).

  `num_devices` is what the two sizes must fill: all devices, or one slice's (then `scope` says so in the
  errors)."""
  sizes = [int(mesh_config.data), int(mesh_config.fsdp)]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh: at most one of data/fsdp may be -1, got data={sizes[0]} fsdp={sizes[1]}.')
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
    raise ValueError(
      f'config.mesh: data={sizes[0]} x fsdp={sizes[1]} does not fit {num_devices} devices{scope}; '
      'use sizes whose product divides the device count (-1 = fill).'
    )
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f'config.mesh: data={sizes[0]} x fsdp={sizes[1]} = {math.prod(sizes)} devices, '
      f'but {num_devices} are available{scope}; set one size to -1 to fill.'
    )
  return tuple(sizes)


def slice_groups(devices: Sequence[Any]) -> dict[int, list[Any]]:
  """Devices by `slice_index` (TPU slices over DCN; devices without the attribute are one slice, 0)."""
  groups: dict[int, list[Any]] = {}
  for d in devices:
    groups.setdefault(int(getattr(d, 'slice_index', 0)), []).append(d)
  return dict(sorted(groups.items()))


def resolve_dcn_data(mesh_config, num_slices: int) -> int:
  """`config.mesh.dcn_data` (absent = 1; -1 = all slices), checked against the slices the devices form."""
  dcn = int(mesh_config.get('dcn_data', 1))
  if dcn == -1:
    return num_slices
  if dcn != num_slices:
    raise ValueError(
      f'config.mesh.dcn_data={dcn}, but the devices form {num_slices} slice(s) (distinct device.slice_index); '
      f'set --config.mesh.dcn_data={num_slices} (or -1 = all slices): data parallelism spans exactly the '
      'slices of the job (TPU slices over DCN; on GPUs jax makes each node a slice unless '
      'jax.distributed.initialize(partition_index=...) groups nodes).'
    )
  return dcn


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
  """Builds the ('data', 'fsdp') Mesh over all (global) devices: jax.make_mesh within one slice,
  mesh_utils.create_hybrid_device_mesh across slices (see the module docstring), then each process's
  devices made consecutive in the flattened order (the batch-row rule)."""
  devices = jax.devices() if devices is None else list(devices)
  slices = slice_groups(devices)
  dcn = resolve_dcn_data(mesh_config, len(slices))
  if dcn == 1:
    shape = mesh_shape(mesh_config, len(devices))
    grid = jax.make_mesh(
      shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    ).devices
  else:
    sizes = {s: len(group) for s, group in slices.items()}
    per_slice = len(devices) // dcn
    if set(sizes.values()) != {per_slice}:
      raise ValueError(
        f'config.mesh.dcn_data={dcn}: the slices hold different numbers of devices ({sizes} by slice_index); '
        'multi-slice data parallelism needs equal slices: use slices of one topology.'
      )
    fsdp = int(mesh_config.fsdp)
    if fsdp != -1 and (fsdp > per_slice or per_slice % fsdp):
      raise ValueError(
        f'config.mesh.fsdp={fsdp} does not fit in one slice ({per_slice} devices): fsdp groups stay inside a '
        f'slice (only the data axis crosses slices, over DCN); use an fsdp that divides {per_slice}.'
      )
    ici = mesh_shape(
      mesh_config, per_slice, scope=f' per slice (config.mesh.data/fsdp size one of {dcn} slices)'
    )
    # allow_split_physical_axes=True only matters when no whole-axis assignment exists (it is tried first);
    # then the mesh splits a torus axis instead of failing, as jax.make_mesh does on v5e.
    grid = mesh_utils.create_hybrid_device_mesh(ici, (dcn, 1), devices, allow_split_physical_axes=True)
  grid = order_processes_contiguously(grid)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _is_contiguous(ranks: np.ndarray) -> bool:
  """Each value of the flattened `ranks` forms a single run."""
  flat = ranks.ravel()
  runs = 1 + int(np.count_nonzero(flat[1:] != flat[:-1]))
  return runs == len(np.unique(flat))


def order_processes_contiguously(grid: np.ndarray) -> np.ndarray:
  """Reorders a (data, fsdp) device grid so that each process's devices are consecutive in row-major order,
  slices kept as whole, ordered blocks; a grid that already is (one process, CPU, one GPU host) is returned
  as it is.

  Hand-written: mesh_utils' `contiguous_submeshes` asks for rectangular per-process sub-meshes on a few
  topologies, not for the flattened (batch-row) order, which is what `P(('data', 'fsdp'))` needs.
  First it only permutes devices inside each fsdp group (row) and then the groups (keeping the groups, so
  the topology-aware fsdp placement survives); if that is not enough (a group shares processes with
  another group), a stable sort by (slice, process) of the flattened order (groups become runs of
  consecutive processes of one slice)."""
  key = lambda d: (int(getattr(d, 'slice_index', 0)), int(d.process_index))
  rank_of = {k: i for i, k in enumerate(sorted({key(d) for d in grid.flat}))}
  ranks = np.vectorize(lambda d: rank_of[key(d)], otypes=[int])(grid)
  if _is_contiguous(ranks):
    return grid
  within = np.argsort(ranks, axis=1, kind='stable')
  grid, ranks = np.take_along_axis(grid, within, axis=1), np.take_along_axis(ranks, within, axis=1)
  rows = np.lexsort(ranks.T[::-1])  # lexicographic by row, stable
  grid, ranks = grid[rows], ranks[rows]
  if not _is_contiguous(ranks):
    flat = np.argsort(ranks.ravel(), kind='stable')
    grid = grid.ravel()[flat].reshape(grid.shape)
    logging.info('mesh: fsdp groups regrouped so that each process holds consecutive batch rows')
  return grid


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading dimension split over ('data', 'fsdp'); other dimensions whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def num_batch_shards(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def fixed_order_step(step_fn: Callable[..., Any], mesh: Mesh, param_sharding: str = 'replicated'):
  """`step_fn(state, batch, expert_variables)` run per device (config.mesh.deterministic): jax.shard_map
  over the batch axes, the state and the expert replicated, each device on its own rows, and every sum
  across devices the fixed-order one of lipsync_jax.replicas (bit-identical results on any process layout
  of the same device count). The outputs (new state, metrics) are replicated: every device computed the
  same bits. Jit the result as the plain step (same in/out shardings)."""
  if param_sharding != 'replicated':
    raise ValueError(
      f'config.mesh.deterministic=True runs the step per device on a replicated state; '
      f'config.mesh.param_sharding={param_sharding!r} shards it. Use param_sharding=replicated, or '
      'deterministic=False (GSPMD all-reduces: float-equal only up to the collective\'s summation order).'
    )
  size = num_batch_shards(mesh)

  def per_device(state, batch, expert_variables):
    with replicas.per_device(BATCH_AXES, size):
      return step_fn(state, batch, expert_variables)

  # check_vma=False: the replicated outputs are replicated by construction (fixed-order sums), and with it
  # jax does not insert its own psum (an all-reduce in the collective's order) when differentiating.
  return jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(), P(BATCH_AXES), P()), out_specs=P(), check_vma=False
  )


def jit_train_step(
  step_fn: Callable[..., Any],
  mesh: Mesh,
  state_shardings: Any,
  deterministic: bool = False,
  param_sharding: str = 'replicated',
):
  """`step_fn(state, batch, expert_variables) -> (state, metrics)` jitted as the train loop runs it: the
  state in `state_shardings` and donated, the batch split over the batch axes, the frozen expert and the
  metrics replicated; per device with fixed-order sums when `deterministic` (fixed_order_step)."""
  fn = fixed_order_step(step_fn, mesh, param_sharding) if deterministic else step_fn
  rep = replicated(mesh)
  return jax.jit(
    fn,
    in_shardings=(state_shardings, batch_sharding(mesh), rep),
    out_shardings=(state_shardings, rep),
    donate_argnums=(0,),
  )


def jit_eval_step(
  step_fn: Callable[..., Any],
  mesh: Mesh,
  state_shardings: Any,
  deterministic: bool = False,
  param_sharding: str = 'replicated',
):
  """`step_fn(state, batch, expert_variables) -> metrics` jitted as the loop evaluates (nothing donated)."""
  fn = fixed_order_step(step_fn, mesh, param_sharding) if deterministic else step_fn
  rep = replicated(mesh)
  return jax.jit(fn, in_shardings=(state_shardings, batch_sharding(mesh), rep), out_shardings=rep)


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
  """Validates the batch split and returns this process's share of the global batch (its
  `process_batch_rows`, which also checks they are one contiguous block)."""
  shards, procs = num_batch_shards(mesh), jax.process_count()
  if global_batch_size % shards or global_batch_size % procs:
    raise ValueError(
      f'config.data.global_batch_size={global_batch_size} must be divisible by the number of '
      f'batch shards ({shards} = data x fsdp) and processes ({procs}).'
    )
  start, stop = process_batch_rows(mesh, global_batch_size)
  return stop - start


def process_batch_rows(
  mesh: Mesh, global_batch_size: int, process_index: int | None = None
) -> tuple[int, int]:
  """The rows [start, stop) of the global batch that the devices of `process_index` (default: this
  process) hold under `batch_sharding(mesh)`: what that process's input pipeline must produce, in order.

  Raises if they are not one contiguous block (a mesh not built by `make_mesh`), or if the process holds
  no device of the mesh."""
  shards = num_batch_shards(mesh)
  if global_batch_size % shards:
    raise ValueError(
      f'config.data.global_batch_size={global_batch_size} must be divisible by the number of '
      f'batch shards ({shards} = data x fsdp).'
    )
  process_index = jax.process_index() if process_index is None else int(process_index)
  index_map = batch_sharding(mesh).devices_indices_map((global_batch_size,))
  blocks = sorted(
    {
      idx[0].indices(global_batch_size)[:2]
      for d, idx in index_map.items()
      if d.process_index == process_index
    }
  )
  if not blocks:
    raise ValueError(
      f'process {process_index} holds no device of the mesh {dict(mesh.shape)}; build the mesh over all '
      'processes\' devices (sharding.make_mesh uses jax.devices()).'
    )
  for (_, stop), (start, _) in zip(blocks, blocks[1:]):
    if start != stop:
      raise ValueError(
        f'process {process_index} holds rows {blocks} of the global batch ({global_batch_size}), not one '
        'contiguous block; build the mesh with sharding.make_mesh, which orders each process\'s devices '
        'consecutively.'
      )
  return blocks[0][0], blocks[-1][1]


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
  """This process's rows of the batch (`process_batch_rows`) (pytree of NumPy arrays) -> global jax.Arrays split over the mesh."""
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
  slices = len(slice_groups(list(mesh.devices.flat)))
  return (
    f'mesh {dict(mesh.shape)} over {mesh.devices.size} {mesh.devices.flat[0].platform} devices'
    f'{f" in {slices} slices" if slices > 1 else ""}, {jax.process_count()} process(es)'
  )


def log_state_layout(shardings: Any) -> None:
  counts: dict[str, int] = {}
  for s in jax.tree.leaves(shardings):
    key = str(s.spec)
    counts[key] = counts.get(key, 0) + 1
  logging.info('train-state leaf shardings: %s', counts)
