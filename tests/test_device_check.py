"""bench/device_check.py: the peak table and MFU arithmetic, the time budget, error capture per item, the
table, the FLOP figures' attachment, and one tiny end-to-end run in a subprocess (CPU, --quick)."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_check", REPO / "bench" / "device_check.py")
device_check = importlib.util.module_from_spec(_spec)
sys.modules["device_check"] = device_check  # dataclasses look their module up while the class is built
_spec.loader.exec_module(device_check)


@pytest.mark.parametrize(
  "kind, peak",
  [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5", 459e12),  # v5p, older name
    ("TPU v5p", 459e12),
    ("TPU v4 lite", None),  # not taken for a v4
    ("TPU v6 lite", 918e12),  # v6e
    ("cpu", None),
    ("NVIDIA GeForce RTX 4090", None),
  ],
)
def test_peak_flops_per_device_longest_matching_kind(kind, peak):
  assert device_check.peak_flops_per_device(kind) == peak


def test_mfu_is_achieved_over_peak_of_all_devices():
  # 2e11 FLOP/sample x 400 samples/s = 8e13 FLOP/s over 2 x 1e14 peak.
  assert device_check.mfu(2e11, 400.0, 1e14, 2) == pytest.approx(0.4)
  assert device_check.mfu(2e11, 400.0, 1e14, 1) == pytest.approx(0.8)
  assert device_check.mfu(2e11, 400.0, None, 1) is None  # unknown device
  assert device_check.mfu(None, 400.0, 1e14, 1) is None  # FLOPs not counted
  assert device_check.mfu(float("nan"), 400.0, 1e14, 1) is None


def test_train_batch_overrides():
  assert device_check.parse_train_batch("gan=64, expert=256") == {"gan": 64, "expert": 256}
  assert device_check.parse_train_batch("") == {}
  for bad in ("gan", "gen=4", "gan=0", "gan=x"):
    with pytest.raises(ValueError, match="--train_batch"):
      device_check.parse_train_batch(bad)


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_budget_counts_from_start():
  clock = FakeClock()
  budget = device_check.Budget(10.0, start=95.0, clock=clock)
  assert budget.elapsed() == pytest.approx(5.0) and budget.left() == pytest.approx(5.0)
  assert not budget.spent()
  clock.now = 105.0
  assert budget.spent()


def test_run_item_records_errors_and_skips_once_the_budget_is_spent():
  clock = FakeClock()
  budget = device_check.Budget(10.0, start=100.0, clock=clock)
  items, saves = [], []

  def fails():
    raise RuntimeError("out of memory on purpose")

  ok = device_check.run_item(items, "a", lambda: {"step_ms": 3.0}, budget, lambda: saves.append(1))
  bad = device_check.run_item(items, "b", fails, budget, lambda: saves.append(1))
  clock.now = 111.0
  called = []
  skipped = device_check.run_item(items, "c", lambda: called.append(1) or {}, budget)
  assert [i["status"] for i in items] == ["ok", "error", "skipped"]
  assert ok["step_ms"] == 3.0 and ok["seconds"] >= 0
  assert "RuntimeError: out of memory on purpose" in bad["error"] and "fails" in bad["traceback"]
  assert not called and "budget 10 s spent" in skipped["note"]
  assert len(saves) == 2  # the JSON is rewritten after every item


def test_attach_flops_fills_mfu_and_says_why_not():
  items = [
    {"name": "gan", "status": "ok", "stage": "gan", "samples_per_s": 100.0, "devices": 1},
    {"name": "expert", "status": "ok", "stage": "expert", "samples_per_s": 50.0, "devices": 1},
    {"name": "generator", "status": "error", "error": "boom"},
  ]
  figures = {"gan": {"flops_per_sample": 2e11}, "expert": {"error": "ValueError: no"}}
  device_check.attach_flops(items, figures, peak=1e14)
  assert items[0]["flops_per_s"] == pytest.approx(2e13) and items[0]["mfu"] == pytest.approx(0.2)
  assert items[1]["mfu"] is None and items[1]["flops_source"] == "n/a: ValueError: no"
  assert "mfu" not in items[2]


def test_flops_counter_keeps_what_the_worker_printed_before_the_timeout():
  """The FLOP count runs in a child process; figures printed before the deadline are kept, the child is
  stopped at the deadline (here a stand-in child that counts one stage, then hangs)."""
  script = (
    "import json, time; print(json.dumps({'stage': 'expert', 'flops_per_sample': 6.5e9, 'seconds': 1.0}),"
    " flush=True); print('not json', flush=True); time.sleep(60)"
  )
  counter = device_check.FlopsCounter(["expert", "gan"], 1.0, command=[sys.executable, "-c", script])
  figures = counter.collect(timeout_s=3.0)
  assert figures["expert"] == {"flops_per_sample": 6.5e9, "seconds": 1.0}
  assert "gan" not in figures and "stopped after" in figures["_note"]["error"]
  assert counter.proc.returncode is not None  # the child is gone


def test_table_and_strict_json(tmp_path):
  report = {
    "device_kind": "NVIDIA H200",
    "peak_flops_per_device": 989e12,
    "sections": {
      "train": {
        "items": [
          {
            "name": "gan",
            "status": "ok",
            "settings_text": "B16 bfloat16 w1 mesh 1x1",
            "compile_s": 41.23,
            "warmup_s": 0.5,
            "steps_per_s": 12.5,
            "samples_per_s": 200.0,
            "flops_per_sample": 1.95e11,
            "mfu": 0.125,
          },
          {"name": "expert", "status": "error", "error": "XlaRuntimeError: RESOURCE_EXHAUSTED\nmore"},
        ]
      },
      "models": {"items": [{"name": "disc", "status": "skipped", "note": "time budget 420 s spent"}]},
      "inference": {"items": [], "error": "ImportError: no detector"},
    },
  }
  text = device_check.format_table(device_check.table_rows(report))
  lines = text.splitlines()
  assert lines[0].split()[:2] == ["section", "item"] and set(lines[1]) <= {"-", " "}
  gan = next(line for line in lines if " gan " in line)
  for cell in ("41.2", "12.50 steps/s", "200.0 samples/s", "195.00", "12.5%"):
    assert cell in gan
  assert "ERROR XlaRuntimeError: RESOURCE_EXHAUSTED" in text and "more" not in text
  assert "SKIPPED time budget 420 s spent" in text and "ERROR ImportError: no detector" in text
  assert gan.index("12.50 steps/s") == lines[0].index("steady state")  # columns line up
  assert "989 TFLOP/s" in device_check.footnotes(report)[0]

  path = tmp_path / "r.json"
  device_check.write_json({"a": float("nan"), "b": [float("inf"), 1.5]}, str(path))
  assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.5]}
  assert not (tmp_path / "r.json.tmp").exists()


def test_refuses_cpu_without_quick(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = tmp_path / "r.json"
  proc = subprocess.run(
    [sys.executable, str(REPO / "bench" / "device_check.py"), "--out", str(out)],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2 and "--quick" in proc.stderr and not out.exists()


@pytest.mark.slow
def test_quick_run_writes_every_figure(tmp_path):
  """The real thing, tiniest (~35 s on 2 busy cores): the expert's train step on a 2-device mesh and the
  discriminator's forward / forward+backward. Left out for time: the FLOP count (bench/costs.py, tested
  in test_costs; its child process above) and inference (bench/infer_bench's clip + lipsync(), tested in
  test_infer)."""
  out = tmp_path / "r.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  cmd = [sys.executable, str(REPO / "bench" / "device_check.py"), "--quick", "--out", str(out), "--flops=off"]
  cmd += ["--sections", "train,models", "--stages", "expert", "--models", "disc"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["schema"] == device_check.SCHEMA and report["device_count"] == 2
  assert report["jax_version"] and report["backend"] == "cpu" and report["settings"]["quick"]
  (train,) = report["sections"]["train"]["items"]
  assert train["status"] == "ok" and train["mesh"] == {"data": 2, "fsdp": 1} and train["global_batch"] == 4
  for key in ("init_s", "compile_s", "warmup_s", "step_ms", "steps_per_s", "samples_per_s"):
    assert train[key] > 0, key
  assert train["samples_per_s"] == pytest.approx(4 * train["steps_per_s"])
  assert train["steps"] == 2 and math.isfinite(train["loss"])
  assert "flops_per_sample" not in train and "flops_count" not in report  # --flops=off
  models = report["sections"]["models"]["items"]
  assert [m["name"] for m in models] == ["disc fwd", "disc fwd+bwd"]
  assert all(m["step_ms"] > 0 and m["flops_per_sample"] > 0 for m in models)
  assert models[1]["flops_per_sample"] > models[0]["flops_per_sample"]  # backward costs FLOPs too
  assert " expert " in proc.stdout and "disc fwd+bwd" in proc.stdout  # the table
