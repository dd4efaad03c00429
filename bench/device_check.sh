#!/usr/bin/env bash
# The accelerator benchmark in one call: sets the environment, shows the platform, runs
# bench/device_check.py (train steps + MFU, 720p inference by stage, the three networks; one table, one
# JSON) under an outer timeout of its time budget + 90 s, so a short accelerator slot is never overrun.
#
#   bash bench/device_check.sh                  # all sections, budget 420 s, ./device_check.json ($OUT/ if set)
#   bash bench/device_check.sh --out "$OUT/device_check.json" --budget_s 300
#   bash bench/device_check.sh --quick                        # CPU smoke run
#
# Python: $PYTHON, else .venv/bin/python when there is one, else python3. Exit status: device_check.py's
# (0 all measured, 1 an item failed (the others were still measured), 2 no accelerator and no --quick),
# 124 when the outer timeout stopped it (the JSON still holds every item finished before).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# jax takes this share of accelerator memory up front (default 0.75): the full-size GAN step at batch 16
# and the 720p inference fit either way; more leaves room when the batch is raised.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

budget=420
out=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --budget_s=*) budget="${args[$i]#--budget_s=}" ;;
    --budget_s) budget="${args[$((i + 1))]:-$budget}" ;;
    --out | --out=*) out=(--out) ;;
  esac
done
budget="${budget%.*}"
# No --out and an $OUT folder (a job's output folder): the report goes there.
if [ ${#out[@]} = 0 ] && [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then out=(--out "$OUT/device_check.json"); else out=(); fi

echo "device_check.sh: $("$PYTHON" --version 2>&1) at $(command -v "$PYTHON"), budget ${budget} s"
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
elif compgen -G "/dev/accel*" > /dev/null || compgen -G "/dev/vfio/[0-9]*" > /dev/null; then
  echo "TPU device files: $(ls -d /dev/accel* /dev/vfio/[0-9]* 2> /dev/null | tr '\n' ' ')"
else
  echo "no GPU (nvidia-smi) or TPU (/dev/accel*) found; device_check.py refuses CPU unless --quick / --allow_cpu"
fi

timeout -k 15 "$((budget + 90))" "$PYTHON" bench/device_check.py --budget_s "$budget" "${out[@]}" "$@"
status=$?
[ "$status" = 124 ] && echo "device_check.sh: stopped by the outer timeout ($((budget + 90)) s)" >&2
exit "$status"
