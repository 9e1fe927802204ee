"""The `sft` stage: alignment + reasoning SFT under a curriculum, resumable, best-by-validation.

`run_sft(config, workdir)`:
  1. loads WORKDIR/data and WORKDIR/index, builds the model and tokenizer (`build_model`);
  2. builds the alignment and reasoning streams (`sft_data`), checks the SID artifact against the
     tokenizer and that there is something to train on;
  3. runs `config.train.steps` jitted, sharded updates; the curriculum picks each step's stream;
  4. every `log_every` steps writes TensorBoard scalars and a row of WORKDIR/sft/metrics.jsonl and
     logs a progress line with ETA; every `checkpoint_every` an orbax checkpoint (resume: run the
     same command again); every `eval_every` Direct-mode Recall/NDCG@10 on the VALID split, keeping
     the best state;
  5. exports the best-by-validation parameters to WORKDIR/sft/final (`save_model`) and reports the
     valid and test figures of that model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.tasks.curriculum import is_reasoning_step
from gream_jax.train import ema as ema_lib
from gream_jax.train import sft
from gream_jax.train.checkpoint import Checkpointer
from gream_jax.train.sft_data import make_streams
from gream_jax.utils.io import read_json, write_json, write_jsonl
from gream_jax.utils.logging import Progress, SummaryWriter


@dataclasses.dataclass
class SftInputs:
    """Everything the SFT loop needs; `run_sft` loads it from the workdir, tests build it directly."""
    split: Any
    semantic_ids: Any
    items: list
    model_cfg: Any
    params: Any
    tokenizer: Any
    mesh: Any
    rules: Any


def load_inputs(config, workdir) -> SftInputs:
    from gream_jax.data.prepare import load_prepared
    from gream_jax.index.sid import SemanticIds
    from gream_jax.model.builder import build_model
    data, split = load_prepared(workdir)
    sids = SemanticIds.load(os.path.join(workdir, "index"), n_items=len(data.item_ids))
    mesh = mesh_lib.make_mesh(config.mesh)
    rules = mesh_lib.rules_from_config(config.mesh)
    model_cfg, params, tokenizer = build_model(config, workdir, sids, data.items, mesh, rules)
    return SftInputs(split, sids, data.items, model_cfg, params, tokenizer, mesh, rules)


def sft_split(split, holdout: int):
    """The split SFT builds its examples from: each user's training part without its last `holdout`
    items (config.train.holdout_last_targets; at least one item is kept). Validation and test still
    use the full `split`, so held-out items stay in their input histories."""
    if holdout <= 0:
        return split
    return dataclasses.replace(split, train=[seq[:max(1, len(seq) - holdout)] for seq in split.train])


def _trie_loss(config, model_cfg, tokenizer, sids, mesh):
    """(DeviceTrie, outer token ids, per-level token ids or None, next-item objective or None) for
    config.model.sid_softmax = "trie" / "level" (`gream_jax.model.trie_softmax`), else None."""
    mode = str(config.model.sid_softmax)
    if mode == "vocab":
        return None
    from gream_jax.index.trie import build_trie
    from gream_jax.model.tokenizer import sid_token_table
    from gream_jax.model.trie_softmax import outer_token_ids
    host = build_trie(sids)
    table = sid_token_table(tokenizer, sids)
    outer = outer_token_ids(host, table, int(model_cfg.vocab_size))
    levels = None
    if mode == "level":
        sizes = [int(k) for k in sids.level_sizes]
        levels = tuple(np.asarray(table[lvl, :sizes[lvl]], np.int32) for lvl in range(1, len(sizes)))
        logging.info("level softmax: %d outer tokens; inner levels of %s tokens, instead of %d", len(outer),
                     [len(ids) for ids in levels], int(model_cfg.vocab_size))
    else:
        logging.info("trie softmax: %d outer tokens + up to %d siblings per SID token, instead of %d",
                     len(outer), host.max_children, int(model_cfg.vocab_size))
    trie = host.to_device(table, mesh_lib.replicated(mesh), renormalise=True)
    weight = float(config.train.next_item_weight)
    if weight <= 0:
        return trie, outer, levels, None
    from gream_jax.index.sid import require_item_unique_last_level
    require_item_unique_last_level(sids, f"config.train.next_item_weight={weight}")
    sizes = [int(k) for k in sids.level_sizes]
    next_item = (np.asarray(table[0, :sizes[0]], np.int32), np.asarray(table[-1, :sizes[-1]], np.int32),
                 len(sizes), weight)
    logging.info("next-item objective: weight %g over %d items at each SID's first code", weight, sizes[-1])
    return trie, outer, levels, next_item


def export_model(directory: str, params, model_cfg, tokenizer, meta: dict) -> None:
    """save_model into a temporary sibling, then rename: `final/` is always complete or absent."""
    from gream_jax.model.store import save_model
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp, params, model_cfg, tokenizer, meta)
    old = directory + ".old"
    if os.path.exists(directory):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def run_sft(config, workdir: str) -> dict:
    t0 = time.perf_counter()
    stage_dir = os.path.join(workdir, "sft")
    inputs = load_inputs(config, workdir)
    summary, _, best_state, best_meta = train(config, stage_dir, inputs)
    export_model(os.path.join(stage_dir, "final"), ema_lib.eval_params(best_state), inputs.model_cfg, inputs.tokenizer,
            export_meta(config, best_meta["step"], summary["valid"]))
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(os.path.join(stage_dir, "summary.json"), summary)
    logging.info("[sft] done: %s", summary)
    return summary


def initial_state(config, params, mesh):
    """(optimizer, the SFT train state before update 1): what `train` starts from and the layout
    every SFT checkpoint is restored into (`sft_export`), the EMA copy included when configured."""
    optimizer = sft.make_optimizer(config.train)
    state = sft.init_state(params, optimizer, int(config.seed), mesh)
    if float(config.train.ema_decay) > 0:
        state = ema_lib.add_ema(state)
    return optimizer, state


def dropped_examples_warnings(stats: dict, train_cfg, max_share: float = 0.05) -> list[str]:
    """Warnings for SFT streams that lose more than `max_share` of their examples to the row length.

    An example whose response alone is longer than its row is skipped (`batching.fit_to_length`):
    counted in the summary, but easy to miss. Industrial's reasoning chains (median response 524
    tokens) lost 59% of them at reasoning_seq_len 512 for two sessions, Beauty's 36%."""
    out = []
    for stream, field in (("alignment", "seq_len"), ("reasoning", "reasoning_seq_len")):
        st = stats.get(stream)
        if not st:
            continue
        dropped, kept = int(st.get("dropped", 0)), int(st.get("examples", 0))
        if dropped and dropped > max_share * (dropped + kept):
            out.append(f"SFT {stream} stream: {dropped} of {dropped + kept} examples "
                       f"({dropped / (dropped + kept):.0%}) are longer than config.train.{field}="
                       f"{train_cfg[field]} and are not trained on; raise config.train.{field} (and "
                       f"config.model.max_position_embeddings, and for reasoning config.eval.reasoning_budget "
                       f"to match the chains)")
    return out


def export_meta(config, step: int, valid: dict) -> dict:
    """meta.json of an exported SFT model: what the eval and rl stages check against the config."""
    return {"stage": "sft", "step": int(step), "valid": valid, "sid_softmax": str(config.model.sid_softmax),
            "next_item_weight": float(config.train.next_item_weight)}


def train(config, stage_dir: str, inputs: SftInputs, evaluate_test: bool = True):
    """The resumable SFT loop. Returns (summary, final state, best state, best meta)."""
    tr = config.train
    os.makedirs(stage_dir, exist_ok=True)
    split, sids, mesh, rules = inputs.split, inputs.semantic_ids, inputs.mesh, inputs.rules
    model_cfg, params, tokenizer = inputs.model_cfg, inputs.params, inputs.tokenizer
    max_pos = int(getattr(model_cfg, "max_position_embeddings", 0) or 0)
    for field in ("seq_len", "reasoning_seq_len"):
        if max_pos and int(tr[field]) > max_pos:
            raise ValueError(f"config.train.{field}={tr[field]} exceeds the model's maximum length "
                             f"(max_position_embeddings={max_pos}); lower it (longer examples are "
                             f"truncated from the left and counted in the SFT summary)")
    from gream_jax.infer.recommender import uses_item_head
    if uses_item_head(config) and float(tr.next_item_weight) <= 0:
        raise ValueError(f"config.eval.item_head_weight={config.eval.item_head_weight}, item_head_weights="
                         f"{tuple(config.eval.item_head_weights)}: validation and the eval stage would re-rank with "
                         f"a next-item head this run does not train; set config.train.next_item_weight > 0 or "
                         f"turn the re-ranking off (item_head_weight=0, item_head_weights=())")
    streams = make_streams(config, sft_split(split, int(tr.holdout_last_targets)), sids, inputs.items, tokenizer)
    streams.alignment.batch(0)  # builds epoch 0 now: bad input fails before any compile
    if streams.reasoning is not None:
        streams.reasoning.batch(0)
    logging.info("SFT data (epoch 0): %s", streams.stats)
    for message in dropped_examples_warnings(streams.stats, tr):
        logging.warning("%s", message)

    from gream_jax.train.sft_validation import DirectValidator, seeded_users
    validator = DirectValidator(model_cfg, tokenizer, sids, config, mesh)
    eval_users = seeded_users(config, split.n_users, int(tr.eval_users))
    final_users = seeded_users(config, split.n_users, int(tr.final_eval_users))

    optimizer, state = initial_state(config, params, mesh)
    schedule = sft.learning_rate_schedule(tr)
    dropout_rate = float(tr.dropout_rate)
    apply_fn = lambda p, tok, mask, pos, seg, return_hidden=False, dropout_rng=None: api.forward(
        p, model_cfg, tok, mask, pos, seg, return_hidden=return_hidden,
        dropout_rate=dropout_rate if dropout_rng is not None else 0.0, dropout_rng=dropout_rng)
    del params
    step_core = sft.make_train_step(apply_fn, optimizer, schedule, tr.compute_dtype,
                                    trie_loss=_trie_loss(config, model_cfg, tokenizer, sids, mesh),
                                    loss_chunk_tokens=int(tr.loss_chunk_tokens),
                                    head_fn=lambda p: api.lm_head_rows(p, model_cfg),
                                    causal_fast_path=bool(tr.causal_fast_path),
                                    dropout=dropout_rate > 0,
                                    repeat_unlikelihood=float(tr.repeat_unlikelihood))
    if float(tr.ema_decay) > 0:
        step_core = ema_lib.with_ema(step_core, float(tr.ema_decay))
    step_fn = sft.jit_train_step(step_core, state, mesh, rules)
    ckpt = Checkpointer(stage_dir, int(tr.keep_checkpoints), bool(tr.async_checkpoints))
    metrics_path = os.path.join(stage_dir, "metrics.jsonl")
    rows: list[dict] = []
    meta = {"alignment": {"consumed": 0}, "reasoning": {"consumed": 0}, "reasoning_steps": 0,
            "best": None, "best_step": None, "elapsed_s": 0.0}
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        streams.alignment.set_state(meta["alignment"])
        if streams.reasoning is not None:
            streams.reasoning.set_state(meta["reasoning"])
        if os.path.exists(metrics_path):
            with open(metrics_path, encoding="utf-8") as f:
                rows = [r for r in map(json.loads, f) if r["step"] <= int(state["step"])]
        logging.info("resumed SFT at step %d from %s", int(state["step"]), ckpt.latest.directory)

    total = int(tr.steps)
    start_step = int(state["step"])
    writer = SummaryWriter(os.path.join(stage_dir, "tb"))
    progress = Progress("sft", total=total - start_step, unit="steps", every_s=15.0)
    tokens_since, time_since = 0, time.perf_counter()
    run_start, elapsed_before = time.perf_counter(), float(meta.get("elapsed_s", 0.0))
    reasoning_steps = int(meta["reasoning_steps"])
    best, best_step = meta["best"], meta["best_step"]
    ratio, schedule_name = float(config.tasks.reasoning_ratio), config.tasks.curriculum
    last_eval = None
    metric = str(tr.select_metric)
    if best is not None and meta.get("select_metric", "recall@10") != metric:
        raise ValueError(f"{stage_dir}: resuming a run that selected by {meta.get('select_metric', 'recall@10')!r} "
                         f"with config.train.select_metric={metric!r}; keep the metric or use a new workdir")

    def current_meta(step):
        return {"alignment": streams.alignment.get_state(),
                "reasoning": streams.reasoning.get_state() if streams.reasoning else {"consumed": 0},
                "reasoning_steps": reasoning_steps, "best": best, "best_step": best_step,
                "select_metric": metric, "elapsed_s": elapsed_before + time.perf_counter() - run_start, "step": step}

    def validate(step):
        nonlocal best, best_step
        tv = time.perf_counter()
        figures = validator.evaluate(ema_lib.eval_params(state), split, "valid", eval_users)
        if "ema" in state and bool(tr.eval_raw):
            raw = validator.evaluate(state["params"], split, "valid", eval_users)
            writer.scalars(step, {f"valid_raw/{k}": v for k, v in raw.items()})
            rows.append({"step": step, **{f"valid_raw/{k}": v for k, v in raw.items()}})
            logging.info("[sft] step %d valid (raw weights) %s", step, {k: round(v, 4) for k, v in raw.items()})
        improved = best is None or figures[metric] > best
        if improved:
            best, best_step = figures[metric], step
            if ckpt.best_step() != step:
                ckpt.save_best(step, state, current_meta(step))
        logging.info("[sft] step %d valid %s (%.1fs)%s", step, {k: round(v, 4) for k, v in figures.items()},
                     time.perf_counter() - tv, " *best*" if improved else "")
        writer.scalars(step, {f"valid/{k}": v for k, v in figures.items()})
        return figures

    step = start_step
    stopped_early = False
    for step in range(start_step, total):
        reasoning = streams.reasoning is not None and is_reasoning_step(step, total, ratio, schedule_name,
                                                                         int(config.seed))
        host = (streams.reasoning if reasoning else streams.alignment).next()
        reasoning_steps += int(reasoning)
        batch = sft.device_batch(host, int(tr.grad_accum), mesh, rules)
        with jax.set_mesh(mesh):
            state, metrics = step_fn(state, batch)
        tokens_since += int((host["segment_ids"] > 0).sum())
        done = step + 1
        if done % int(tr.log_every) == 0 or done == total:
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            m.update(tokens_per_s=tokens_since / max(now - time_since, 1e-9),
                     reasoning_share=reasoning_steps / done, epoch=streams.alignment.epoch)
            tokens_since, time_since = 0, now
            writer.scalars(done, {f"train/{k}": v for k, v in m.items()})
            rows.append({"step": done, **{k: round(v, 6) for k, v in m.items()}})
            progress.update(int(tr.log_every) if done % int(tr.log_every) == 0 else done % int(tr.log_every),
                            extra=f"loss {m['loss']:.4f} acc {m['token_accuracy']:.3f} lr {m['lr']:.2e} "
                                  f"{m['tokens_per_s']:,.0f} tok/s reasoning {m['reasoning_share']:.3f}")
        if int(tr.eval_every) and done % int(tr.eval_every) == 0 and done != total:
            last_eval = (done, validate(done))
            rows.append({"step": done, **{f"valid/{k}": v for k, v in last_eval[1].items()}})
        if int(tr.checkpoint_every) and done % int(tr.checkpoint_every) == 0 and done != total:
            ckpt.save(done, state, current_meta(done))
            write_jsonl(metrics_path, rows)
        if tr.max_minutes and elapsed_before + time.perf_counter() - run_start > 60 * float(tr.max_minutes):
            logging.info("[sft] config.train.max_minutes=%s reached at step %d of %d", tr.max_minutes, done, total)
            stopped_early = True
            break
    final_step = int(state["step"])
    if last_eval is None or last_eval[0] != final_step:
        figures = validate(final_step)
        rows.append({"step": final_step, **{f"valid/{k}": v for k, v in figures.items()}})
    if ckpt.latest_step() != final_step:
        ckpt.save(final_step, state, current_meta(final_step), force=True)
    write_jsonl(metrics_path, rows)
    ckpt.wait()
    train_s = elapsed_before + time.perf_counter() - run_start

    best_state, best_meta = ckpt.restore(state, best=True)
    best_params = ema_lib.eval_params(best_state)
    valid = validator.evaluate(best_params, split, "valid", final_users)
    test = validator.evaluate(best_params, split, "test", final_users) if evaluate_test else {}
    summary = {"final_eval_users": split.n_users if final_users is None else len(final_users),
               "steps": final_step, "resumed_from": start_step or None, "stopped_early": stopped_early, "train_seconds": round(train_s, 1),
               "best_step": best_meta["step"], "select_metric": metric, "ema_decay": float(tr.ema_decay), "valid": valid, "test": test,
               "reasoning_share": reasoning_steps / max(final_step, 1),
               "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in rows if "tokens_per_s" in r] or [0])),
               "data": streams.stats, "epochs": streams.alignment.epoch + 1}
    ckpt.close()
    writer.close()
    return summary, state, best_state, best_meta


def read_summary(workdir: str) -> dict:
    return read_json(os.path.join(workdir, "sft", "summary.json"))
