"""MovieLens-100k, the embedded default: the full GREAM pipeline on 2 CPU cores.

Command:
    python -m gream_jax.main --config=configs/ml100k.py --workdir=/tmp/gream_ml100k
Smoke (same experiment, shrunk to about three minutes on a 2-core CPU):
    python -m gream_jax.main --config=configs/ml100k.py:smoke --workdir=/tmp/gream_smoke
SRPO in Reasoning mode instead (chain rollouts: one chain per prompt, G answers after it; ~45 min; raises
Reasoning-mode validation NDCG@10 by ~.011 on seeds 0 and 1, not test; docs/results.md "Session 16"):
    python -m gream_jax.main --config=configs/ml100k.py:reasoning_rl --workdir=W --config.stage=rl
The same with SFT holding out each user's last training item and SRPO on exactly those transitions
(Reasoning-mode test NDCG@10 against SFT alone over eight seeds about +.0017, s.e. .0017: within
noise; +.0053 on seeds 0-2, -.0012 on seeds 3-5, +.0007 on seeds 6-7; from the last SFT update, whose
chains are trained, -.0003; docs/results.md "Session 17", "Session 18", "Session 19"; prepare,
index and SFT ~16 min, RL ~30 min):
    python -m gream_jax.main --config=configs/ml100k.py:heldout_reasoning_rl --workdir=W --config.stage=sft
    python -m gream_jax.main --config=configs/ml100k.py:heldout_reasoning_rl --workdir=W --config.stage=rl

Expected wall time and results (2-core CPU, measured 2026-11-26..28, docs/results.md "ml100k"):
prepare + index about 1-2 min; SFT 1,900 updates about 8-13 min (best validation at update 1,500-1,625);
RL (Direct-mode SRPO) bounded to 10 min by `config.rl.time_budget_s`; eval a few minutes.
Full pipeline (about 25 min on an idle-ish 2-core CPU), Direct mode, all 943 users, all 1,682
items ranked: with these defaults test Recall@10 / NDCG@10 0.1506 / 0.0723 (`make run` on a clean
clone, seed 0, 15 min beside a CI run) and 0.1453 / 0.0713 (fresh `all`, seed 1, 19 min shared;
both session 21): SRPO exports an RL step only on a paired validation gain of 2 s.e., and on
both seeds it keeps the SFT model. Session 12's pipeline (reasoning chains at ratio 0.3,
docs/results.md "a Reasoning mode that works"), whose RL exported a step: 0.1516 / 0.0714 and
0.1421 / 0.0706; Reasoning mode (all 943 users) 0.0700 / 0.0327 and 0.0647 / 0.0325. With the session-8 defaults (reasoning ratio 0.03, 1,600 updates)
0.1368 / 0.0677 (fresh `all`, seed 0, 27 min shared) and 0.1294 / 0.0630 (seed 1); with the level
softmax alone (docs/results.md "session 6") 0.1336 / 0.0635 and, in a fresh `all` run with 150
instead of 99 SRPO steps, 0.1294 / 0.0619 (seed 0); 0.1315 / 0.0661 (seed 1); with
the reference's vocabulary softmax (`--config.model.sid_softmax=vocab`) five runs gave 0.121-0.135
/ 0.059-0.068 and eleven SFT-only runs average 0.129 / 0.062.
SASRec on the same split: 0.136 / 0.064 (at our level: the standard error is 0.011 / 0.006).
SRPO adds no more than noise in the budgets measured; traced on test at every validation it
lowers NDCG@10 at lr 2e-5 and barely moves it at GREAM's 2e-6 (docs/results.md "Session 21").
"""

from gream_jax.config_defaults import base_config, recipes


def get_config(arg: str | None = None):
    config = base_config()
    config.name = "ml100k"
    config.data.name = "ml100k"
    config.data.max_history = 20
    # index, model, tasks, SFT, eval and RL: the measured small-catalogue recipe (its docstring and
    # comments give the measurements; docs/results.md "ml100k").
    recipes.small_catalogue(config)
    if arg == "reasoning_rl":
        # SRPO in Reasoning mode with chain rollouts (recipes.reasoning_srpo): ~45 min on 2 CPU cores.
        recipes.reasoning_srpo(config)
    elif arg == "heldout_reasoning_rl":
        # The same on transitions SFT held out (recipes.heldout_reasoning_srpo): SFT, RL and eval.
        recipes.heldout_reasoning_srpo(config)
    elif arg == "smoke":
        config.name = "ml100k_smoke"
        recipes.small_catalogue_smoke(config)
    elif arg not in (None, ""):
        raise ValueError(f"configs/ml100k.py: unknown argument {arg!r}; use ':smoke', ':reasoning_rl', "
                         "':heldout_reasoning_rl' or nothing")
    return config
