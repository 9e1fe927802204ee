"""Amazon-2014 "Office_Products" (5-core, UniTok's LC-Rec-style release): 4,905 users, 2,420 items, 53,258 interactions.

Data: the processed LC-Rec/GREAM files in `../shared/data/office/` (Office.inter.json + Office.item.json),
found relative to this repository's root so a clean clone with `../shared` beside it works;
override with `--config.data.path=DIR`.

Command:
    python -m gream_jax.main --config=configs/office.py --workdir=/tmp/gream_office
Data preparation only (prints the stats table, writes WORKDIR/data/):
    python -m gream_jax.main --config=configs/office.py --config.stage=prepare --workdir=/tmp/gream_office
Smoke (same experiment, shrunk to a few minutes on a 2-core CPU):
    python -m gream_jax.main --config=configs/office.py:smoke --workdir=/tmp/gream_office_smoke

Expected wall time and results (2-core CPU, 2026-11-28, docs/results.md "Office and Industrial"): a
fresh `all` took 37 min beside other jobs (SFT best at update 1,000 of 1,900; SRPO kept the SFT model);
Direct mode, all 4,905 users, all 2,420 items ranked: test Recall@5 / Recall@10 / NDCG@5 / NDCG@10
0.0585 / 0.0897 / 0.0389 / 0.0489 (valid R@10 / N@10 0.1156 / 0.0609); most popular 0.0006 / 0.0002
(R@10 / N@10). The prepare stage takes a few seconds and prints the counts above.
"""

import os

from gream_jax.config_defaults import base_config, recipes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "office"))


def get_config(arg: str | None = None):
    config = base_config()
    config.name = "office"
    config.data.name = "amazon_processed"
    config.data.path = DATA_DIR
    config.data.file_prefix = "Office"
    config.data.max_history = 20
    # The measured small-catalogue recipe of ML-100k, unchanged (recipes.small_catalogue: text +
    # collaborative SIDs 2 x 32 + an item-unique token, the 2 x 64 model with the level softmax and
    # the next-item head, reasoning chains at ratio 0.3, Direct-mode SRPO for 10 min).
    recipes.small_catalogue(config)
    # Validation on a fixed 2,000-user subset (as configs/beauty.py): all users at beam 50 would
    # cost about a minute per pass; the eval stage still scores every user.
    config.train.eval_users = 2000
    if arg == "smoke":
        config.name = "office_smoke"
        recipes.small_catalogue_smoke(config)
    elif arg not in (None, ""):
        raise ValueError(f"configs/office.py: unknown argument {arg!r}; use ':smoke' or nothing")
    return config
