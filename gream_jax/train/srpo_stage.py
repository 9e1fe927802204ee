"""The `rl` stage: SRPO post-training from WORKDIR/sft/final, exported to WORKDIR/rl/final.

`run_rl(config, workdir)`:
  1. loads the SFT model twice: the policy (trained) and the frozen reference (KL anchor), the
     training split (prompts from training parts only), the SIDs and the trie;
  2. each step (`srpo_trainer.SrpoTrainer.train_step`): rollouts with dynamic sampling
     (`srpo_batch.collect_groups`), rewards and advantages from the configured objective
     (`advantages.OBJECTIVES`), old-policy and reference log-probs (one jitted forward), then
     `ppo_epochs` passes of shuffled mini-batch updates;
  3. logs per step (TensorBoard, WORKDIR/rl/metrics.jsonl, a progress line): reward, exact-hit rate,
     zero-variance share, KL, clip fraction, entropy, tokens/s; orbax checkpoints (resume: run the
     same command again); Direct-mode validation every `eval_every` steps, step 0 (the SFT model)
     included, keeping the best state by the rule of `rl_selection.improves` (a margin and a paired
     z over the SFT model); each validation's per-user target ranks go to WORKDIR/rl/trace.jsonl
     (with `config.rl.trace_test`, the test split's too: `python -m gream_jax.eval.rl_trace`);
  4. exports the best-by-validation parameters to WORKDIR/rl/final. If no RL step beat the SFT
     model on validation, rl/final holds the SFT parameters and the summary says so. Their final
     valid / test evaluation (in `select_mode`) also writes WORKDIR/rl/per_user_{split}_{mode}.jsonl,
     the eval stage's per-user rows, for `python -m gream_jax.eval.paired`.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging

from gream_jax import mesh as mesh_lib
from gream_jax.train.rl_selection import improves, paired_gain
from gream_jax.train.srpo_trainer import SrpoTrainer
from gream_jax.utils.io import read_jsonl, write_json, write_jsonl
from gream_jax.utils.logging import Progress, SummaryWriter


def rows_up_to(path: str, step: int, what: str) -> list[dict]:
    """The JSONL rows of `path` (none if it does not exist) logged at or before `step`: what a
    resumed run keeps of the rows its interrupted run wrote after its last checkpoint."""
    if not os.path.exists(path):
        return []
    return [row for _, (row_step, row) in read_jsonl(path, lambda r: (int(r["step"]), r), what) if row_step <= step]


class RlInputs(NamedTuple):
    """What the rl stage reads from WORKDIR: the prepared data and split, the SIDs, and the model
    it starts from (`config.rl.init_from`) placed on the mesh."""
    data: Any
    split: Any
    sids: Any
    model_cfg: Any
    params: Any
    tokenizer: Any
    meta: dict
    mesh: Any
    rules: Any


def load_inputs(config, workdir) -> RlInputs:
    from gream_jax.data.prepare import load_prepared
    from gream_jax.index.sid import SemanticIds
    from gream_jax.model.store import load_model
    data, split = load_prepared(workdir)
    sids = SemanticIds.load(os.path.join(workdir, "index"), n_items=len(data.item_ids))
    mesh = mesh_lib.make_mesh(config.mesh)
    rules = mesh_lib.rules_from_config(config.mesh)
    init_dir = os.path.join(workdir, config.rl.init_from)
    if not os.path.isdir(init_dir):
        raise FileNotFoundError(f"{init_dir}: no model to start RL from (config.rl.init_from="
                                f"{config.rl.init_from!r}); run the sft stage first")
    model_cfg, params, tokenizer, meta = load_model(init_dir, mesh, rules)
    from gream_jax.infer.recommender import check_sid_softmax
    check_sid_softmax(config, meta, init_dir)
    return RlInputs(data, split, sids, model_cfg, params, tokenizer, meta, mesh, rules)


def validation_users(config, n_users: int, select_mode: str) -> np.ndarray | None:
    """The validation users RL selects on (None = all). Direct mode: `rl.eval_users`, else
    `train.eval_users` (SFT's subset rule). Reasoning mode, which samples a chain per user:
    `rl.eval_users`, else the eval stage's own Reasoning-mode users (`eval.reasoning_users`)."""
    rl = config.rl
    if select_mode == "reasoning" and not int(rl.eval_users):
        from gream_jax.eval.stage import reasoning_users
        users = reasoning_users(n_users, config)
        return None if len(users) == n_users else users
    from gream_jax.train.sft_validation import seeded_users
    return seeded_users(config, n_users, int(rl.eval_users) or int(config.train.eval_users))


def run_rl(config, workdir: str) -> dict:
    from gream_jax.train.checkpoint import Checkpointer
    from gream_jax.train.sft_stage import export_model
    from gream_jax.train.sft_validation import VALIDATORS
    t_start = time.perf_counter()
    rl = config.rl
    stage_dir = os.path.join(workdir, "rl")
    os.makedirs(stage_dir, exist_ok=True)
    if not rl.enabled:
        logging.info("[rl] config.rl.enabled=False: skipped (eval uses sft/final)")
        return {"skipped": True}
    data, split, sids, model_cfg, params, tokenizer, init_meta, mesh, rules = load_inputs(config, workdir)
    trainer = SrpoTrainer(config, model_cfg, params, tokenizer, sids, split, mesh, rules)
    del params
    select_mode = rl.select_mode or rl.mode
    validator = VALIDATORS[select_mode](model_cfg, tokenizer, sids, config, mesh)
    users = validation_users(config, split.n_users, select_mode)
    metric = rl.select_metric
    ckpt = Checkpointer(stage_dir, int(rl.keep_checkpoints))
    metrics_path = os.path.join(stage_dir, "metrics.jsonl")
    writer = SummaryWriter(os.path.join(stage_dir, "tb"))
    rows: list[dict] = []
    trace_path = os.path.join(stage_dir, "trace.jsonl")
    user_ids = (np.arange(split.n_users) if users is None else np.asarray(users)).tolist()   # the trace's users
    trace: list[dict] = []
    meta = {"step": 0, "pool": trainer.pool.get_state(), "best": None, "best_step": None, "elapsed_s": 0.0,
            "rng": np.asarray(trainer.rng).tolist(), "sft_valid": None, "sft_valid_ranks": None}
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(trainer.state())
        trainer.set_state(state)
        trainer.step = int(meta["step"])
        trainer.pool.set_state(meta["pool"])
        trainer.rng = jax.numpy.asarray(np.asarray(meta["rng"], np.uint32))
        rows = rows_up_to(metrics_path, trainer.step, "an rl metrics row")
        trace = rows_up_to(trace_path, trainer.step, "an rl trace row")
        logging.info("[rl] resumed at step %d", trainer.step)
    best, best_step, sft_valid = meta["best"], meta["best_step"], meta.get("sft_valid")
    sft_ranks = None if meta.get("sft_valid_ranks") is None else np.asarray(meta["sft_valid_ranks"])
    if best is not None and sft_ranks is None and float(rl.select_min_z) > 0:
        raise ValueError(f"{stage_dir}: its checkpoint predates the paired selection (no SFT validation ranks), "
                         f"so config.rl.select_min_z={rl.select_min_z} cannot be applied; resume with "
                         "--config.rl.select_min_z=0 or start the rl stage in a fresh workdir")
    elapsed_before, run_start = float(meta["elapsed_s"]), time.perf_counter()

    def current_meta():
        return {"step": trainer.step, "pool": trainer.pool.get_state(), "best": best, "best_step": best_step,
                "elapsed_s": elapsed_before + time.perf_counter() - run_start,
                "rng": np.asarray(trainer.rng).tolist(), "sft_valid": sft_valid,
                "sft_valid_ranks": None if sft_ranks is None else sft_ranks.tolist()}

    def validate():
        nonlocal best, best_step, sft_ranks
        tv = time.perf_counter()
        figures, ranks = validator.evaluate_ranks(trainer.params, split, "valid", users)
        if best is None:
            sft_ranks = ranks                 # step 0: the SFT model every step is paired with
        # (None only when resuming a checkpoint written before the paired selection existed.)
        gain, se, z = paired_gain(ranks, sft_ranks, metric) if sft_ranks is not None else (math.nan,) * 3
        improved = improves(figures[metric], best, float(rl.select_min_gain), z, float(rl.select_min_z))
        if improved:
            best, best_step = figures[metric], trainer.step
            ckpt.save_best(trainer.step, trainer.state(), current_meta())
        logging.info("[rl] step %d valid %s, %s %+.4f (s.e. %.4f) over the SFT model (%.1fs)%s", trainer.step,
                     {k: round(v, 4) for k, v in figures.items()}, metric, gain, se,
                     time.perf_counter() - tv, " *best*" if improved else "")
        paired = {k: v if math.isfinite(v) else None       # +-inf z: every user moved alike; nan: no SFT ranks
                  for k, v in (("valid/paired_gain", gain), ("valid/paired_se", se), ("valid/paired_z", z))}
        writer.scalars(trainer.step, {**{f"valid/{k}": v for k, v in figures.items()},
                                      **{k: v for k, v in paired.items() if v is not None}})
        rows.append({"step": trainer.step, **{f"valid/{k}": v for k, v in figures.items()}, **paired})
        trace.append({"step": trainer.step, "split": "valid", "users": user_ids, "ranks": ranks.tolist()})
        if rl.trace_test:                     # diagnostics only: never read by the selection above
            test_figures, test_ranks = validator.evaluate_ranks(trainer.params, split, "test", users)
            writer.scalars(trainer.step, {f"trace_test/{k}": v for k, v in test_figures.items()})
            trace.append({"step": trainer.step, "split": "test", "users": user_ids, "ranks": test_ranks.tolist()})
        write_jsonl(trace_path, trace)
        return figures

    if best is None:
        sft_valid = validate()            # step 0 = the SFT model: RL must beat it to be exported
    total = int(rl.steps)
    progress = Progress("rl", total=total - trainer.step, unit="steps", every_s=15.0)
    stopped_early = False
    while trainer.step < total:
        m = trainer.train_step()
        done = trainer.step
        writer.scalars(done, {f"train/{k}": v for k, v in m.items()})
        rows.append({"step": done, **{k: round(float(v), 6) for k, v in m.items()}})
        progress.update(1, extra=(f"reward {m['reward_mean']:.3f} hit {m['exact_hit_rate']:.3f} "
                                  f"zv {m['zero_variance_share']:.2f} kl {m.get('kl', 0):.2e} "
                                  f"clip {m.get('clip_frac', 0):.3f} ent {m.get('entropy', 0):.3f} "
                                  f"{m['rollout_tokens_per_s']:,.0f} rollout tok/s"))
        if rl.eval_every and done % int(rl.eval_every) == 0 and done != total:
            validate()
        if rl.checkpoint_every and done % int(rl.checkpoint_every) == 0 and done != total:
            ckpt.save(done, trainer.state(), current_meta())
            write_jsonl(metrics_path, rows)
        if rl.time_budget_s and elapsed_before + time.perf_counter() - run_start > float(rl.time_budget_s):
            logging.info("[rl] config.rl.time_budget_s=%s reached at step %d of %d", rl.time_budget_s, done, total)
            stopped_early = True
            break
    if trainer.step > 0 and (not rows or "valid/" + metric not in rows[-1]):
        validate()
    if ckpt.latest_step() != trainer.step:   # (a time-budget stop can land on a checkpoint step)
        ckpt.save(trainer.step, trainer.state(), current_meta(), force=True)
    write_jsonl(metrics_path, rows)
    ckpt.wait()
    train_s = elapsed_before + time.perf_counter() - run_start
    best_state, best_meta = ckpt.restore(trainer.state(), best=True)
    final_users = users if select_mode == "reasoning" else None   # Direct: every user
    # Per-user rows as the eval stage writes them (same model, same chain draws: the same figures),
    # so `eval.paired` compares RL with the SFT model without evaluating this one again.
    valid, test = (validator.evaluate(best_state["params"], split, which, final_users, data=data,
                                      per_user_path=os.path.join(stage_dir, f"per_user_{which}_{select_mode}.jsonl"))
                   for which in ("valid", "test"))
    summary = {"objective": rl.objective, "mode": rl.mode, "select_mode": select_mode,
               "select_users": split.n_users if final_users is None else len(final_users),
               "seed": int(config.seed), "steps": trainer.step,
               "stopped_early": stopped_early, "train_seconds": round(train_s, 1),
               "best_step": int(best_meta["step"]), "sft_selected": int(best_meta["step"]) == 0,
               "select_metric": metric, "select_min_gain": float(rl.select_min_gain),
               "select_min_z": float(rl.select_min_z), "valid": valid, "test": test,
               "sft_valid_subset": sft_valid}
    export_model(os.path.join(stage_dir, "final"), best_state["params"], model_cfg, tokenizer,
            {"stage": "rl", "step": summary["best_step"], "objective": rl.objective, "valid": valid,
             "sid_softmax": str(config.model.sid_softmax),
             # RL leaves the SFT model's next-item head in place: carry its training weight on.
             "next_item_weight": float(init_meta.get("next_item_weight", 0.0))})
    ckpt.close()
    writer.close()
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(os.path.join(stage_dir, "summary.json"), summary)
    logging.info("[rl] done: %s", summary)
    return summary
