"""The `eval` stage: Direct and Reasoning recommendation on the valid and test targets.

Loads the final model (`WORKDIR/rl/final` if RL ran, else `WORKDIR/sft/final`, or
`config.eval.checkpoint`), the SID artifact and its trie, and the prepared split. Every user is
ranked in Direct mode (full ranking over all items, nothing excluded: the protocol of
../shared/reference/baselines.md). Reasoning mode writes a chain per sample before its answer,
so it is far slower; it runs on the first `config.eval.reasoning_users` users of a fixed
seeded permutation (0 = all), and the table says so.

Writes WORKDIR/eval/per_user_{split}_{mode}.jsonl, WORKDIR/eval/results.md (printed too),
WORKDIR/results.json (`{"test": {"direct": {"recall@10": ...}, "reasoning": {...}}, "valid": ...}`),
with config.eval.item_head_weights also WORKDIR/eval/item_head_weights.{md,json} (`head_weight`),
WORKDIR/eval/training_curves.png (from sft/rl metrics.jsonl when present) and TensorBoard scalars
under WORKDIR/eval/tb.
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import logging

from gream_jax import mesh as mesh_lib
from gream_jax.eval import head_weight
from gream_jax.eval.chain_checks import chain_checks_markdown, chain_group_metrics
from gream_jax.eval import metrics as metrics_lib
from gream_jax.eval import report
from gream_jax.index.trie import Trie, build_trie
from gream_jax.infer import batching, decoder
from gream_jax.infer.recommender import (check_sid_softmax, device_trie, direct_candidates, rank_candidates,
                                         reasoning_spec, recommend_direct, recommend_reasoning, renormalise)
from gream_jax.tasks.reasoning import named_group
from gream_jax.utils import io
from gream_jax.utils.logging import SummaryWriter


def model_directory(config, workdir: str) -> str:
    if config.eval.checkpoint:
        return config.eval.checkpoint
    for stage in ("rl", "sft"):
        path = os.path.join(workdir, stage, "final")
        if os.path.exists(os.path.join(path, "model_config.json")):
            return path
    raise FileNotFoundError(f"{workdir}/rl/final and {workdir}/sft/final: no trained model found; run "
                            "--config.stage=sft (and rl) with this --workdir, or set config.eval.checkpoint")


def load_trie(index_dir: str, semantic_ids) -> Trie:
    """WORKDIR/index/trie.npz if it matches the SIDs, else rebuilt from them (cheap)."""
    path = os.path.join(index_dir, "trie.npz")
    if os.path.exists(path):
        trie = Trie.load(path)
        ok = (trie.n_items == semantic_ids.n_items
              and np.array_equal(trie.node_depth[trie.item_leaf], semantic_ids.lengths))
        if ok:
            return trie
        logging.warning("%s does not match %s/sids.npz; rebuilding the trie", path, index_dir)
    return build_trie(semantic_ids)


def reasoning_users(n_users: int, config) -> np.ndarray:
    """The users evaluated in Reasoning mode: a seeded permutation's first N, in index order."""
    n = int(config.eval.reasoning_users)
    if n == 0 or n >= n_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(int(config.seed)).permutation(n_users)[:n])


def check_memory(config, model_cfg, tokenizer, sids, trie, split, mesh) -> None:
    """Fails at start-up (naming the field) when even one user per device cannot be decoded.

    Uses the real prompt widths of the test split (its histories are the longer ones).
    """
    from gream_jax.tasks.prompts import direct_prompt_ids, reasoning_prompt_ids
    ev = config.eval
    histories = [split.history("test", u) for u in range(split.n_users)]
    if "direct" in ev.modes:
        prompts = [direct_prompt_ids(tokenizer, sids, h, config) for h in histories]
        width = batching.prompt_width(prompts, ev.prompt_bucket)
        batching.resolve_batch(ev, model_cfg, decoder.direct_cache_len(width, trie), ev.beam_size, mesh)
    if "reasoning" in ev.modes:
        spec = reasoning_spec(tokenizer, config)
        users = reasoning_users(split.n_users, config)
        prompts = [reasoning_prompt_ids(tokenizer, sids, histories[u], config) for u in users]
        width = batching.prompt_width(prompts, ev.prompt_bucket)
        batching.resolve_batch(ev, model_cfg, decoder.reasoning_cache_len(width, spec, trie),
                               ev.beam_size, mesh, rows_per_user=spec.num_samples)


def _mode_metrics(ranked, targets, config, n_items, item_counts, histories) -> dict:
    ev = config.eval
    out = metrics_lib.ranking_metrics(ranked, targets, tuple(ev.ks), n_items=n_items)
    k_max = max(k for k in ev.ks if k <= ranked.shape[1])
    out.update(metrics_lib.popularity_bias(ranked, item_counts, k_max, float(ev.head_share)))
    k_hist = 10 if ranked.shape[1] >= 10 else k_max
    out[f"history_share@{k_hist}"] = metrics_lib.history_share(ranked, histories, k_hist)
    return out


def _rank_direct(which, histories, params, model_cfg, tokenizer, sids, trie, config, mesh, choice):
    """Direct mode's top-K for one split and the seconds it took: at config.eval.item_head_weight,
    or, with a weight chosen on validation (`head_weight.HeadWeightChoice`), at that weight."""
    t0 = time.perf_counter()
    if choice is None:
        ranked = recommend_direct(params, model_cfg, tokenizer, sids, trie, histories, config, mesh,
                                  name=f"{which}/direct")
        return ranked, time.perf_counter() - t0
    if which == "valid":
        candidates, seconds = choice.valid_candidates, choice.valid_seconds
    else:
        candidates = direct_candidates(params, model_cfg, tokenizer, sids, trie, histories, config, mesh,
                                       name=f"{which}/direct")
        seconds = time.perf_counter() - t0
    return rank_candidates(candidates, choice.weight, int(config.eval.top_k)), seconds


def evaluate_split(which, params, model_cfg, tokenizer, sids, trie, data, split, config, mesh,
                   item_counts, out_dir, choice: head_weight.HeadWeightChoice | None = None) -> dict:
    ev = config.eval
    targets_all = np.asarray(split.targets(which))
    results = {}
    if "direct" in ev.modes:
        users = np.arange(split.n_users)
        histories = [split.history(which, int(u)) for u in users]
        ranked, dt = _rank_direct(which, histories, params, model_cfg, tokenizer, sids, trie, config, mesh,
                                  choice)
        m = _mode_metrics(ranked.items, targets_all, config, data.n_items, item_counts, histories)
        m.update(users=len(users), users_per_s=len(users) / dt)
        if choice is not None:
            m["item_head_weight"] = choice.weight
        results["direct"] = m
        io.write_jsonl(os.path.join(out_dir, f"per_user_{which}_direct.jsonl"),
                       report.ranked_rows(users, histories, targets_all, ranked, data))
    if "reasoning" in ev.modes:
        users = reasoning_users(split.n_users, config)
        histories = [split.history(which, int(u)) for u in users]
        targets = targets_all[users]
        t0 = time.perf_counter()
        ranked = recommend_reasoning(params, model_cfg, tokenizer, sids, trie, histories, config, mesh,
                                     name=f"{which}/reasoning")
        dt = time.perf_counter() - t0
        m = _mode_metrics(ranked.items, targets, config, data.n_items, item_counts, histories)
        correct = ranked.sample_items[:, :, 0] == targets[:, None]
        for k in ev.ks:
            if k <= ev.num_samples:
                m[f"pass@{k}"] = metrics_lib.mean_pass_at_k(correct, k)
        # the first chain of each user against that chain's own beam (the merged list of several
        # chains would pair one chain's Step 4 with other chains' answers)
        m.update(chain_group_metrics([t[0] for t in ranked.texts], ranked.sample_items[:, 0], targets,
                                     np.asarray(sids.codes)[:, 0], named_group))
        m.update(users=len(users), users_per_s=len(users) / dt,
                 answered_rate=float(ranked.answered.mean()),
                 mean_reasoning_tokens=float(ranked.think_tokens.mean()))
        results["reasoning"] = m
        io.write_jsonl(os.path.join(out_dir, f"per_user_{which}_reasoning.jsonl"),
                       report.ranked_rows(users, histories, targets, ranked, data))
    return results


def _rerank_note(config, choice) -> str:
    if choice is not None:
        return (f" (Direct: the beam's items re-ranked by log P + {choice.weight:g} log q, q the next-item "
                f"head, the weight chosen on valid by {choice.metric} from "
                f"{', '.join(f'{w:g}' for w in choice.table)})")
    if float(config.eval.item_head_weight) > 0:
        return (f" (Direct: the beam's items re-ranked by log P + {config.eval.item_head_weight:g} log q, "
                f"q the next-item head)")
    return ""


def run_eval(config, workdir: str) -> dict:
    from gream_jax.data.prepare import load_prepared
    from gream_jax.index.sid import SemanticIds
    from gream_jax.model.store import load_model

    mesh = mesh_lib.make_mesh(config.mesh)
    rules = mesh_lib.rules_from_config(config.mesh)
    model_dir = model_directory(config, workdir)
    data, split = load_prepared(workdir, config)
    sids = SemanticIds.load(os.path.join(workdir, "index"), n_items=data.n_items, item_ids=data.item_ids)
    trie = load_trie(os.path.join(workdir, "index"), sids)
    model_cfg, params, tokenizer, meta = load_model(model_dir, mesh, rules)
    check_sid_softmax(config, meta, model_dir)
    dev_trie = device_trie(trie, tokenizer, sids, mesh, renormalise(config))
    check_memory(config, model_cfg, tokenizer, sids, dev_trie, split, mesh)
    logging.info("eval: model %s (%s), %d users, %d items, beam %d, top-%d", model_dir,
                 meta.get("stage", "?"), split.n_users, data.n_items, config.eval.beam_size, config.eval.top_k)

    item_counts = split.item_counts(data.n_items)
    out_dir = os.path.join(workdir, "eval")
    choice = None
    if config.eval.item_head_weights and "direct" in config.eval.modes:
        choice = head_weight.choose_on_valid(params, model_cfg, tokenizer, sids, dev_trie, split, data.n_items,
                                             config, mesh)
        head_weight.write_choice(out_dir, choice, model_dir, tuple(config.eval.ks), split.n_users)
    results = {}
    for which in ("test", "valid"):
        if which in config.eval.splits:
            results[which] = evaluate_split(which, params, model_cfg, tokenizer, sids, dev_trie, data, split,
                                            config, mesh, item_counts, out_dir, choice)

    notes = {}
    if "reasoning" in config.eval.modes:
        n_r = len(reasoning_users(split.n_users, config))
        notes["reasoning"] = (f"{n_r} of {split.n_users} users (config.eval.reasoning_users="
                              f"{config.eval.reasoning_users}; seeded subset), {config.eval.num_samples} "
                              f"chain(s) per user, temperature {config.eval.temperature}, top-p "
                              f"{config.eval.top_p}, budget {config.eval.reasoning_budget} tokens")
    header = (f"# {config.name}: evaluation of `{os.path.relpath(model_dir, workdir)}`\n\n"
              f"Leave-one-out, full ranking over {data.n_items} items (nothing excluded), "
              f"trie-constrained beam {config.eval.beam_size}, top-{config.eval.top_k}"
              + _rerank_note(config, choice) + "; users/s includes jit compilation.\n\n")
    table = report.results_table(results, tuple(config.eval.ks), notes)
    table += chain_checks_markdown(results)
    if choice is not None:
        table += "\n" + head_weight.sweep_markdown(choice, tuple(config.eval.ks), split.n_users)
    io.write_text(os.path.join(out_dir, "results.md"), header + table)
    io.write_json(os.path.join(workdir, "results.json"), results)
    print(header + table, flush=True)

    writer = SummaryWriter(os.path.join(out_dir, "tb"))
    step = int(meta.get("step", 0) or 0)
    for which, modes in results.items():
        for mode, m in modes.items():
            writer.scalars(step, {f"{which}/{mode}/{k}": v for k, v in m.items()})
    writer.close()
    logs = {s: report.read_metrics_jsonl(os.path.join(workdir, s, "metrics.jsonl")) for s in ("sft", "rl")}
    curves = report.plot_training_curves(logs, os.path.join(out_dir, "training_curves.png"))
    return {"model": model_dir, "results": results, "training_curves": curves}
