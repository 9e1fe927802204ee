"""MovieLens-100k, the embedded default: the full GREAM pipeline on 2 CPU cores.

Command:
    python -m gream_jax.main --config=configs/ml100k.py --workdir=/tmp/gream_ml100k
Smoke (same experiment, shrunk to about a minute on a laptop CPU):
    python -m gream_jax.main --config=configs/ml100k.py:smoke --workdir=/tmp/gream_smoke

Expected wall time and results: see the "ml100k" rows of docs/results.md (kept in sync
with this docstring by the person who last measured them).
"""

from gream_jax.config_defaults import base_config


def get_config(arg: str | None = None):
    config = base_config()
    config.name = "ml100k"
    config.data.name = "ml100k"
    config.data.max_history = 20
    if arg == "smoke":
        config.name = "ml100k_smoke"
    elif arg not in (None, ""):
        raise ValueError(f"configs/ml100k.py: unknown argument {arg!r}; use ':smoke' or nothing")
    return config
