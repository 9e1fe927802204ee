"""Evaluation outputs: per-user rows, the results table (Markdown), results.json, training curves.

Pure formatting functions plus thin atomic writers; the eval stage decides what to compute.
"""

from __future__ import annotations

import io as _io
import json
import math
import os

import numpy as np

from gream_jax.utils import io


def user_rows(users, histories, targets, ranked, scores, data, texts=None, extra=None) -> list[dict]:
    """One JSON-ready dict per user: raw ids and titles of history, target and top-K with scores.

    users [n] internal user indices; histories: per-user item-index arrays; ranked/scores [n, K];
    texts: optional per-user list of reasoning chains; extra: optional per-user dicts merged in.
    """
    title = lambda i: data.items[int(i)].title
    rows = []
    for r, u in enumerate(users):
        hits = np.nonzero(ranked[r] == targets[r])[0]
        row = {"user": data.user_ids[int(u)], "user_index": int(u),
               "history": [data.item_ids[int(i)] for i in histories[r]],
               "target": data.item_ids[int(targets[r])], "target_title": title(targets[r]),
               "hit_rank": int(hits[0]) if len(hits) else -1,
               "topk": [{"item": data.item_ids[int(i)], "title": title(i), "score": round(float(s), 5)}
                        for i, s in zip(ranked[r], scores[r]) if i >= 0]}
        if texts is not None:
            row["reasoning"] = texts[r]
        if extra is not None:
            row.update(extra[r])
        rows.append(row)
    return rows


def ranked_rows(users, histories, targets, ranked, data) -> list[dict]:
    """`user_rows` of a recommender result: Direct mode's `Ranked`, or Reasoning mode's
    `ReasoningRanked` with each user's chains and, per chain, its top item, whether the model
    answered within the budget, whether `</think>` was forced and the chain's length. The one row
    format of WORKDIR/eval/per_user_*.jsonl and WORKDIR/rl/per_user_*.jsonl (`eval.paired` reads both)."""
    if not hasattr(ranked, "sample_items"):
        return user_rows(users, histories, targets, ranked.items, ranked.scores, data)
    extra = [{"samples": [{"top1": data.item_ids[int(ranked.sample_items[r, j, 0])]
                           if ranked.sample_items[r, j, 0] >= 0 else None,
                           "answered": bool(ranked.answered[r, j]),
                           "forced_close": bool(ranked.forced_close[r, j]),
                           "reasoning_tokens": int(ranked.think_tokens[r, j])}
                          for j in range(ranked.sample_items.shape[1])]}
             for r in range(len(users))]
    return user_rows(users, histories, targets, ranked.items, ranked.scores, data, texts=ranked.texts,
                     extra=extra)


def results_table(results: dict, ks, notes: dict | None = None) -> str:
    """Markdown table: one row per (split, mode); results[split][mode] = metrics dict."""
    metric_cols = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
    pass_cols = sorted({m for split in results.values() for mode in split.values() for m in mode
                        if m.startswith("pass@")}, key=lambda m: int(m.split("@")[1]))
    extra_cols = sorted({m for split in results.values() for mode in split.values() for m in mode
                         if m.startswith(("coverage@", "head_ratio@", "history_share@"))})
    cols = ["split", "mode", "users"] + metric_cols + pass_cols + extra_cols + ["users/s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for split, modes in results.items():
        for mode, m in modes.items():
            cells = [split, mode + ("*" if notes and mode in notes else ""), str(m.get("users", ""))]
            for c in metric_cols + pass_cols + extra_cols:
                v = m.get(c)
                cells.append("" if v is None else f"{v:.4f}")
            rate = m.get("users_per_s")
            cells.append("" if rate is None else f"{rate:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    for mode, note in (notes or {}).items():
        lines.append(f"\n\\* {mode}: {note}")
    return "\n".join(lines) + "\n"


def read_metrics_jsonl(path: str) -> list[dict]:
    """Rows of a training metrics log (each a dict with "step" and scalars); [] if absent."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError(f"{path}:{lineno}: expected an object with a 'step' field")
            rows.append(row)
    return rows


def curve_series(rows: list[dict]) -> dict[str, tuple[list, list]]:
    """{scalar name: (steps, values)} for every finite numeric field except 'step'."""
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
        for key, v in row.items():
            if key == "step" or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(row["step"])
            values.append(float(v))
    return series


def plot_training_curves(logs: dict[str, list[dict]], path: str, max_panels: int = 12) -> bool:
    """One panel per scalar (SFT and RL side by side). Returns False when there is nothing to plot."""
    series = {f"{stage}/{k}": v for stage, rows in logs.items() for k, v in curve_series(rows).items()}
    if not series:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(series)[:max_panels]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = series[name]
        ax.plot(steps, values, lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    with io.atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
    return True
