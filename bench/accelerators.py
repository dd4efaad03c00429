"""Accelerator facts the benchmarks share: dense bf16 peak FLOP/s per device (for MFU) and its lookup.

Owns `PEAK_BF16_FLOPS` and `peak_flops_per_device(device_kind)`; bench/device_check.py, bench/costs.py and
bench/train_bench.py use them (one table, no jax import here).
"""

from __future__ import annotations

# Dense bf16 peak FLOP/s per jax device (one device = one GPU / one TPU chip; v4 and v5p megacore chips are
# one device), vendor figures without sparsity. Matched against jax's device_kind (jax/_src/mesh_utils.py
# names them): the longest key that is a substring (case-insensitive) wins, so 'TPU v5 lite' (v5e) is not
# taken for 'TPU v5' (v5p's older name). None: no figure (MFU n/a rather than a wrong one).
#   NVIDIA H100 / H200: https://www.nvidia.com/en-us/data-center/h100/ and /h200/ datasheets: BF16 Tensor
#     Core 1,979 TFLOPS SXM, 1,671 NVL, 1,513 H100 PCIe, 'with sparsity' (dense = half).
#   NVIDIA A100: https://www.nvidia.com/en-us/data-center/a100/ datasheet: BF16 Tensor Core 312 TFLOPS.
#   Cloud TPU: https://cloud.google.com/tpu/docs/v4 (275 TFLOPS bf16 per chip), /v5e (197), /v5p (459),
#     /v6e (918) (system architecture pages, 'Peak compute per chip (bf16)').
PEAK_BF16_FLOPS: dict[str, float | None] = {
  'H200': 989e12,
  'H200 NVL': 835e12,
  'H100': 989e12,
  'H100 NVL': 835e12,
  'H100 PCIe': 756e12,
  'A100': 312e12,
  'TPU v4': 275e12,
  'TPU v4 lite': None,  # v4i, an inference chip: no published bf16 figure at hand
  'TPU v5 lite': 197e12,  # v5e's device_kind
  'TPU v5e': 197e12,
  'TPU v5': 459e12,  # v5p's older device_kind
  'TPU v5p': 459e12,
  'TPU v6 lite': 918e12,  # v6e (Trillium)'s device_kind
  'TPU v6e': 918e12,
}


def peak_flops_per_device(device_kind: str) -> float | None:
  """Dense bf16 peak FLOP/s of one device of this jax device_kind, None when unknown (e.g. CPU)."""
  kind = device_kind.lower()
  matches = [key for key in PEAK_BF16_FLOPS if key.lower() in kind]
  return PEAK_BF16_FLOPS[max(matches, key=len)] if matches else None
