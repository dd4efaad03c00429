#!/usr/bin/env bash
# Train on one multi-GPU host (e.g. 8x H100): one process drives all local GPUs; the mesh spans them and
# the global batch is split over the 'data' axis.
#
#   ./launch/gpu_host.sh configs/gan.py /data/runs/gan1 --config.expert_checkpoint=/data/runs/expert1 \
#       --config.data.shards_dir=/data/lrs2_shards --config.model.compute_dtype=bfloat16
#
# Several GPU hosts: `python launch/launch.py slurm ...` or `... gke --gpu ...` (see launch/README.md), or
# start this on every host with
#   JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i ./launch/gpu_host.sh ...
# Needs `pip install "jax[cuda12]==0.10.2" -r requirements.txt -e . && pip install --no-deps -r requirements-nodeps.txt`.
set -euo pipefail
CONFIG="${1:?config file, e.g. configs/gan.py}"
WORKDIR="${2:?workdir}"
shift 2
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
exec python -m lipsync_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
