"""The ('data', 'fsdp') mesh across TPU slices (config.mesh.dcn_data) and the batch-row rule
(sharding.process_batch_rows): built on fake device objects shaped like a pod's (ids, process and slice
indices, torus coordinates: what jax's mesh_utils reads), and on the test process's 8 fake CPU devices."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType

from lipsync_jax.training import sharding


@dataclasses.dataclass(frozen=True)
class FakeTpu:
  """A single-slice TPU device as jax.devices() shows it to mesh_utils (no slice_index)."""

  id: int
  process_index: int
  coords: tuple[int, int, int]
  core_on_chip: int = 0
  platform: str = "tpu"
  device_kind: str = "TPU v4"


@dataclasses.dataclass(frozen=True)
class FakeSliceTpu(FakeTpu):
  """A device of a multi-slice job: also carries slice_index."""

  slice_index: int = 0


def fake_pod(slices: int, slice_shape: tuple[int, int, int], host_shape: tuple[int, int, int]) -> list:
  """`slices` slices of chips on a `slice_shape` torus, each process (host) a `host_shape` tile of it;
  listed by process, as jax.devices() does. slices=0: one slice whose devices carry no slice_index."""
  hosts = list(itertools.product(*(range(0, n, h) for n, h in zip(slice_shape, host_shape))))
  devices = []
  for s, (t, origin) in itertools.product(range(max(slices, 1)), enumerate(hosts)):
    for offset in itertools.product(*(range(h) for h in host_shape)):
      coords = tuple(o + d for o, d in zip(origin, offset))
      common = dict(id=len(devices), process_index=s * len(hosts) + t, coords=coords)
      devices.append(FakeTpu(**common) if slices == 0 else FakeSliceTpu(**common, slice_index=s))
  return devices


def mesh_config(data: int = -1, fsdp: int = 1, dcn_data: int | None = 1) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict({"data": data, "fsdp": fsdp})
  if dcn_data is not None:
    c.dcn_data = dcn_data
  return c


def attr(mesh, name: str) -> np.ndarray:
  return np.vectorize(lambda d: getattr(d, name))(mesh.devices)


def assert_batch_row_rule(mesh, global_batch: int) -> list[tuple[int, int]]:
  """Every process holds one contiguous block of rows, the blocks tile the batch in process order (within a
  slice) and agree with the per-device indices of the batch sharding."""
  index_map = sharding.batch_sharding(mesh).devices_indices_map((global_batch,))
  processes = sorted({d.process_index for d in mesh.devices.flat})
  rows = [sharding.process_batch_rows(mesh, global_batch, process_index=p) for p in processes]
  for p, (start, stop) in zip(processes, rows):
    held = sorted(idx[0].indices(global_batch)[:2] for d, idx in index_map.items() if d.process_index == p)
    assert (held[0][0], held[-1][1]) == (start, stop)
    assert sum(b - a for a, b in held) == stop - start  # no gaps in between
  assert sorted(rows)[0][0] == 0 and sorted(rows)[-1][1] == global_batch
  assert sum(b - a for a, b in rows) == global_batch
  return rows


def assert_slices_are_data_blocks(mesh, num_slices: int) -> None:
  slices = attr(mesh, "slice_index")
  per_slice = mesh.shape["data"] // num_slices
  for s in range(num_slices):
    assert (slices[s * per_slice : (s + 1) * per_slice] == s).all(), slices
  assert all(len(set(row)) == 1 for row in slices)  # an fsdp group (a row) never crosses slices


def test_two_slices_of_one_host_each():
  devices = fake_pod(2, (2, 2, 1), (2, 2, 1))  # 2 slices x 4 devices, one process per slice
  mesh = sharding.make_mesh(mesh_config(dcn_data=2), devices)
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1}
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))
  assert_slices_are_data_blocks(mesh, 2)
  assert assert_batch_row_rule(mesh, 16) == [(0, 8), (8, 16)]

  fsdp = sharding.make_mesh(mesh_config(fsdp=2, dcn_data=-1), devices)  # -1 = all slices
  assert dict(fsdp.shape) == {"data": 4, "fsdp": 2}
  assert_slices_are_data_blocks(fsdp, 2)
  assert assert_batch_row_rule(fsdp, 8) == [(0, 4), (4, 8)]

  whole_slice = sharding.make_mesh(mesh_config(data=1, fsdp=-1, dcn_data=2), devices)
  assert dict(whole_slice.shape) == {"data": 2, "fsdp": 4}
  assert_slices_are_data_blocks(whole_slice, 2)


@pytest.mark.parametrize("data,fsdp", [(-1, 1), (-1, 2), (1, -1), (2, 2)])
def test_two_slices_of_two_hosts_each(data, fsdp):
  devices = fake_pod(2, (2, 2, 1), (2, 1, 1))  # 2 slices x 2 processes x 2 devices
  mesh = sharding.make_mesh(mesh_config(data, fsdp, dcn_data=2), devices)
  in_slice_fsdp = 4 if fsdp == -1 else fsdp
  assert dict(mesh.shape) == {"data": 2 * 4 // in_slice_fsdp, "fsdp": in_slice_fsdp}
  assert_slices_are_data_blocks(mesh, 2)
  rows = assert_batch_row_rule(mesh, 32)
  assert rows == [(0, 8), (8, 16), (16, 24), (24, 32)]  # process p: rows p*8 .. p*8+8
  assert sharding.num_batch_shards(mesh) == 8


@pytest.mark.parametrize("fsdp", [1, 4, 8, 16])
def test_two_multi_host_slices_whose_topology_order_interleaves_hosts(fsdp):
  devices = fake_pod(2, (2, 2, 4), (2, 2, 1))  # 2 v4-32-like slices: 2 x 4 processes x 4 devices
  mesh = sharding.make_mesh(mesh_config(fsdp=fsdp, dcn_data=2), devices)
  assert dict(mesh.shape) == {"data": 32 // fsdp, "fsdp": fsdp}
  assert sorted(d.id for d in mesh.devices.flat) == list(range(32))
  assert_slices_are_data_blocks(mesh, 2)
  rows = assert_batch_row_rule(mesh, 64)
  assert sorted(rows[:4]) == [(8 * p, 8 * p + 8) for p in range(4)]  # slice 0's processes: first half
  assert sorted(rows[4:]) == [(8 * p, 8 * p + 8) for p in range(4, 8)]


def test_multislice_errors_name_the_config_keys():
  devices = fake_pod(2, (2, 2, 1), (2, 2, 1))
  with pytest.raises(ValueError, match=r"config\.mesh\.dcn_data=3.*2 slice\(s\).*--config\.mesh\.dcn_data=2"):
    sharding.make_mesh(mesh_config(dcn_data=3), devices)
  with pytest.raises(ValueError, match=r"config\.mesh\.dcn_data=1.*2 slice\(s\)"):  # default on 2 slices
    sharding.make_mesh(mesh_config(dcn_data=None), devices)
  with pytest.raises(ValueError, match=r"config\.mesh\.dcn_data=2.*1 slice\(s\).*dcn_data=1"):
    sharding.make_mesh(mesh_config(dcn_data=2), fake_pod(0, (2, 2, 2), (2, 2, 1)))
  with pytest.raises(ValueError, match=r"config\.mesh\.fsdp=8 does not fit in one slice \(4 devices\)"):
    sharding.make_mesh(mesh_config(data=1, fsdp=8, dcn_data=2), devices)
  with pytest.raises(ValueError, match=r"config\.mesh\.fsdp=3 does not fit in one slice"):
    sharding.make_mesh(mesh_config(fsdp=3, dcn_data=2), devices)
  with pytest.raises(ValueError, match=r"config\.mesh: data=3 x fsdp=1 does not fit 4 devices per slice"):
    sharding.make_mesh(mesh_config(data=3, dcn_data=2), devices)
  uneven = devices[:6]  # slice 1 lost two devices
  with pytest.raises(ValueError, match=r"config\.mesh\.dcn_data=2: the slices hold different numbers"):
    sharding.make_mesh(mesh_config(dcn_data=2), uneven)


def test_single_slice_pod_order_is_made_process_contiguous():
  # A v4-32-like slice: 2x2x4 chips, 4 hosts of 2x2x1. jax.make_mesh's topology order for a data-only mesh
  # runs over z fastest (x * 8 + y * 4 + z), so the hosts (one z-plane each) interleave: process 0 would
  # hold rows 0-1, 8-9, 16-17, 24-25.
  devices = fake_pod(0, (2, 2, 4), (2, 2, 1))
  raw = jax.make_mesh((16, 1), sharding.MESH_AXES, devices=devices)
  with pytest.raises(ValueError, match="not one contiguous block"):
    sharding.process_batch_rows(raw, 32, process_index=0)

  mesh = sharding.make_mesh(mesh_config(), devices)
  assert dict(mesh.shape) == {"data": 16, "fsdp": 1}
  assert sorted(d.id for d in mesh.devices.flat) == list(range(16))
  assert assert_batch_row_rule(mesh, 32) == [(0, 8), (8, 16), (16, 24), (24, 32)]

  # fsdp=2: jax.make_mesh puts each fsdp pair inside a host; the groups are kept, only their order changes.
  raw2 = jax.make_mesh((8, 2), sharding.MESH_AXES, devices=devices)
  mesh2 = sharding.make_mesh(mesh_config(fsdp=2), devices)
  groups = lambda m: sorted(tuple(sorted(d.id for d in row)) for row in m.devices)
  assert groups(mesh2) == groups(raw2)
  assert_batch_row_rule(mesh2, 16)

  # v4-128-like (4x4x4, 16 hosts of 2x2x1), fsdp=16: each of jax.make_mesh's groups is 4 whole hosts, but
  # the hosts of one group are not consecutive processes; the groups are kept (a plain sort by process
  # would regroup them).
  pod = fake_pod(0, (4, 4, 4), (2, 2, 1))
  raw16 = jax.make_mesh((4, 16), sharding.MESH_AXES, devices=pod)
  assert [sorted({d.process_index for d in row}) for row in raw16.devices][0] != [0, 1, 2, 3]
  mesh16 = sharding.make_mesh(mesh_config(fsdp=16), pod)
  assert groups(mesh16) == groups(raw16)
  rows16 = assert_batch_row_rule(mesh16, 64)
  assert sorted(rows16) == [(4 * p, 4 * p + 4) for p in range(16)]
  assert rows16[1] == (16, 20)  # blocks follow the kept groups, not the process index: ask process_batch_rows

  # fsdp=8: jax.make_mesh's groups each take two devices of every host, so no reordering of the groups can
  # make processes contiguous; the groups are rebuilt from consecutive processes (two hosts each).
  mesh8 = sharding.make_mesh(mesh_config(fsdp=8), devices)
  assert [sorted({d.process_index for d in row}) for row in mesh8.devices] == [[0, 1], [2, 3]]
  assert assert_batch_row_rule(mesh8, 16) == [(0, 4), (4, 8), (8, 12), (12, 16)]


def test_process_contiguous_grid_is_left_as_built():
  devices = fake_pod(2, (2, 2, 1), (2, 1, 1))
  grid = np.array(devices, dtype=object).reshape(4, 2)
  assert sharding.order_processes_contiguously(grid) is grid
  swapped = grid[[1, 0, 2, 3]]  # contiguous, though not in process order: also kept
  assert sharding.order_processes_contiguously(swapped) is swapped


def test_cpu_devices_dcn_data_1_is_the_jax_make_mesh_mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  axis_types = (AxisType.Auto,) * 2
  for data, fsdp, shape in [(-1, 1, (8, 1)), (-1, 2, (4, 2)), (2, -1, (2, 4))]:
    expected = jax.make_mesh(shape, sharding.MESH_AXES, axis_types=axis_types)
    for dcn in (1, -1, None):  # explicit, "all slices" (= the one slice), key absent (older configs)
      mesh = sharding.make_mesh(mesh_config(data, fsdp, dcn_data=dcn))
      assert mesh == expected
      assert [d.id for d in mesh.devices.flat] == [d.id for d in expected.devices.flat]
  with pytest.raises(ValueError, match=r"config\.mesh\.dcn_data=2, but the devices form 1 slice"):
    sharding.make_mesh(mesh_config(dcn_data=2))


@pytest.mark.parametrize("fsdp", [1, 2])
def test_sharded_batch_rows_match_process_batch_rows(fsdp):
  mesh = sharding.make_mesh(mesh_config(fsdp=fsdp))
  global_batch = 16
  start, stop = sharding.process_batch_rows(mesh, global_batch)
  assert (start, stop) == (0, global_batch)  # one process holds everything
  assert sharding.check_global_batch_size(global_batch, mesh) == stop - start
  rows = np.arange(start, stop, dtype=np.int32)[:, None] * np.ones((1, 3), np.int32)
  batch = sharding.shard_batch({"x": rows}, mesh)["x"]
  assert batch.shape == (global_batch, 3) and batch.sharding == sharding.batch_sharding(mesh)
  held = []
  for shard in batch.addressable_shards:
    lo, hi, _ = shard.index[0].indices(global_batch)
    np.testing.assert_array_equal(np.asarray(shard.data)[:, 0], np.arange(lo, hi))  # row r holds value r
    held.append((lo, hi))
  assert len(held) == 8 and sorted(held) == [(2 * i, 2 * i + 2) for i in range(8)]
  assert (min(held)[0], max(held)[1]) == (start, stop)
  with pytest.raises(ValueError, match="process 1 holds no device"):
    sharding.process_batch_rows(mesh, global_batch, process_index=1)
  with pytest.raises(ValueError, match=r"config\.data\.global_batch_size=12"):
    sharding.process_batch_rows(mesh, 12)


def test_describe_counts_slices():
  mesh = sharding.make_mesh(mesh_config(dcn_data=2), fake_pod(2, (2, 2, 1), (2, 2, 1)))
  assert "in 2 slices" in sharding.describe(mesh) and "tpu" in sharding.describe(mesh)
  assert "slices" not in sharding.describe(sharding.make_mesh(mesh_config()))
