"""Test session setup: 8 fake CPU devices (a simulated pod slice) and a float32 default."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CLIs run by the tests do not write jax's persistent compilation cache into ~/.cache (the compile-cache
# tests turn it on themselves, in temporary directories).
os.environ.setdefault("LIPSYNC_JAX_COMPILE_CACHE", "0")
