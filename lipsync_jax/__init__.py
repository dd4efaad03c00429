"""lipsync_jax: Wav2Lip-style lip-sync models in JAX/Flax.

Owns nothing itself but the import-time defaults: XLA:CPU flags (`lipsync_jax.xla_flags`), the quiet
C++ logging environment (`lipsync_jax.logs`) and gs:// through gcsfs for everyone, orbax included
(`lipsync_jax.fs.configure_remote`, before any remote path is touched); see README.md "Code map" for which module owns what.
"""

from lipsync_jax import fs as _fs  # noqa: F401  (import runs fs.configure_remote())
from lipsync_jax import logs as _logs
from lipsync_jax import xla_flags as _xla_flags

__version__ = "0.1.0"

_logs.quiet_environment()
_xla_flags.apply_default_xla_flags()
