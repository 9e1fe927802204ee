"""Choosing Direct mode's re-ranking weight on the valid split (config.eval.item_head_weights).

Direct mode can order the beam's items by log P(item) + w log q(item), q the next-item head
(`beam.rerank_with_item_head`). The best w depends on the model (session 8 chose 2 for a 64-wide
Beauty model by hand from a scratch script); here the eval stage decodes the valid split once,
keeps the beam's items with both scores unfused (`recommender.direct_candidates`), scores every
weight of the sweep on the host, keeps the best by `config.eval.select_metric` and ranks the test
split with that weight only. The choice never sees a test target.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import logging

from gream_jax.eval import metrics as metrics_lib
from gream_jax.infer.recommender import Candidates, direct_candidates, rank_candidates


@dataclasses.dataclass
class HeadWeightChoice:
    weight: float                 # the chosen weight
    metric: str                   # what chose it, e.g. "ndcg@10"
    table: dict                   # {weight: valid metrics at that weight}
    valid_candidates: Candidates  # the valid split's unfused beam, reused by its Direct eval
    valid_seconds: float          # wall time of that decoding pass


def choose_weight(table: dict, metric: str) -> float:
    """The weight whose metrics maximise `metric`; ties go to the weight listed first.

    table: {weight: {metric name: value}} in sweep order."""
    best, best_value = None, -np.inf
    for weight, metrics in table.items():
        if metric not in metrics:
            raise KeyError(f"config.eval.select_metric={metric!r}: not among the computed metrics "
                           f"{sorted(metrics)}")
        if metrics[metric] > best_value:
            best, best_value = weight, metrics[metric]
    if best is None:
        raise ValueError("config.eval.item_head_weights is empty: nothing to choose from")
    return float(best)


def sweep_metrics(candidates: Candidates, targets: np.ndarray, weights, ks, top_k: int, n_items: int) -> dict:
    """{weight: ranking metrics of the candidates fused at that weight} (pure, host side)."""
    return {float(w): metrics_lib.ranking_metrics(rank_candidates(candidates, float(w), top_k).items,
                                                  targets, tuple(ks), n_items=n_items)
            for w in weights}


def choose_on_valid(params, model_cfg, tokenizer, sids, trie, split, n_items, config, mesh) -> HeadWeightChoice:
    """Decodes the valid split once and picks config.eval.item_head_weights' best weight."""
    ev = config.eval
    histories = [split.history("valid", u) for u in range(split.n_users)]
    t0 = time.perf_counter()
    candidates = direct_candidates(params, model_cfg, tokenizer, sids, trie, histories, config, mesh,
                                   name="valid/direct (weight sweep)")
    seconds = time.perf_counter() - t0
    table = sweep_metrics(candidates, np.asarray(split.targets("valid")), ev.item_head_weights, ev.ks,
                          int(ev.top_k), n_items)
    weight = choose_weight(table, str(ev.select_metric))
    logging.info("eval: item-head weight %g chosen on valid by %s (%s)", weight, ev.select_metric,
                 ", ".join(f"{w:g}: {m[ev.select_metric]:.4f}" for w, m in table.items()))
    return HeadWeightChoice(weight=weight, metric=str(ev.select_metric), table=table,
                            valid_candidates=candidates, valid_seconds=seconds)


def sweep_markdown(choice: HeadWeightChoice, ks, users: int) -> str:
    """The sweep as a Markdown table, the chosen weight marked."""
    cols = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
    lines = [f"Direct mode, valid split ({users} users): the beam's items re-ranked by log P + w log q; "
             f"w chosen by {choice.metric}.\n",
             "| w | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for w, m in choice.table.items():
        mark = " (chosen)" if w == choice.weight else ""
        lines.append(f"| {w:g}{mark} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_choice(out_dir: str, choice: HeadWeightChoice, model_dir: str, ks, users: int) -> None:
    """eval/item_head_weights.md (the table) and eval/item_head_weights.json (what `chosen_weight`
    reads), both atomically."""
    from gream_jax.utils import io
    io.write_text(os.path.join(out_dir, "item_head_weights.md"), sweep_markdown(choice, ks, users))
    io.write_json(os.path.join(out_dir, "item_head_weights.json"),
                  {"model": os.path.abspath(model_dir), "metric": choice.metric, "chosen": choice.weight,
                   "valid": [{"weight": w, **m} for w, m in choice.table.items()]})


def chosen_weight(workdir: str, model_dir: str) -> float:
    """The weight the eval stage chose for `model_dir` (WORKDIR/eval/item_head_weights.json), for
    the recommend command; an error naming the file when the eval stage has not chosen one for it."""
    from gream_jax.utils.io import read_json
    path = os.path.join(workdir, "eval", "item_head_weights.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: config.eval.item_head_weights is a sweep chosen on validation by the "
                                "eval stage, which has not run here; run --config.stage=eval first or pass "
                                "\"--config.eval.item_head_weights=()\" with a fixed --config.eval.item_head_weight")
    saved = read_json(path)
    if os.path.abspath(saved.get("model", "")) != os.path.abspath(model_dir):
        raise ValueError(f"{path}: the weight there was chosen for {saved.get('model')!r}, not {model_dir!r}; "
                         "rerun --config.stage=eval on this model")
    return float(saved["chosen"])
