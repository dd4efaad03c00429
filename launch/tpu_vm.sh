#!/usr/bin/env bash
# Train on a Cloud TPU VM: one host (v5e-8, v4-8, ...) or a whole pod slice (v5e-64, v4-128, ...).
# The same command runs on every host (--worker=all); jax.distributed.initialize() finds the peers from
# the TPU environment, each host feeds its slice of the batch, and only host 0 writes TensorBoard.
#
#   TPU_NAME=my-tpu ZONE=us-central2-b ACCELERATOR=v4-32 ./launch/tpu_vm.sh create
#   TPU_NAME=my-tpu ZONE=us-central2-b ./launch/tpu_vm.sh setup
#   TPU_NAME=my-tpu ZONE=us-central2-b WORKDIR=gs://BUCKET/runs/gan1 \
#       ARGS="--config.expert_checkpoint=gs://BUCKET/runs/expert1 --config.data.shards_dir=/mnt/lrs2_shards" \
#       ./launch/tpu_vm.sh train configs/gan.py
#   TPU_NAME=my-tpu ZONE=us-central2-b ./launch/tpu_vm.sh delete
#
# Preemptible / spot TPUs: the trainer saves a checkpoint on SIGTERM and exits 0; rerun `train` with the
# same WORKDIR to resume (model, optimiser, sync weight, RNG and data-iterator state).
# Shards must be readable as local files on every host (copy them, or mount a bucket with gcsfuse).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR="${ACCELERATOR:-v4-8}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" \
        --version="$RUNTIME" ${SPOT:+--spot} ;;
  setup)
    : "${REPO_URL:?set REPO_URL to the git URL of your lipsync_jax repository}"
    ssh_all "set -e; (test -d lipsync_jax || git clone $REPO_URL lipsync_jax); cd lipsync_jax && git pull; \
python3 -m venv ~/venv && ~/venv/bin/pip install -U pip && ~/venv/bin/pip install 'jax[tpu]==0.10.2' \
-r requirements.txt && ~/venv/bin/pip install -e ." ;;
  train)
    CONFIG="${2:?config file, e.g. configs/gan.py}"
    : "${WORKDIR:?set WORKDIR (gs://... or a path every host can write)}"
    ssh_all "cd lipsync_jax && ~/venv/bin/python -m lipsync_jax.main --config=$CONFIG --workdir=$WORKDIR ${ARGS:-} \
2>&1 | tee -a ~/train.log" ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet ;;
  *)
    echo "usage: $0 create|setup|train CONFIG|delete" >&2; exit 2 ;;
esac
