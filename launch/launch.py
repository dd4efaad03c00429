#!/usr/bin/env python3
"""Launch recipes for lipsync_jax training beyond one machine: one entry point, one subcommand per platform.

Owns how many trainer processes start where, and with which environment: Cloud TPU VM / pod slice
(`tpu`, gcloud `--worker=all`), multi-slice TPU over queued resources (`tpu-multislice`), GKE JobSet
manifests for TPU and GPU node pools (`gke`), and SLURM batch scripts (`slurm`). The trainer itself is
always `python -m lipsync_jax.main --config=... --workdir=...` (lipsync_jax/main.py finds its peers).

  python launch/launch.py tpu --name my-tpu --zone us-central2-b --accelerator v4-32 \
      --repo_url https://github.com/ORG/lipsync_jax --config configs/gan.py --workdir gs://BUCKET/runs/gan \
      --config.data.shards_dir=gs://BUCKET/shards --dry_run

Every subcommand takes `--dry_run`: it prints the exact commands (tpu, tpu-multislice), the full manifest
(gke) or the full batch script (slurm) on stdout and touches nothing. Without it the same commands run
(gcloud / kubectl / sbatch must be on PATH; a missing one is reported by name before anything starts).

Standard library only (argparse, subprocess), Python 3.8+ (no `X | Y` types at run time; macOS's own
python3 is 3.9): platform engineers run this on a laptop without the project's dependencies. The JobSet
manifest is built as a dict and written as YAML by a small emitter here (no PyYAML on a laptop is
assumed); the SLURM script comes from one string template.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
REMOTE_REPO = '"$HOME/lipsync_jax"'  # where the tpu recipes clone the repository on every TPU host
REMOTE_VENV = '"$HOME/venv"'
REMOTE_LOG = '"$HOME/lipsync_train.log"'
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
EXCLUSIVE_TOPOLOGY = "alpha.jobset.sigs.k8s.io/exclusive-topology"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"  # pod within its Job
SLICE_INDEX = "metadata.labels['jobset.sigs.k8s.io/job-index']"  # child Job (= TPU slice) within the JobSet

# Cloud TPU VM accelerator types: (default runtime version, TPU hosts (VMs) in one slice of size N).
# v4 / v5p sizes count TensorCores (2 per chip, 4 chips per host); v5e / v6e sizes count chips (one host up
# to 8 chips, 4 chips per host above). Other types: pass --runtime_version and --hosts_per_slice.
TPU_VM_TYPES: dict[str, tuple[str, Callable[[int], int]]] = {
  "v4": ("tpu-ubuntu2204-base", lambda n: max(1, n // 8)),
  "v5p": ("v2-alpha-tpuv5", lambda n: max(1, n // 8)),
  "v5litepod": ("v2-alpha-tpuv5-lite", lambda n: 1 if n <= 8 else n // 4),
  "v6e": ("v2-alpha-tpuv6e", lambda n: 1 if n <= 8 else n // 4),
}
# GKE node labels (cloud.google.com/gke-tpu-accelerator, cloud.google.com/gke-accelerator) by short name;
# any other label value is passed through as given.
GKE_TPU_ACCELERATORS = {
  "v4": "tpu-v4-podslice",
  "v5e": "tpu-v5-lite-podslice",
  "v5p": "tpu-v5p-slice",
  "v6e": "tpu-v6e-slice",
}
GKE_GPU_ACCELERATORS = {
  "h100": "nvidia-h100-80gb",
  "h100-mega": "nvidia-h100-mega-80gb",
  "h200": "nvidia-h200-141gb",
  "a100": "nvidia-tesla-a100",
  "a100-80gb": "nvidia-a100-80gb",
  "l4": "nvidia-l4",
}
TPU_STEPS = ("create", "setup", "train", "delete")


class LaunchError(Exception):
  """Bad input or a failed command: reported as one line on stderr, exit status 2 (or the command's)."""

  def __init__(self, message: str, status: int = 2):
    super().__init__(message)
    self.status = status


# ---------------------------------------------------------------------------------------------------------
# What every platform runs: the trainer command line.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trainer:
  """The trainer invocation shared by every recipe: config, workdir, --config.* overrides, environment."""

  config: str
  workdir: str
  overrides: tuple[str, ...] = ()
  env: tuple[tuple[str, str], ...] = ()
  extra_flags: tuple[str, ...] = ()  # main.py flags, e.g. --num_processes

  def argv(self, python: str = "python") -> list[str]:
    return [
      python,
      "-m",
      "lipsync_jax.main",
      f"--config={self.config}",
      f"--workdir={self.workdir}",
      *self.extra_flags,
      *self.overrides,
    ]


def _parse_env(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
  pairs = []
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
      raise LaunchError(f"--env {item!r}: write NAME=VALUE (NAME a shell variable name)")
    pairs.append((key, value))
  return tuple(pairs)


def _check_overrides(extras: Sequence[str]) -> tuple[str, ...]:
  """Unknown command-line arguments must be trainer config overrides written --config.KEY=VALUE."""
  for arg in extras:
    if not arg.startswith("--config."):
      raise LaunchError(f"unknown argument {arg!r}: only trainer overrides --config.KEY=VALUE pass through")
    if "=" not in arg:
      raise LaunchError(f"{arg!r}: write trainer overrides as one argument, --config.KEY=VALUE")
  return tuple(extras)


def _override_value(overrides: Sequence[str], key: str) -> str | None:
  prefix = f"--config.{key}="
  values = [arg[len(prefix) :] for arg in overrides if arg.startswith(prefix)]
  return values[-1] if values else None


def _with_dcn_data(overrides: tuple[str, ...], num_slices: int) -> tuple[str, ...]:
  """Multi-slice runs are data-parallel over slices: --config.mesh.dcn_data=N (N = number of slices)."""
  given = _override_value(overrides, "mesh.dcn_data")
  if given is None:
    return (*overrides, f"--config.mesh.dcn_data={num_slices}")
  if given.strip() != str(num_slices):
    raise LaunchError(
      f"--config.mesh.dcn_data={given} but --num_slices={num_slices}: a multi-slice run is data-parallel "
      "over its slices; drop the override (the launcher sets it) or make them equal"
    )
  return overrides


def _trainer(args: argparse.Namespace, *, shared_workdir_hint: str, local_paths: bool = True) -> Trainer:
  """The trainer flags from the command line, checked; `local_paths`: an absolute workdir is allowed."""
  config_file = args.config.split(":", 1)[0]
  if not (REPO_ROOT / config_file).is_file():
    raise LaunchError(
      f"--config {args.config}: {config_file} is not a file under {REPO_ROOT} (give a path relative to "
      "the repository root, e.g. configs/gan.py or configs/gan.py:tiny)"
    )
  workdir = args.workdir
  if not (workdir.startswith("gs://") or (local_paths and workdir.startswith("/"))):
    raise LaunchError(
      f"--workdir {workdir}: every process writes checkpoints there, so it must be {shared_workdir_hint}"
    )
  return Trainer(args.config, workdir, _check_overrides(args.overrides), _parse_env(args.env))


# ---------------------------------------------------------------------------------------------------------
# Running commands (or printing them).
# ---------------------------------------------------------------------------------------------------------


def _require_tool(name: str, what: str) -> None:
  if shutil.which(name) is None:
    raise LaunchError(f"{name} not found on PATH: install {what}, or add --dry_run to print what would run")


def _run(argv: Sequence[str], stdin: str | None = None) -> None:
  print("+ " + shlex.join(argv), file=sys.stderr, flush=True)
  result = subprocess.run(list(argv), input=stdin, text=True, check=False)
  if result.returncode != 0:
    raise LaunchError(
      f"{argv[0]} exited with status {result.returncode}: {shlex.join(argv)}", result.returncode
    )


# ---------------------------------------------------------------------------------------------------------
# Cloud TPU VM / pod slice, and multi-slice over queued resources.
# ---------------------------------------------------------------------------------------------------------


def _jax_pin() -> str:
  """jax's version from requirements.txt (the one place it is pinned)."""
  text = (REPO_ROOT / "requirements.txt").read_text()
  match = re.search(r"^jax==(\S+)", text, flags=re.M)
  if not match:
    raise LaunchError(f"no 'jax==VERSION' line in {REPO_ROOT / 'requirements.txt'}")
  return match.group(1)


def tpu_vm_shape(
  accelerator: str, runtime_version: str | None, hosts_per_slice: int | None
) -> tuple[str, int]:
  """(runtime version, hosts per slice) for a Cloud TPU accelerator type such as v4-32 or v5litepod-16."""
  match = re.fullmatch(r"([a-z0-9]+)-(\d+)", accelerator)
  known = TPU_VM_TYPES.get(match.group(1)) if match else None
  if known is None and (runtime_version is None or hosts_per_slice is None):
    raise LaunchError(
      f"--accelerator {accelerator}: not one of {', '.join(f'{k}-N' for k in TPU_VM_TYPES)}; "
      "give --runtime_version and --hosts_per_slice for it"
    )
  if known is not None:
    runtime_version = runtime_version or known[0]
    hosts_per_slice = hosts_per_slice or known[1](int(match.group(2)))
  assert runtime_version is not None and hosts_per_slice is not None
  return runtime_version, hosts_per_slice


@dataclass(frozen=True)
class Step:
  """One gcloud command of a TPU recipe, or (poll set) a wait until a queued resource is ACTIVE."""

  title: str
  argv: tuple[str, ...]
  poll_until: str | None = None  # the value `argv` must print before the next step runs


def _tpu_setup_script(args: argparse.Namespace) -> str:
  install = args.install or (
    f'pip install -q "jax[tpu]=={_jax_pin()}" -r requirements.txt -e . '
    "&& pip install -q --no-deps -r requirements-nodeps.txt"
  )
  py = shlex.quote(args.python)
  return "; ".join(
    [
      "set -e",
      # TPU VM images are Ubuntu 22.04 (python3 is 3.10; the project needs 3.11).
      f"command -v {py} > /dev/null || (sudo apt-get update -qq && sudo apt-get install -y -qq "
      f"{py} {py}-venv git)",
      f"test -d {REMOTE_REPO} || git clone -q {shlex.quote(args.repo_url)} {REMOTE_REPO}",
      f"cd {REMOTE_REPO}",
      f"git fetch -q origin {shlex.quote(args.ref)}",
      "git checkout -q FETCH_HEAD",
      f"test -x {REMOTE_VENV}/bin/python || {py} -m venv {REMOTE_VENV}",
      f". {REMOTE_VENV}/bin/activate",
      "pip install -q -U pip",
      install,
    ]
  )


def _tpu_train_script(trainer: Trainer, detach: bool) -> str:
  exports = [f"export {key}={shlex.quote(value)}" for key, value in trainer.env]
  run = f"{REMOTE_VENV}/bin/python {shlex.join(trainer.argv()[1:])}"
  if detach:  # keeps running when the ssh session ends; the log is on every host
    body = "; ".join([f"cd {REMOTE_REPO}", *exports, run])
    return f"setsid nohup bash -c {shlex.quote(body)} >> {REMOTE_LOG} 2>&1 < /dev/null &"
  return "; ".join(["set -eo pipefail", f"cd {REMOTE_REPO}", *exports, f"{run} 2>&1 | tee -a {REMOTE_LOG}"])


def tpu_plan(args: argparse.Namespace, multislice: bool) -> list[Step]:
  """The gcloud commands of the tpu / tpu-multislice recipes, in order, for the steps asked for."""
  num_slices = args.num_slices if multislice else 1
  if multislice and num_slices < 2:
    raise LaunchError(f"--num_slices {num_slices}: a multi-slice run needs at least 2 slices (else use tpu)")
  runtime, hosts = tpu_vm_shape(args.accelerator, args.runtime_version, args.hosts_per_slice)
  steps = [s.strip() for s in args.steps.split(",") if s.strip()]
  for step in steps:
    if step not in TPU_STEPS:
      raise LaunchError(f"--steps {args.steps}: {step!r} is not one of {', '.join(TPU_STEPS)}")
  if "setup" in steps and not args.repo_url:
    raise LaunchError("--repo_url is needed for the setup step (the git URL every TPU host clones)")

  trainer = _trainer(args, shared_workdir_hint="gs://BUCKET/... (or a file system every TPU host mounts)")
  overrides = _with_dcn_data(trainer.overrides, num_slices) if multislice else trainer.overrides
  num_processes = hosts * num_slices
  # main.py starts jax.distributed when it sees a cluster in the environment variables; on a TPU VM the
  # topology is in the metadata server instead (jax reads it there), so the total is passed explicitly:
  # one process per TPU host, slices x hosts per slice.
  extra = (f"--num_processes={num_processes}",) if num_processes > 1 else ()
  trainer = Trainer(trainer.config, trainer.workdir, overrides, trainer.env, extra)

  where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
  if multislice:
    kind = ("gcloud", "compute", "tpus", "queued-resources")
    ssh = (*kind, "ssh", args.name, *where, "--node=all", "--worker=all")
    create = (
      *kind,
      "create",
      args.name,
      *where,
      f"--accelerator-type={args.accelerator}",
      f"--runtime-version={runtime}",
      f"--node-count={num_slices}",
      f"--node-prefix={args.name}",
      *(("--spot",) if args.spot else ()),
    )
    delete = (*kind, "delete", args.name, *where, "--force", "--quiet")
  else:
    kind = ("gcloud", "compute", "tpus", "tpu-vm")
    ssh = (*kind, "ssh", args.name, *where, "--worker=all")
    create = (
      *kind,
      "create",
      args.name,
      *where,
      f"--accelerator-type={args.accelerator}",
      f"--version={runtime}",
      *(("--spot",) if args.spot else ()),
    )
    delete = (*kind, "delete", args.name, *where, "--quiet")

  shape = f"{num_slices} slice(s) x {hosts} host(s) of {args.accelerator}, {num_processes} process(es)"
  plan = []
  for step in steps:
    if step == "create":
      plan.append(Step(f"create: {shape}", create))
      if multislice:  # a queued resource is granted later; the hosts exist once it is ACTIVE
        describe = (*kind, "describe", args.name, *where, "--format=value(state.state)")
        plan.append(Step("wait until the queued resource is ACTIVE", describe, poll_until="ACTIVE"))
    elif step == "setup":
      title = f"setup: clone {args.repo_url} at {args.ref}, venv + install on every host"
      plan.append(Step(title, (*ssh, "--command", _tpu_setup_script(args))))
    elif step == "train":
      title = f"train: one trainer process per TPU host ({shape})"
      plan.append(Step(title, (*ssh, "--command", _tpu_train_script(trainer, args.detach))))
    else:
      plan.append(Step("delete", delete))
  return plan


def _print_tpu_plan(plan: Sequence[Step]) -> None:
  print("# launch/launch.py dry run: the commands it would run, in order (nothing was run)")
  for i, step in enumerate(plan, 1):
    print(f"# {i}. {step.title}")
    if step.poll_until:
      query = shlex.join(step.argv)
      print(f'until [ "$({query})" = {step.poll_until} ]; do sleep 30; done')
    else:
      print(shlex.join(step.argv))


def _run_tpu_plan(plan: Sequence[Step], poll_s: float = 30.0) -> None:
  _require_tool("gcloud", "the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)")
  for step in plan:
    print(f"# {step.title}", file=sys.stderr, flush=True)
    if not step.poll_until:
      _run(step.argv)
      continue
    while True:
      result = subprocess.run(list(step.argv), capture_output=True, text=True, check=False)
      state = result.stdout.strip()
      if result.returncode != 0:
        raise LaunchError(f"{shlex.join(step.argv)} failed: {result.stderr.strip()}", result.returncode)
      if state == step.poll_until:
        break
      if state in ("FAILED", "SUSPENDED"):
        raise LaunchError(f"queued resource is {state}: {shlex.join(step.argv)}")
      print(f"  state {state or '?'}; checking again in {poll_s:.0f} s", file=sys.stderr, flush=True)
      time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------------------
# GKE: one JobSet (jobset.x-k8s.io/v1alpha2) for a TPU or a GPU node pool.
# ---------------------------------------------------------------------------------------------------------


def _topology_chips(topology: str) -> int:
  if not re.fullmatch(r"\d+(x\d+){1,2}", topology):
    raise LaunchError(f"--tpu ...:{topology}: a TPU topology is like 2x4 or 2x2x2")
  chips = 1
  for dim in topology.split("x"):
    chips *= int(dim)
  return chips


def jobset_manifest(args: argparse.Namespace) -> dict:
  """The JobSet manifest for `launch.py gke`: TPU slices (replicas = slices) or GPU nodes (one replica)."""
  if not re.fullmatch(r"[a-z]([-a-z0-9]{0,30}[a-z0-9])?", args.name):
    raise LaunchError(
      f"--name {args.name}: a JobSet name is lower-case letters, digits and '-', starts with a letter, "
      "at most 32 characters (pod host names <name>-<job>-<i>-<j> must stay under 64)"
    )
  trainer = _trainer(args, shared_workdir_hint="gs://BUCKET/... (pods share no disk)", local_paths=False)
  pod: dict = {"restartPolicy": "Never", "terminationGracePeriodSeconds": args.termination_grace_s}
  if args.service_account:
    pod["serviceAccountName"] = args.service_account
  container: dict = {"name": "trainer", "image": args.image}
  if args.cwd:
    container["workingDir"] = args.cwd
  metadata: dict = {"name": args.name, "namespace": args.namespace}

  if args.tpu:
    accelerator, sep, topology = args.tpu.partition(":")
    if not sep:
      raise LaunchError(f"--tpu {args.tpu}: write ACCELERATOR:TOPOLOGY, e.g. v5e:2x4 or v5p:2x2x2")
    chips = _topology_chips(topology)
    if args.chips_per_host < 1 or chips % args.chips_per_host:
      raise LaunchError(
        f"--chips_per_host {args.chips_per_host} does not divide the {chips} chips of {topology}"
      )
    hosts = chips // args.chips_per_host
    num_slices = args.num_slices
    if num_slices < 1:
      raise LaunchError(f"--num_slices {num_slices}: at least 1")
    overrides = _with_dcn_data(trainer.overrides, num_slices) if num_slices > 1 else trainer.overrides
    job_name = "slice"
    # One child Job per slice, each on its own node pool (exclusive topology). GKE's TPU webhook gives every
    # pod TPU_WORKER_ID / TPU_WORKER_HOSTNAMES; jax.distributed.initialize() derives the process id
    # (slice id x hosts per slice + worker id) and the process count from them and the MEGASCALE_*
    # variables, set here from JobSet's pod labels (kubernetes-sigs/jobset#787); the coordinator is pod 0
    # of slice 0 (jax process 0).
    metadata["annotations"] = {EXCLUSIVE_TOPOLOGY: "cloud.google.com/gke-nodepool"}
    pod.update(
      hostNetwork=True,  # TPU slices talk over the host network (DCN between slices)
      dnsPolicy="ClusterFirstWithHostNet",
      nodeSelector={
        "cloud.google.com/gke-tpu-accelerator": GKE_TPU_ACCELERATORS.get(accelerator, accelerator),
        "cloud.google.com/gke-tpu-topology": topology,
      },
    )
    container["ports"] = [{"containerPort": port} for port in (8471, 8080, 8482)]
    container["resources"] = {"limits": {"google.com/tpu": args.chips_per_host}}
    env: list[dict] = []
    if num_slices > 1:
      env = [
        {"name": "MEGASCALE_COORDINATOR_ADDRESS", "value": f"{args.name}-{job_name}-0-0.{args.name}"},
        {"name": "MEGASCALE_NUM_SLICES", "value": str(num_slices)},
        {"name": "MEGASCALE_SLICE_ID", "valueFrom": {"fieldRef": {"fieldPath": SLICE_INDEX}}},
      ]
    replicas, parallelism = num_slices, hosts
  else:
    if args.nodes < 1 or args.gpus_per_node < 1:
      raise LaunchError(f"--nodes {args.nodes} / --gpus_per_node {args.gpus_per_node}: at least 1 each")
    overrides = trainer.overrides
    job_name = "workers"
    pod["nodeSelector"] = {"cloud.google.com/gke-accelerator": GKE_GPU_ACCELERATORS.get(args.gpu, args.gpu)}
    # NCCL needs more shared memory than a container's default 64 MB /dev/shm.
    pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    container["resources"] = {"limits": {"nvidia.com/gpu": args.gpus_per_node}}
    env = []
    if args.nodes > 1:
      # One process per pod (node) driving all its GPUs. Process 0 is pod 0 of the headless service JobSet
      # creates (host names <jobset>-<job>-<job index>-<pod index>.<subdomain>); each pod's id is its
      # Indexed-Job completion index. JAX_LOCAL_DEVICE_IDS keeps every local GPU in the process (and
      # keeps jax from trying its Kubernetes auto-detection, which needs the `kubernetes` package).
      coordinator = f"{args.name}-{job_name}-0-0.{args.name}:{args.coordinator_port}"
      env = [
        {"name": "JAX_COORDINATOR_ADDRESS", "value": coordinator},
        {"name": "JAX_NUM_PROCESSES", "value": str(args.nodes)},
        {"name": "JAX_PROCESS_ID", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
        {"name": "JAX_LOCAL_DEVICE_IDS", "value": ",".join(str(i) for i in range(args.gpus_per_node))},
      ]
      container["ports"] = [{"containerPort": args.coordinator_port}]
    replicas, parallelism = 1, args.nodes

  container["command"] = Trainer(trainer.config, trainer.workdir, overrides).argv()
  env += [{"name": key, "value": value} for key, value in trainer.env]
  if env:
    container["env"] = env
  pod["containers"] = [container]
  return {
    "apiVersion": JOBSET_API,
    "kind": "JobSet",
    "metadata": metadata,
    "spec": {
      # A failed pod fails its Job (backoffLimit 0) and JobSet restarts every Job: the trainer resumes from
      # the newest checkpoint in the workdir.
      "failurePolicy": {"maxRestarts": args.max_restarts},
      "network": {"enableDNSHostnames": True, "subdomain": args.name},
      "replicatedJobs": [
        {
          "name": job_name,
          "replicas": replicas,
          "template": {
            "spec": {
              "parallelism": parallelism,
              "completions": parallelism,
              "backoffLimit": 0,
              "template": {"spec": pod},
            }
          },
        }
      ],
    },
  }


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def _yaml_scalar(value: object) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float)):
    return repr(value)
  if value is None:
    return "null"
  return json.dumps(str(value))  # a JSON string is a valid YAML double-quoted scalar


def _yaml_lines(value: object, indent: int) -> list[str]:
  pad = " " * indent
  lines = []
  if isinstance(value, dict):
    for key, item in value.items():
      key_text = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)
      if isinstance(item, (dict, list)) and item:
        lines.append(f"{pad}{key_text}:")
        lines.extend(_yaml_lines(item, indent + 2))
      else:
        lines.append(f"{pad}{key_text}: {_yaml_flow(item)}")
  else:
    assert isinstance(value, list)
    for item in value:
      if isinstance(item, (dict, list)) and item:
        nested = _yaml_lines(item, indent + 2)
        lines.append(f"{pad}- {nested[0].lstrip()}")
        lines.extend(nested[1:])
      else:
        lines.append(f"{pad}- {_yaml_flow(item)}")
  return lines


def _yaml_flow(value: object) -> str:
  if isinstance(value, dict):
    return "{}"
  if isinstance(value, list):
    return "[]"
  return _yaml_scalar(value)


def to_yaml(document: dict) -> str:
  """Block-style YAML for a JSON-like dict; strings are always double-quoted (JSON escapes).

  Written by hand because the launcher runs without the project's dependencies (no PyYAML); what it
  writes is a subset of YAML that every Kubernetes client reads the same way."""
  return "\n".join(_yaml_lines(document, 0)) + "\n"


# ---------------------------------------------------------------------------------------------------------
# SLURM: one sbatch script, one task per node driving that node's GPUs.
# ---------------------------------------------------------------------------------------------------------

SBATCH_TEMPLATE = """\
#!/usr/bin/env bash
# Generated by launch/launch.py slurm: {nodes} node(s) x {gpus} GPU(s), one trainer process per node
# driving all its GPUs. jax.distributed.initialize() reads the SLURM environment (coordinator = first node,
# process id = SLURM_PROCID). SIGTERM {signal_s} s before the time limit and on preemption: the trainer
# saves a checkpoint and exits 0. A preempted job is requeued (--requeue) and resumes from the workdir;
# after the time limit, submit this script again to resume.
#SBATCH --job-name={job_name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --cpus-per-task={cpus}
#SBATCH --signal=TERM@{signal_s}
#SBATCH --requeue
#SBATCH --output=%x-%j.out
#SBATCH --chdir={chdir}
{optional}set -euo pipefail
{setup}# jax's SLURM auto-detection pins each task to the one GPU numbered SLURM_LOCALID unless told otherwise:
# with one task per node that would leave all but one GPU idle.
export JAX_LOCAL_DEVICE_IDS={device_ids}
{exports}srun --kill-on-bad-exit=1 {command}
"""


def sbatch_script(args: argparse.Namespace) -> str:
  """The full batch script `launch.py slurm` submits."""
  if args.nodes < 1 or args.gpus_per_node < 1 or args.cpus_per_task < 1:
    raise LaunchError("--nodes, --gpus_per_node and --cpus_per_task must be at least 1")
  trainer = _trainer(args, shared_workdir_hint="an absolute path on a shared file system, or gs://BUCKET/...")
  optional = "".join(
    f"#SBATCH --{flag}={value}\n"
    for flag, value in (("partition", args.partition), ("account", args.account), ("time", args.time))
    if value
  )
  return SBATCH_TEMPLATE.format(
    nodes=args.nodes,
    gpus=args.gpus_per_node,
    cpus=args.cpus_per_task,
    signal_s=args.signal_s,
    job_name=args.job_name,
    chdir=args.chdir,
    optional=optional,
    setup="".join(f"{line}\n" for line in args.setup),
    device_ids=",".join(str(i) for i in range(args.gpus_per_node)),
    exports="".join(f"export {key}={shlex.quote(value)}\n" for key, value in trainer.env),
    command=shlex.join(trainer.argv(python=args.python)),
  )


# ---------------------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--config", required=True, help="trainer config, e.g. configs/gan.py or configs/gan.py:tiny"
  )
  parser.add_argument("--workdir", required=True, help="checkpoints + TensorBoard: gs://BUCKET/runs/NAME")
  parser.add_argument(
    "--env", action="append", default=[], metavar="NAME=VALUE", help="environment for the trainer (repeat)"
  )
  parser.add_argument(
    "--dry_run", action="store_true", help="print what would run or be applied; touch nothing"
  )
  parser.epilog = (
    "Trainer config overrides pass through: --config.KEY=VALUE (e.g. --config.data.shards_dir=gs://B/s)."
  )


def _tpu_flags(parser: argparse.ArgumentParser, multislice: bool) -> None:
  noun = "queued resource and node prefix" if multislice else "TPU VM"
  parser.add_argument("--name", required=True, help=f"{noun} name")
  parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
  parser.add_argument("--project", default=None, help="GCP project (default: gcloud's configured project)")
  parser.add_argument(
    "--accelerator", required=True, help="accelerator type of one slice: v4-32, v5litepod-16, ..."
  )
  if multislice:
    parser.add_argument(
      "--num_slices", type=int, required=True, help="number of slices (>= 2), joined over DCN"
    )
  parser.add_argument(
    "--runtime_version", default=None, help="TPU software version (default: by accelerator)"
  )
  parser.add_argument(
    "--hosts_per_slice", type=int, default=None, help="TPU VMs per slice (default: by accelerator)"
  )
  parser.add_argument("--spot", action="store_true", help="Spot capacity (preemptible; the trainer resumes)")
  parser.add_argument("--repo_url", default=None, help="git URL every host clones (setup step)")
  parser.add_argument("--ref", default="HEAD", help="git branch, tag or commit to check out (default: HEAD)")
  parser.add_argument(
    "--install", default=None, help="pip line run in the checkout (default: jax[tpu] + requirements)"
  )
  parser.add_argument("--python", default="python3.11", help="interpreter for the venv on the TPU hosts")
  parser.add_argument(
    "--steps", default="create,setup,train", help=f"comma-separated, in order, from {', '.join(TPU_STEPS)}"
  )
  parser.add_argument(
    "--detach", action="store_true", help="train in the background (log: ~/lipsync_train.log)"
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="launch.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
  sub = parser.add_subparsers(dest="platform", required=True, metavar="{tpu,tpu-multislice,gke,slurm}")

  tpu = sub.add_parser("tpu", help="Cloud TPU VM or pod slice (gcloud, --worker=all)", allow_abbrev=False)
  _tpu_flags(tpu, multislice=False)
  _common(tpu)

  multi = sub.add_parser(
    "tpu-multislice", help="several TPU slices over DCN (queued resources)", allow_abbrev=False
  )
  _tpu_flags(multi, multislice=True)
  _common(multi)

  gke = sub.add_parser(
    "gke", help="a JobSet on a GKE TPU or GPU node pool (kubectl apply)", allow_abbrev=False
  )
  gke.add_argument("--name", required=True, help="JobSet name")
  gke.add_argument(
    "--image", required=True, help="container image with lipsync_jax installed and configs/ in it"
  )
  kind = gke.add_mutually_exclusive_group(required=True)
  kind.add_argument("--tpu", help="ACCELERATOR:TOPOLOGY, e.g. v5e:2x4, v5p:2x2x2 (or a full GKE label value)")
  kind.add_argument("--gpu", help=f"GPU type: {', '.join(GKE_GPU_ACCELERATORS)} (or a full GKE label value)")
  gke.add_argument(
    "--num_slices", type=int, default=1, help="TPU: slices (JobSet replicas), data-parallel over DCN"
  )
  gke.add_argument(
    "--chips_per_host", type=int, default=4, help="TPU: chips per node (google.com/tpu per pod)"
  )
  gke.add_argument("--nodes", type=int, default=1, help="GPU: nodes (one pod, one process each)")
  gke.add_argument("--gpus_per_node", type=int, default=8, help="GPU: nvidia.com/gpu per pod")
  gke.add_argument("--coordinator_port", type=int, default=8482, help="GPU: jax.distributed port on pod 0")
  gke.add_argument("--namespace", default="default")
  gke.add_argument(
    "--service_account", default=None, help="Kubernetes service account (e.g. with GCS access)"
  )
  gke.add_argument("--cwd", default=None, help="working directory in the image (where configs/ is)")
  gke.add_argument(
    "--max_restarts", type=int, default=3, help="JobSet restarts after a failure (each resumes)"
  )
  gke.add_argument("--termination_grace_s", type=int, default=120, help="time to checkpoint after SIGTERM")
  _common(gke)

  slurm = sub.add_parser("slurm", help="sbatch on a GPU cluster, one process per node", allow_abbrev=False)
  slurm.add_argument("--nodes", type=int, required=True)
  slurm.add_argument("--gpus_per_node", type=int, default=8)
  slurm.add_argument("--cpus_per_task", type=int, default=32)
  slurm.add_argument("--partition", default=None)
  slurm.add_argument("--account", default=None)
  slurm.add_argument("--time", default=None, help="time limit, e.g. 24:00:00")
  slurm.add_argument("--job_name", default="lipsync_jax")
  slurm.add_argument(
    "--chdir", default=str(REPO_ROOT), help="repository checkout on the nodes (default: this one)"
  )
  slurm.add_argument(
    "--setup",
    action="append",
    default=[],
    metavar="LINE",
    help="shell line before srun, e.g. '. .venv/bin/activate'",
  )
  slurm.add_argument("--python", default="python", help="interpreter on the nodes")
  slurm.add_argument(
    "--signal_s", type=int, default=120, help="SIGTERM this many seconds before the time limit"
  )
  _common(slurm)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args, extras = parser.parse_known_args(argv)
  args.overrides = extras
  try:
    if args.platform in ("tpu", "tpu-multislice"):
      plan = tpu_plan(args, multislice=args.platform == "tpu-multislice")
      if args.dry_run:
        _print_tpu_plan(plan)
      else:
        _run_tpu_plan(plan)
    elif args.platform == "gke":
      manifest = to_yaml(jobset_manifest(args))
      if args.dry_run:
        print(
          f"# launch/launch.py dry run: the JobSet it would apply (kubectl apply -f -)\n{manifest}", end=""
        )
      else:
        _require_tool("kubectl", "kubectl with a context for your GKE cluster (and JobSet installed in it)")
        _run(["kubectl", "apply", "-f", "-"], stdin=manifest)
        selector = (
          f"jobset.sigs.k8s.io/jobset-name={args.name},jobset.sigs.k8s.io/job-index=0,"
          "batch.kubernetes.io/job-completion-index=0"
        )
        print(f"logs of process 0: kubectl logs -f -n {args.namespace} -l {selector} --max-log-requests=1")
    else:
      script = sbatch_script(args)
      if args.dry_run:
        print(script, end="")
      else:
        _require_tool("sbatch", "SLURM's client commands (run this on a login node)")
        _run(["sbatch"], stdin=script)
  except LaunchError as error:
    print(f"launch.py {args.platform}: {error}", file=sys.stderr)
    return error.status
  return 0


if __name__ == "__main__":
  sys.exit(main())
