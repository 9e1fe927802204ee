"""Amazon-2014 "Beauty" (5-core; the P5 / TIGER / LC-Rec version): 22,363 users, 12,101 items, 198,502 interactions.

Data: the processed LC-Rec/GREAM files in `../shared/data/beauty/` (Beauty.inter.json + Beauty.item.json),
found relative to this repository's root so a clean clone with `../shared` beside it works;
override with `--config.data.path=DIR`.

Command:
    python -m gream_jax.main --config=configs/beauty.py --workdir=/tmp/gream_beauty
Data preparation only (prints the stats table, writes WORKDIR/data/):
    python -m gream_jax.main --config=configs/beauty.py --config.stage=prepare --workdir=/tmp/gream_beauty
Smoke (same experiment shrunk; ~18 min on a 2-core CPU, mostly the index and the all-user eval):
    python -m gream_jax.main --config=configs/beauty.py:smoke --workdir=/tmp/gream_beauty_smoke

Expected wall time and results: the prepare stage takes a few seconds on a 2-core CPU and
prints the counts above. The full pipeline (session 22, 2026-11-29, 64 min on a 2-core CPU shared
with other jobs about half the time) gives Direct-mode test R@5 / R@10 / N@5 / N@10
.0486 / .0679 / .0338 / .0400 on all 22,363 users (TIGER: .0454 / .0648 / .0321 / .0384); SRPO's
paired gate keeps the SFT model. Earlier variants: the "beauty" rows of docs/results.md.
"""

import os

from gream_jax.config_defaults import base_config, recipes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "beauty"))


def get_config(arg: str | None = None):
    config = base_config()
    config.name = "beauty"
    config.data.name = "amazon_processed"
    config.data.path = DATA_DIR
    config.data.file_prefix = "Beauty"
    config.data.max_history = 20
    # --- index: text+collaborative embeddings, 2 balanced levels x 64 codes + one item-unique
    # token (the ML-100k scheme; 92.8% of items share their 2-code prefix, 0 collisions after the
    # item token). Measured on this split, SFT only, 4,000 test users (docs/results.md "beauty"):
    # the reference's 4 x 256 + rank suffix .0280 / .0131 (R@10 / N@10) with the vocabulary
    # softmax; 2 x 64 + item token .0323 / .0159 with it and .0493 / .0264 with the level softmax
    # (the recipe's default), whose loss head is 3.7x cheaper here (a 12k-way item level only
    # where an item token is predicted). `--config.index.codes_per_level="(256,256,256,256)"
    # --config.index.collision=rank_suffix` restores the reference's SIDs.
    config.index.embedding = "text+collaborative"
    config.index.codes_per_level = (64, 64)
    config.index.collision = "item_token"
    # --- model, tasks, train: the ML-100k small-model recipe (2 layers x 64, dense seqrec windows,
    # prompt tasks at a small share, level softmax), 64 rows x 128 tokens per update (~370 dense
    # windows; an epoch of 22k users is ~60 updates), 1,950 updates with the reasoning chains set
    # below; validation every 200 updates on a fixed 2,000-user subset (all 22k users x beam 50
    # take ~4 min per pass).
    recipes.small_from_scratch(config)
    # Twice the recipe's width (docs/results.md "session 9"): 2 layers x 128 (4 heads x 32, MLP 512).
    # Same data, index, seed and schedule, all 22,363 users, valid / test N@10: .0486 / .0363 at 64
    # wide, .0519 / .0378 at 128 wide. The wider model peaks earlier (update 600 of 1,600) and then
    # memorises; the update is chosen by validation NDCG@10 (Recall@10 on the 1,000-user subset
    # picks update 1,000, lower on all-user validation).
    config.model.hidden_size = 128
    config.model.head_dim = 32
    config.model.intermediate_size = 512
    config.train.select_metric = "ndcg@10"
    # Dropout 0.1 (docs/results.md "session 10"): without it the 128-wide model peaks at update 600
    # and memorises after (training loss 1.15); with it validation still rises at update 1,600 and
    # the full pipeline's test R@5 / R@10 / N@5 / N@10 go from .0449 / .0658 / .0312 / .0378 to
    # .0485 / .0675 / .0339 / .0400 (all 22,363 users).
    config.train.dropout_rate = 0.1
    config.tasks.examples = {"seqrec": 0, "item2index": 500, "index2item": 500, "fusionseqrec": 300,
                             "itemsearch": 300, "preferenceobtain": 100}
    config.train.batch_size = 64
    config.train.steps = 1950         # 1,600 alignment-stream updates + the reasoning batches (below)
    config.train.max_minutes = 0.0    # 95 min for the 1,950 updates beside two or three other jobs (1,600
                                      # updates without the chains: 33 min on an idle 2-core CPU)
    config.train.checkpoint_every = 200
    config.train.eval_every = 200
    config.train.eval_users = 2000   # ~20 s per validation at beam 50; the 1,000-user subset misled twice
    config.train.final_eval_users = 4000
    # Reasoning chains as in ML-100k's recipe (ratio 0.3, 2,000 chains; 350 more updates keep the
    # alignment stream's ~1,600), with room for Beauty's longer chains (recipes.long_reasoning_chains:
    # at 512-token rows 36% were skipped). docs/results.md "Session 14": Reasoning mode on 1,000
    # users went from test R@10 / N@10 .0070 / .0042 (ratio 0.03, 600 chains: 10-token fragments) to
    # .0320 / .0157 (paired N@10 +.0115, s.e. .0035); Direct mode unchanged within noise (all 22,363 users, SFT alone: test
    # .0474 / .0687 / .0331 / .0400 R@5 / R@10 / N@5 / N@10, paired N@10 +.0002, s.e. .0006).
    config.tasks.reasoning_ratio = 0.3
    config.tasks.reasoning_examples = 2000
    recipes.long_reasoning_chains(config)
    # The next-item head (docs/results.md "next-item head"): an all-items softmax at each SID's
    # first code in training (weight 1), and Direct mode's beam items re-ranked by
    # log P(item) + 2 log q(item). Same data, index and schedule, all 22,363 users, test R@10 /
    # N@10: .0523 / .0283 without either, .0574 / .0320 with the objective alone, .0616 / .0354
    # re-ranking beam 20, .0642 / .0363 re-ranking beam 50 (weight and beam chosen on validation).
    config.train.next_item_weight = 1.0
    config.eval.item_head_weight = 2.0
    config.eval.beam_size = 50
    # The eval stage chooses the re-ranking weight on all validation users (one decoding pass, every
    # weight scored on the host; eval/item_head_weights.md) and ranks the test users with it; SFT
    # and RL validation keep the weight 2 above. The choice maximises validation NDCG@10.
    config.eval.item_head_weights = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)
    config.eval.select_metric = "ndcg@10"
    # --- rl: SRPO in Direct mode with the ML-100k settings (docs/results.md "session 7": reasoning
    # rollouts of 256 prompts x 10 chains of ~500 tokens do not fit a 2-core CPU), bounded by wall time;
    # rl/final is the best of the SFT model and the RL steps on validation (2,000 users).
    recipes.direct_srpo(config)
    config.rl.eval_every = 25
    config.rl.eval_users = 2000
    if arg == "smoke":
        config.name = "beauty_smoke"
        recipes.small_catalogue_smoke(config)
        config.train.steps = 100
        config.train.warmup_steps = 10
        config.train.checkpoint_every = 50
        config.train.final_eval_users = 500
    elif arg not in (None, ""):
        raise ValueError(f"configs/beauty.py: unknown argument {arg!r}; use ':smoke' or nothing")
    return config
