"""Amazon-2014 "Beauty" (5-core; the P5 / TIGER / LC-Rec version): 22,363 users, 12,101 items, 198,502 interactions.

Data: the processed LC-Rec/GREAM files in `../shared/data/beauty/` (Beauty.inter.json + Beauty.item.json),
found relative to this repository's root so a clean clone with `../shared` beside it works;
override with `--config.data.path=DIR`.

Command:
    python -m gream_jax.main --config=configs/beauty.py --workdir=/tmp/gream_beauty
Data preparation only (prints the stats table, writes WORKDIR/data/):
    python -m gream_jax.main --config=configs/beauty.py --config.stage=prepare --workdir=/tmp/gream_beauty
Smoke (same experiment, shrunk to about a minute on a laptop CPU):
    python -m gream_jax.main --config=configs/beauty.py:smoke --workdir=/tmp/gream_beauty_smoke

Expected wall time and results: the prepare stage takes a few seconds on a 2-core CPU and
prints the counts above; full-pipeline figures are the "beauty" rows of docs/results.md (kept in
sync with this docstring by the person who last measured them).
"""

import os

from gream_jax.config_defaults import base_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "beauty"))


def get_config(arg: str | None = None):
    config = base_config()
    config.name = "beauty"
    config.data.name = "amazon_processed"
    config.data.path = DATA_DIR
    config.data.file_prefix = "Beauty"
    config.data.max_history = 20
    if arg == "smoke":
        config.name = "beauty_smoke"
    elif arg not in (None, ""):
        raise ValueError(f"configs/beauty.py: unknown argument {arg!r}; use ':smoke' or nothing")
    return config
