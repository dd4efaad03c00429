"""lipsync_jax: Wav2Lip-style lip-sync models in JAX/Flax.

Owns nothing itself but the import-time XLA:CPU defaults (`lipsync_jax.xla_flags`); see README.md
"Code map" for which module owns what.
"""

from lipsync_jax import xla_flags as _xla_flags

__version__ = "0.1.0"

_xla_flags.apply_default_xla_flags()
