"""Training configs: `common.py` (the one schema) and one file per stage with `get_config(arg)` variants.

Installed with the project (`pip install -e .`), so `from configs import common` works wherever
`--config=configs/<stage>.py` is loaded from.
"""
