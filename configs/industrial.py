"""Amazon-2018 "Industrial_and_Scientific" (5-core, LC-Rec-style processing): 8,317 users, 4,344 items, 58,492 interactions.

Data: the processed LC-Rec/GREAM files in `../shared/data/industrial/` (Industrial.inter.json + Industrial.item.json),
found relative to this repository's root so a clean clone with `../shared` beside it works;
override with `--config.data.path=DIR`.

Command:
    python -m gream_jax.main --config=configs/industrial.py --workdir=/tmp/gream_industrial
Data preparation only (prints the stats table, writes WORKDIR/data/):
    python -m gream_jax.main --config=configs/industrial.py --config.stage=prepare --workdir=/tmp/gream_industrial
Smoke (same experiment, shrunk to a few minutes on a 2-core CPU):
    python -m gream_jax.main --config=configs/industrial.py:smoke --workdir=/tmp/gream_industrial_smoke

Expected wall time and results (2-core CPU, 2026-11-28, docs/results.md "Office and Industrial"): a
fresh `all` took 58 min beside other jobs (SFT best at update 875 of 1,900; SRPO kept step 40, within
noise of SFT); Direct mode, all 8,317 users, all 4,344 items ranked: test Recall@5 / Recall@10 /
NDCG@5 / NDCG@10 0.0632 / 0.0821 / 0.0490 / 0.0550 (valid R@10 / N@10 0.1030 / 0.0677); most popular
0.0231 / 0.0162 (R@10 / N@10). Reasoning mode (1,000 users, SFT with the room for long chains added
in session 14): test R@10 / N@10 0.0540 / 0.0279. The prepare stage takes a few seconds and prints the
counts above.
"""

import os

from gream_jax.config_defaults import base_config, recipes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "industrial"))


def get_config(arg: str | None = None):
    config = base_config()
    config.name = "industrial"
    config.data.name = "amazon_processed"
    config.data.path = DATA_DIR
    config.data.file_prefix = "Industrial"
    config.data.max_history = 20
    # The measured small-catalogue recipe of ML-100k, unchanged (recipes.small_catalogue: text +
    # collaborative SIDs 2 x 32 + an item-unique token, the 2 x 64 model with the level softmax and
    # the next-item head, reasoning chains at ratio 0.3, Direct-mode SRPO for 10 min).
    recipes.small_catalogue(config)
    # Validation on a fixed 2,000-user subset (as configs/beauty.py): all users at beam 50 would
    # cost about a minute per pass; the eval stage still scores every user.
    config.train.eval_users = 2000
    # Room for this catalogue's longer reasoning chains (median response 524 tokens; docs/results.md
    # "Session 14"): at the recipe's 512-token rows 59% of them were skipped. Same seed and data,
    # Reasoning mode on 1,000 users, test R@10 / N@10 .0290 / .0143 -> .0540 / .0279 (paired N@10
    # +.0136, s.e. .0040); Direct mode unchanged within noise (test .0821 / .0552 -> .0849 / .0549).
    recipes.long_reasoning_chains(config)
    if arg == "smoke":
        config.name = "industrial_smoke"
        recipes.small_catalogue_smoke(config)
    elif arg not in (None, ""):
        raise ValueError(f"configs/industrial.py: unknown argument {arg!r}; use ':smoke' or nothing")
    return config
