"""MovieLens-100k, the embedded default: the full GREAM pipeline on 2 CPU cores.

Command:
    python -m gream_jax.main --config=configs/ml100k.py --workdir=/tmp/gream_ml100k
Smoke (same experiment, shrunk to about three minutes on a 2-core CPU):
    python -m gream_jax.main --config=configs/ml100k.py:smoke --workdir=/tmp/gream_smoke
SRPO in Reasoning mode instead (GREAM's own rollouts; 30 min, measured not to help on this model):
    python -m gream_jax.main --config=configs/ml100k.py:reasoning_rl --workdir=W --config.stage=rl

Expected wall time and results (2-core CPU, measured 2026-11-26..28, docs/results.md "ml100k"):
prepare + index about 1-2 min; SFT 1,900 updates about 8-13 min (best validation at update 1,500-1,625);
RL (Direct-mode SRPO) bounded to 10 min by `config.rl.time_budget_s`; eval a few minutes.
Full pipeline (about 25 min on an idle-ish 2-core CPU), Direct mode, all 943 users, all 1,682
items ranked: with these defaults (reasoning chains at ratio 0.3, docs/results.md "a Reasoning mode
that works", session 12) test Recall@10 / NDCG@10 0.1516 / 0.0714 (fresh `all`, seed 0, 27 min
beside a CI run) and 0.1421 / 0.0706 (seed 1, stage by stage); Reasoning mode (all 943 users)
0.0700 / 0.0327 and 0.0647 / 0.0325. With the session-8 defaults (reasoning ratio 0.03, 1,600 updates)
0.1368 / 0.0677 (fresh `all`, seed 0, 27 min shared) and 0.1294 / 0.0630 (seed 1); with the level
softmax alone (docs/results.md "session 6") 0.1336 / 0.0635 and, in a fresh `all` run with 150
instead of 99 SRPO steps, 0.1294 / 0.0619 (seed 0); 0.1315 / 0.0661 (seed 1); with
the reference's vocabulary softmax (`--config.model.sid_softmax=vocab`) five runs gave 0.121-0.135
/ 0.059-0.068 and eleven SFT-only runs average 0.129 / 0.062.
SASRec on the same split: 0.136 / 0.064 (at our level: the standard error is 0.011 / 0.006).
SRPO adds no more than noise in the budgets measured.
"""

from gream_jax.config_defaults import base_config, recipes


def get_config(arg: str | None = None):
    config = base_config()
    config.name = "ml100k"
    config.data.name = "ml100k"
    config.data.max_history = 20
    # --- index (issue 10 owner): text+collaborative embeddings, 2 balanced levels x 32 codes, then
    # one item-unique token. Measured with a small from-scratch generator (baselines.md): test
    # R@10 0.132 / N@10 0.059 (SASRec's level) vs 0.100 / 0.045 for 3x32 + rank suffix and 0.085
    # for text-only 3x32; 32 codes because 1,682 items over 256 codes leave ~6 items per code.
    config.index.embedding = "text+collaborative"
    config.index.codes_per_level = (32, 32)
    config.index.collision = "item_token"
    # --- model, tasks, train (SFT owner): the measured small-model recipe (baselines.md): a
    # from-scratch Qwen3 2 layers x 64 wide, trained mostly on dense seqrec windows (every item of
    # a 21-item window is a target), lr 2e-3 warm-up + cosine, many small fast updates, and the
    # best-validation checkpoint kept (a constant lr overfits after a few minutes).
    recipes.small_from_scratch(config)
    # The prompt tasks and the reasoning chains at a small share (~10% of the tokens): the model is
    # too small to gain Direct-mode accuracy from them, but they teach the formats later stages use.
    config.tasks.examples = {"seqrec": 0, "item2index": 300, "index2item": 300, "fusionseqrec": 200,
                             "itemsearch": 200, "preferenceobtain": 100}
    # Reasoning chains at 0.3 reasoning batches per alignment batch (GREAM's linear ramp; ~19% of
    # the steps), 2,000 chains, 300 more steps so the alignment stream keeps its ~1,550 steps
    # (docs/results.md "Reasoning mode that works", session 12): at the recipe's 0.03 the model saw
    # ~250 chains and wrote 10-token fragments in Reasoning mode (test R@10 .023, 128 users).
    config.tasks.reasoning_ratio = 0.3
    config.tasks.reasoning_examples = 2000
    config.train.steps = 1900
    config.eval.reasoning_budget = 512     # a chain is ~400 tokens; 192 would cut most of them
    config.train.max_minutes = 0.0
    config.train.checkpoint_every = 125
    config.train.eval_every = 125
    # The next-item head (as configs/beauty.py; docs/results.md "next-item head"): an all-items
    # softmax at each SID's first code in training, and Direct mode's 50 beam items re-ranked by
    # log P(item) + 2 log q(item). On ML-100k the change is within noise (fresh `all`, seeds 0 / 1:
    # test R@10 / N@10 .1368 / .0677 and .1294 / .0630, against .1336 / .0669 and .1315 / .0661
    # without it; s.e. .011 / .006); on Beauty, where the standard error is 7x smaller, it lifts
    # test R@10 from .0523 to .0642.
    config.train.next_item_weight = 1.0
    config.eval.item_head_weight = 2.0
    config.eval.beam_size = 50
    # --- rl (issue 12 owner): Direct-mode SRPO bounded to 10 min (recipes.direct_srpo).
    recipes.direct_srpo(config)
    config.rl.eval_every = 10
    config.rl.checkpoint_every = 10
    if arg == "reasoning_rl":
        # SRPO in Reasoning mode, GREAM's own (recipes.reasoning_srpo): 30 min on 2 CPU cores.
        recipes.reasoning_srpo(config)
    elif arg == "smoke":
        config.name = "ml100k_smoke"
        config.train.steps = 150
        config.train.max_minutes = 0.0
        config.train.warmup_steps = 20
        config.train.log_every = 25
        config.train.checkpoint_every = 75
        config.train.eval_every = 0
        config.train.eval_users = 200
        recipes.shrink_srpo_for_smoke(config)
        config.eval.beam_size = 20
    elif arg not in (None, ""):
        raise ValueError(f"configs/ml100k.py: unknown argument {arg!r}; use ':smoke', ':reasoning_rl' or nothing")
    return config
