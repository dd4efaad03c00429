"""lipsync_jax.fs against a real GCS-API server on loopback (the gcs_dir fixture): every operation the
project uses, on gs:// and locally, with the same results."""

from __future__ import annotations

import os

import pytest

from lipsync_jax import fs


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "root")
  return request.getfixturevalue("gcs_dir")


def test_file_operations(root):
  fs.makedirs(f"{root}/a/b")
  with fs.open(f"{root}/a/b/x.bin", "wb") as f:
    f.write(bytes(range(256)) * 4)
  with fs.open(f"{root}/a/y.txt", "w") as f:
    f.write("hello")
  assert fs.exists(f"{root}/a/y.txt") and fs.isfile(f"{root}/a/y.txt") and not fs.isdir(f"{root}/a/y.txt")
  assert fs.isdir(f"{root}/a/b")
  assert fs.listdir(f"{root}/a") == ["b", "y.txt"]
  assert fs.size(f"{root}/a/b/x.bin") == 1024
  assert fs.read_range(f"{root}/a/b/x.bin", 254, 4) == bytes([254, 255, 0, 1])
  assert fs.read_range(f"{root}/a/b/x.bin", 1020, 100) == bytes([252, 253, 254, 255])
  assert [os.path.basename(p) for p in fs.glob(f"{root}/**/*.bin")] == ["x.bin"]
  fs.copy(f"{root}/a/y.txt", f"{root}/a/z.txt")
  with fs.open(f"{root}/a/z.txt") as f:
    assert f.read() == "hello"
  fs.move(f"{root}/a", f"{root}/moved")
  assert not fs.exists(f"{root}/a/y.txt")
  assert fs.listdir(f"{root}/moved") == ["b", "y.txt", "z.txt"]
  assert fs.read_range(f"{root}/moved/b/x.bin", 0, 2) == bytes([0, 1])
  fs.remove(f"{root}/moved/z.txt")
  assert not fs.exists(f"{root}/moved/z.txt")
  fs.rmtree(f"{root}/moved")
  assert not fs.exists(f"{root}/moved/b/x.bin")
  fs.rmtree(f"{root}/never-made")  # no error


def test_local_copy_and_staged_output(root, tmp_path):
  target = f"{root}/out/clip.bin"
  with fs.staged_output(target) as local:
    assert not fs.is_remote(local)
    with open(local, "wb") as f:
      f.write(b"encoded")
  with fs.local_copy(target) as local:
    with open(local, "rb") as f:
      assert f.read() == b"encoded"
  with pytest.raises(RuntimeError):
    with fs.staged_output(f"{root}/out/failed.bin") as local:
      with open(local, "wb") as f:
        f.write(b"half")
      raise RuntimeError("encoder failed")
  assert not fs.exists(f"{root}/out/failed.bin")  # nothing half-written reaches the destination


def test_move_between_local_and_remote(gcs_dir, tmp_path):
  local = tmp_path / "d"
  (local / "sub").mkdir(parents=True)
  (local / "sub" / "f.txt").write_text("x")
  fs.move(str(local), f"{gcs_dir}/d")
  assert not local.exists()
  with fs.open(f"{gcs_dir}/d/sub/f.txt") as f:
    assert f.read() == "x"
  fs.move(f"{gcs_dir}/d", str(tmp_path / "back"))
  assert (tmp_path / "back" / "sub" / "f.txt").read_text() == "x"
  assert not fs.exists(f"{gcs_dir}/d/sub/f.txt")


def test_epath_and_orbax_use_gcsfs(gcs_dir):
  """orbax (through epath and tensorstore) saves to and restores from the emulator."""
  import numpy as np
  import orbax.checkpoint as ocp

  assert os.environ["EPATH_USE_TF"] == "false"
  with ocp.CheckpointManager(f"{gcs_dir}/ckpt") as manager:
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.arange(5.0)})))
    manager.wait_until_finished()
    assert manager.all_steps() == [3]
    restored = manager.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore({"w": np.zeros(5)})))
  np.testing.assert_array_equal(restored["state"]["w"], np.arange(5.0))
  assert fs.isdir(f"{gcs_dir}/ckpt/3")
