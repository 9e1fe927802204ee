"""Does a Reasoning-mode chain say what the model then recommends? Checks of step 4 against the answer.

A chain's step 4 names the target's semantic group (its first SID code; `tasks.reasoning.chain_text`).
In training that group is always right and the answer always lies in it; a sampled chain is only
interpretable if the same holds at inference: the group it names should be the one its answer comes
from, and should be right more often than chance. Ranking metrics alone do not show this (docs/results.md
"Session 15": on four datasets the named group was at chance level and the answers ignored it).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def chain_group_metrics(texts: Sequence[str], top_items: np.ndarray, targets: np.ndarray,
                        first_codes: np.ndarray, parse: Callable[[str], int | None]) -> dict:
    """texts [n] (one chain per user), top_items [n, K] ranked items (-1 = empty slot), targets [n]
    item ids, first_codes [n_items] each item's first SID code; parse(text) -> named group or None.

    Returns shares over users: `chain_names_group` (step 4 names a group), and over those users
    `chain_group_correct` (it is the target's group), `answer_in_chain_group` (the top-ranked item is
    in it), `top10_in_chain_group` (mean share of the top 10 in it); `chance_group_correct` is the
    same rate for a group drawn in proportion to the targets' groups (sum of squared group shares),
    the level a chain that carries no information reaches.
    """
    targets = np.asarray(targets, np.int64)
    top_items = np.asarray(top_items, np.int64)
    first_codes = np.asarray(first_codes, np.int64)
    if not (len(texts) == len(targets) == len(top_items)):
        raise ValueError(f"chain_group_metrics: {len(texts)} chains, {len(targets)} targets and "
                         f"{len(top_items)} ranked lists must be one per user")
    named = np.asarray([(-1 if g is None else g) for g in map(parse, texts)], np.int64)
    has = named >= 0
    tgt_group = first_codes[targets]
    k = min(10, top_items.shape[1])
    top_groups = np.where(top_items[:, :k] >= 0, first_codes[np.maximum(top_items[:, :k], 0)], -2)
    _, counts = np.unique(tgt_group, return_counts=True)
    out = {"chain_names_group": float(has.mean()) if len(has) else 0.0,
           "chance_group_correct": float(np.sum((counts / max(len(tgt_group), 1)) ** 2))}
    if has.any():
        out["chain_group_correct"] = float(np.mean(named[has] == tgt_group[has]))
        out["answer_in_chain_group"] = float(np.mean(top_groups[has, 0] == named[has]))
        out[f"top{k}_in_chain_group"] = float(np.mean(top_groups[has] == named[has, None]))
    return out


def chain_checks_markdown(results: dict) -> str:
    """A table of the Reasoning-mode chain checks per split for `eval/results.md` ("" when no split
    has them). results: {split: {mode: metrics}} as the eval stage returns them."""
    rows = []
    for which in sorted(results):
        m = results[which].get("reasoning", {})
        if "chain_names_group" not in m:
            continue
        top = next((k for k in m if k.startswith("top") and k.endswith("_in_chain_group")), None)
        cell = lambda key: f"{m[key]:.3f}" if key in m else "-"          # noqa: E731
        rows.append(f"| {which} | {cell('chain_names_group')} | {cell('chain_group_correct')} "
                    f"({m['chance_group_correct']:.3f}) | {cell('answer_in_chain_group')} | "
                    f"{cell(top) if top else '-'} | {cell('answered_rate')} |")
    if not rows:
        return ""
    return ("\nReasoning chains, Step 4 against the answer (gream_jax/eval/chain_checks.py): share of chains "
            "naming a group; of those, share whose group is the target's (a draw from the targets' group "
            "distribution in brackets), whose top answer and top 10 come from it; chains that wrote "
            "`<answer>` within the budget.\n\n"
            "| split | names a group | group right (chance) | top answer in it | top 10 in it | answered |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
