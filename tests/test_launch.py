"""launch/launch.py: every platform's dry run (what it would run or apply), its input checks, and that a real
run executes exactly the dry run's commands (fake gcloud / kubectl / sbatch on PATH) or, without the tool,
stops with one clear line. No cloud, no cluster: the launcher is run as a subprocess, as a user runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "launch.py"
WORKDIR = "gs://bucket/runs/gan"
SHARDS = "--config.data.shards_dir=gs://bucket/lrs2_shards"
COMMON = ["--config", "configs/gan.py", "--workdir", WORKDIR, SHARDS]
TPU = [
  "tpu",
  "--name",
  "my-tpu",
  "--zone",
  "us-central2-b",
  "--repo_url",
  "https://example.com/lipsync_jax.git",
]
MULTI = [
  "tpu-multislice",
  "--name",
  "ms",
  "--zone",
  "us-east5-b",
  "--project",
  "proj",
  "--repo_url",
  "https://x/r.git",
]
GKE_TPU = ["gke", "--name", "gan-run", "--image", "us-docker.pkg.dev/p/r/lipsync:1", "--tpu", "v5e:2x4"]
GKE_GPU = ["gke", "--name", "gan-gpu", "--image", "us-docker.pkg.dev/p/r/lipsync:1", "--gpu", "h100"]
SLURM = [
  "slurm",
  "--nodes",
  "4",
  "--partition",
  "a3",
  "--time",
  "24:00:00",
  "--setup",
  ". .venv/bin/activate",
]


def launch(args, path=None, check=True):
  env = dict(os.environ)
  if path is not None:
    env["PATH"] = str(path)
  result = subprocess.run(
    [sys.executable, str(LAUNCH), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
  )
  if check:
    assert result.returncode == 0, result.stderr
  return result


def commands(dry_run_output):
  """The dry run's commands as argv lists (comment lines dropped)."""
  return [shlex.split(line) for line in dry_run_output.splitlines() if line and not line.startswith("#")]


def remote_trainer(ssh_argv):
  """The trainer argv inside the --command given to gcloud ssh (after the venv's python)."""
  script = ssh_argv[ssh_argv.index("--command") + 1]
  words = shlex.split(script.split("bin/python", 1)[1].split("2>&1")[0])
  assert words[:2] == ["-m", "lipsync_jax.main"], script
  return words


def container(manifest):
  (rjob,) = manifest["spec"]["replicatedJobs"]
  (ctr,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
  return rjob, rjob["template"]["spec"]["template"]["spec"], ctr


def env_of(ctr):
  return {e["name"]: e.get("value", e.get("valueFrom")) for e in ctr.get("env", [])}


# ---------------------------------------------------------------------------------------------------------
# Cloud TPU VM / pod slice.
# ---------------------------------------------------------------------------------------------------------


def test_tpu_pod_slice_dry_run_creates_sets_up_and_trains_on_every_host():
  out = launch(
    [*TPU, "--accelerator", "v4-32", "--env", "XLA_FLAGS=--xla_dump_to=/tmp/d", *COMMON, "--dry_run"]
  )
  create, setup, train = commands(out.stdout)
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu"]
  assert {"--zone=us-central2-b", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"} <= set(create)
  for ssh in (setup, train):
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"] and "--worker=all" in ssh
  setup_script = setup[setup.index("--command") + 1]
  assert "git clone -q https://example.com/lipsync_jax.git" in setup_script
  assert 'pip install -q "jax[tpu]==0.10.2" -r requirements.txt -e .' in setup_script
  # v4-32: 16 chips, 4 TPU hosts -> 4 trainer processes; the override and the environment pass through.
  argv = remote_trainer(train)
  assert argv[2:] == ["--config=configs/gan.py", f"--workdir={WORKDIR}", "--num_processes=4", SHARDS]
  assert "export XLA_FLAGS=--xla_dump_to=/tmp/d;" in train[train.index("--command") + 1]
  assert not any("dcn_data" in a for a in argv)


@pytest.mark.parametrize(
  "accelerator, processes", [("v5litepod-8", None), ("v5litepod-32", 8), ("v5p-16", 2), ("v6e-64", 16)]
)
def test_tpu_process_count_follows_the_hosts_of_the_accelerator(accelerator, processes):
  out = launch([*TPU, "--accelerator", accelerator, "--steps", "train", *COMMON, "--dry_run"])
  (train,) = commands(out.stdout)
  flags = [a for a in remote_trainer(train) if a.startswith("--num_processes")]
  assert flags == ([f"--num_processes={processes}"] if processes else [])


def test_tpu_dry_run_is_a_valid_shell_script_and_delete_is_a_step():
  out = launch(
    [*TPU, "--accelerator", "v4-8", "--steps", "create,setup,train,delete", "--spot", *COMMON, "--dry_run"]
  )
  assert subprocess.run(["bash", "-n"], input=out.stdout, text=True).returncode == 0
  create, *_, delete = commands(out.stdout)
  assert "--spot" in create
  assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "my-tpu"] and "--quiet" in delete


def test_tpu_detach_runs_the_trainer_in_the_background_with_a_log():
  out = launch([*TPU, "--accelerator", "v4-8", "--steps", "train", "--detach", *COMMON, "--dry_run"])
  (train,) = commands(out.stdout)
  script = train[train.index("--command") + 1]
  assert script.startswith("setsid nohup bash -c ") and script.endswith("< /dev/null &")
  assert "lipsync_train.log" in script and "lipsync_jax.main" in script


# ---------------------------------------------------------------------------------------------------------
# Multi-slice TPU over queued resources.
# ---------------------------------------------------------------------------------------------------------


def test_multislice_dry_run_queues_n_slices_waits_and_trains_data_parallel_over_them():
  args = [
    *MULTI,
    "--accelerator",
    "v5litepod-16",
    "--num_slices",
    "2",
    "--steps",
    "create,setup,train,delete",
  ]
  out = launch([*args, *COMMON, "--dry_run"])
  assert subprocess.run(["bash", "-n"], input=out.stdout, text=True).returncode == 0
  create, wait, setup, train, delete = commands(out.stdout)
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "ms"]
  assert {"--node-count=2", "--node-prefix=ms", "--accelerator-type=v5litepod-16", "--project=proj"} <= set(
    create
  )
  assert "--runtime-version=v2-alpha-tpuv5-lite" in create
  assert wait[0] == "until" and "queued-resources describe ms" in " ".join(wait) and "ACTIVE" in wait
  for ssh in (setup, train):
    assert ssh[4:6] == ["ssh", "ms"] and {"--node=all", "--worker=all"} <= set(ssh)
  # 2 slices x 4 hosts (v5litepod-16: 4 chips per host) -> 8 processes; data parallel over the 2 slices.
  argv = remote_trainer(train)
  assert "--num_processes=8" in argv and argv[-2:] == [SHARDS, "--config.mesh.dcn_data=2"]
  assert delete[4:6] == ["delete", "ms"] and "--force" in delete


def test_multislice_keeps_a_matching_dcn_data_and_refuses_a_different_one():
  base = [*MULTI, "--accelerator", "v4-16", "--num_slices", "4", "--steps", "train", *COMMON, "--dry_run"]
  (train,) = commands(launch([*base, "--config.mesh.dcn_data=4"]).stdout)
  assert [a for a in remote_trainer(train) if "dcn_data" in a] == ["--config.mesh.dcn_data=4"]
  bad = launch([*base, "--config.mesh.dcn_data=2"], check=False)
  assert bad.returncode == 2 and "--num_slices=4" in bad.stderr and "Traceback" not in bad.stderr
  one = launch([*MULTI, "--accelerator", "v4-16", "--num_slices", "1", *COMMON, "--dry_run"], check=False)
  assert one.returncode == 2 and "--num_slices" in one.stderr


# ---------------------------------------------------------------------------------------------------------
# GKE JobSet.
# ---------------------------------------------------------------------------------------------------------


def test_gke_tpu_multislice_manifest_is_a_jobset_with_one_job_per_slice():
  out = launch([*GKE_TPU, "--num_slices", "2", "--service_account", "trainer-ksa", *COMMON, "--dry_run"])
  manifest = yaml.safe_load(out.stdout)
  assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and manifest["kind"] == "JobSet"
  meta = manifest["metadata"]
  assert meta["name"] == "gan-run"
  assert meta["annotations"]["alpha.jobset.sigs.k8s.io/exclusive-topology"] == "cloud.google.com/gke-nodepool"
  rjob, pod, ctr = container(manifest)
  # v5e 2x4 = 8 chips, 4 per host -> 2 pods per slice; 2 slices = 2 replicas of the slice Job.
  assert rjob["replicas"] == 2
  assert rjob["template"]["spec"]["parallelism"] == rjob["template"]["spec"]["completions"] == 2
  assert rjob["template"]["spec"]["backoffLimit"] == 0
  assert pod["nodeSelector"] == {
    "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
    "cloud.google.com/gke-tpu-topology": "2x4",
  }
  assert pod["hostNetwork"] is True and pod["serviceAccountName"] == "trainer-ksa"
  assert ctr["resources"]["limits"] == {"google.com/tpu": 4}
  assert ctr["image"] == "us-docker.pkg.dev/p/r/lipsync:1"
  assert ctr["command"] == [
    "python",
    "-m",
    "lipsync_jax.main",
    "--config=configs/gan.py",
    f"--workdir={WORKDIR}",
    SHARDS,
    "--config.mesh.dcn_data=2",
  ]
  env = env_of(ctr)
  subdomain = manifest["spec"]["network"]["subdomain"]
  assert env["MEGASCALE_COORDINATOR_ADDRESS"] == f"gan-run-{rjob['name']}-0-0.{subdomain}"
  assert env["MEGASCALE_NUM_SLICES"] == "2"
  assert env["MEGASCALE_SLICE_ID"] == {
    "fieldRef": {"fieldPath": "metadata.labels['jobset.sigs.k8s.io/job-index']"}
  }


def test_gke_tpu_single_slice_single_host():
  out = launch([*GKE_TPU, "--chips_per_host", "8", *COMMON, "--dry_run"])
  rjob, _, ctr = container(yaml.safe_load(out.stdout))
  assert rjob["replicas"] == 1 and rjob["template"]["spec"]["parallelism"] == 1
  assert ctr["resources"]["limits"] == {"google.com/tpu": 8}
  assert not any("dcn_data" in a for a in ctr["command"]) and "env" not in ctr


def test_gke_gpu_manifest_points_every_pod_at_pod_zero_of_the_headless_service():
  out = launch([*GKE_GPU, "--nodes", "2", "--env", "NCCL_DEBUG=WARN", *COMMON, "--dry_run"])
  manifest = yaml.safe_load(out.stdout)
  rjob, pod, ctr = container(manifest)
  assert rjob["replicas"] == 1 and rjob["template"]["spec"]["parallelism"] == 2
  assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
  assert ctr["resources"]["limits"] == {"nvidia.com/gpu": 8}
  assert {"name": "dshm", "mountPath": "/dev/shm"} in ctr["volumeMounts"]
  env = env_of(ctr)
  network = manifest["spec"]["network"]
  assert network["enableDNSHostnames"] is True
  # JobSet names pods <jobset>-<replicated job>-<job index>-<pod index> under the <subdomain> service.
  host0 = f"{manifest['metadata']['name']}-{rjob['name']}-0-0.{network['subdomain']}"
  assert env["JAX_COORDINATOR_ADDRESS"] == f"{host0}:8482"
  assert {"containerPort": 8482} in ctr["ports"]
  assert env["JAX_NUM_PROCESSES"] == "2"
  assert env["JAX_PROCESS_ID"] == {
    "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
  }
  assert env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
  assert env["NCCL_DEBUG"] == "WARN"
  assert ctr["command"][3:] == ["--config=configs/gan.py", f"--workdir={WORKDIR}", SHARDS]


def test_gke_gpu_single_node_is_one_process_without_distributed_env():
  out = launch([*GKE_GPU, "--gpus_per_node", "4", "--gpu", "nvidia-l4", *COMMON, "--dry_run"])
  _, pod, ctr = container(yaml.safe_load(out.stdout))
  assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
  assert ctr["resources"]["limits"] == {"nvidia.com/gpu": 4} and "env" not in ctr


def _load_launch_module():
  spec = importlib.util.spec_from_file_location("launch_under_test", LAUNCH)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
  spec.loader.exec_module(module)
  return module


def test_yaml_writer_round_trips_through_a_yaml_parser():
  document = {
    "plain": "abc",
    "looks_like_bool": "yes",
    "looks_like_number": "0123",
    "colon": "a: b # not a comment",
    "quotes": "it's \"quoted\"\\",
    "unicode": "ünïcødé",
    "empty": "",
    "dotted.key/with-slash": {"n": 3, "f": 0.5, "t": True, "none": None},
    "key with space": [],
    "empty_map": {},
    "list": [1, "two", {"a": [{"b": "c"}, ["x", "y"]]}, [], {}],
  }
  assert yaml.safe_load(_load_launch_module().to_yaml(document)) == document


# ---------------------------------------------------------------------------------------------------------
# SLURM.
# ---------------------------------------------------------------------------------------------------------


def test_slurm_script_has_one_task_per_node_driving_all_its_gpus():
  out = launch([*SLURM, "--env", "NCCL_DEBUG=WARN", *COMMON, "--dry_run"])
  script = out.stdout
  assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
  sbatch = {line.split()[1] for line in script.splitlines() if line.startswith("#SBATCH")}
  assert {
    "--nodes=4",
    "--ntasks-per-node=1",
    "--gpus-per-node=8",
    "--signal=TERM@120",
    "--requeue",
    "--partition=a3",
    "--time=24:00:00",
    f"--chdir={REPO}",
  } <= sbatch
  lines = script.splitlines()
  assert lines.index(". .venv/bin/activate") < lines.index("export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7")
  assert "export NCCL_DEBUG=WARN" in lines
  (srun,) = [shlex.split(line) for line in lines if line.startswith("srun ")]
  assert srun[:2] == ["srun", "--kill-on-bad-exit=1"]
  assert srun[2:] == [
    "python",
    "-m",
    "lipsync_jax.main",
    "--config=configs/gan.py",
    f"--workdir={WORKDIR}",
    SHARDS,
  ]


def test_slurm_gpus_per_node_sets_gres_and_device_ids():
  out = launch(["slurm", "--nodes", "2", "--gpus_per_node", "4", *COMMON, "--dry_run"])
  assert "#SBATCH --gpus-per-node=4" in out.stdout and "export JAX_LOCAL_DEVICE_IDS=0,1,2,3\n" in out.stdout
  assert "#SBATCH --partition" not in out.stdout


# ---------------------------------------------------------------------------------------------------------
# Bad input and missing tools: one clear line, no traceback.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "args, named",
  [
    ([*TPU, "--accelerator", "v4-8", "--config", "configs/gan.py", "--workdir", "runs/gan"], "--workdir"),
    ([*TPU, "--accelerator", "v4-8", "--config", "configs/nope.py", "--workdir", WORKDIR], "configs/nope.py"),
    ([*TPU, "--accelerator", "tpu9-8", *COMMON], "--hosts_per_slice"),
    ([*TPU, "--accelerator", "v4-8", "--steps", "create,boot", *COMMON], "'boot'"),
    (["tpu", "--name", "t", "--zone", "z", "--accelerator", "v4-8", *COMMON], "--repo_url"),
    ([*TPU, "--accelerator", "v4-8", *COMMON, "--verbose"], "--verbose"),
    ([*TPU, "--accelerator", "v4-8", *COMMON, "--config.seed"], "--config.KEY=VALUE"),
    ([*TPU, "--accelerator", "v4-8", *COMMON, "--env", "1BAD=x"], "--env"),
    ([*GKE_TPU[:-1], "2x4", *COMMON], "ACCELERATOR:TOPOLOGY"),
    ([*GKE_TPU[:-1], "v5e:2y4", *COMMON], "topology"),
    ([*GKE_TPU, "--chips_per_host", "3", *COMMON], "--chips_per_host"),
    (["gke", "--name", "Bad_Name", "--image", "i", "--gpu", "h100", *COMMON], "--name"),
    ([*GKE_GPU, "--config", "configs/gan.py", "--workdir", "/local/dir"], "gs://"),
  ],
)
def test_bad_input_is_refused_naming_what_to_fix(args, named):
  result = launch([*args, "--dry_run"], check=False)
  assert result.returncode == 2, result.stdout
  assert named in result.stderr and "Traceback" not in result.stderr
  assert result.stdout == ""


@pytest.mark.parametrize(
  "args, tool",
  [
    ([*TPU, "--accelerator", "v4-8", *COMMON], "gcloud"),
    ([*MULTI, "--accelerator", "v4-16", "--num_slices", "2", *COMMON], "gcloud"),
    ([*GKE_GPU, "--nodes", "2", *COMMON], "kubectl"),
    ([*SLURM, *COMMON], "sbatch"),
  ],
)
def test_without_dry_run_a_missing_tool_is_named_before_anything_runs(tmp_path, args, tool):
  result = launch(args, path=tmp_path, check=False)  # PATH: an empty directory
  assert result.returncode == 2
  assert f"{tool} not found on PATH" in result.stderr and "--dry_run" in result.stderr
  assert "Traceback" not in result.stderr and result.stdout == ""


# ---------------------------------------------------------------------------------------------------------
# A real run executes what the dry run printed (fake tools record their argv and stdin).
# ---------------------------------------------------------------------------------------------------------


def _fake_tools(bin_dir, log):
  source = f"""#!{sys.executable}
import json, os, sys
argv = [os.path.basename(sys.argv[0])] + sys.argv[1:]
stdin = sys.stdin.read() if argv[0] in ("kubectl", "sbatch") else None
with open({str(log)!r}, "a") as f:
  f.write(json.dumps({{"argv": argv, "stdin": stdin}}) + "\\n")
if "describe" in argv:
  print("ACTIVE")
"""
  for tool in ("gcloud", "kubectl", "sbatch"):
    path = bin_dir / tool
    path.write_text(source)
    path.chmod(0o755)


def _calls(log):
  return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_real_run_executes_the_dry_run_commands(tmp_path):
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
  bin_dir.mkdir()
  _fake_tools(bin_dir, log)
  tpu = [
    *MULTI,
    "--accelerator",
    "v5p-16",
    "--num_slices",
    "2",
    "--steps",
    "create,setup,train,delete",
    *COMMON,
  ]
  launch(tpu, path=bin_dir)
  planned = commands(launch([*tpu, "--dry_run"]).stdout)
  ran = [call["argv"] for call in _calls(log)]
  wait = planned[
    1
  ]  # `until [ "$(gcloud ... describe ...)" = ACTIVE ]; ...`: the poll ran the describe command
  describe = shlex.split(wait[2][len("$(") : -1])
  assert ran == [planned[0], describe, *planned[2:]]

  log.unlink()
  launch([*GKE_GPU, "--nodes", "2", *COMMON], path=bin_dir)
  (call,) = _calls(log)
  assert call["argv"] == ["kubectl", "apply", "-f", "-"]
  dry = launch([*GKE_GPU, "--nodes", "2", *COMMON, "--dry_run"]).stdout
  assert yaml.safe_load(call["stdin"]) == yaml.safe_load(dry)

  log.unlink()
  launch([*SLURM, *COMMON], path=bin_dir)
  (call,) = _calls(log)
  assert call["argv"] == ["sbatch"] and call["stdin"] == launch([*SLURM, *COMMON, "--dry_run"]).stdout


def test_a_failing_command_stops_the_recipe_with_its_status(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text("#!/bin/sh\necho 'ERROR: (gcloud) quota exceeded' >&2\nexit 7\n")
  gcloud.chmod(0o755)
  result = launch([*TPU, "--accelerator", "v4-8", *COMMON], path=bin_dir, check=False)
  assert result.returncode == 7
  assert "quota exceeded" in result.stderr and "gcloud exited with status 7" in result.stderr
  assert result.stderr.count("+ gcloud") == 1 and "Traceback" not in result.stderr
