"""Ranking metrics for leave-one-out evaluation (one target per user), pure numpy.

`ranked [n_users, K]` holds item indices best first, -1 for empty slots; `targets [n_users]`.
With one target, Recall@K = Hit@K and NDCG@K = 1 / log2(rank + 2) for the 0-based rank of the
target if it is within the top K (the ideal DCG is 1). These are the definitions RecBole uses for
this protocol (docs: ../shared/reference/baselines.md).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)


def _check(ranked: np.ndarray, targets: np.ndarray, k: int) -> None:
    if ranked.ndim != 2 or targets.shape != (ranked.shape[0],):
        raise ValueError(f"ranked {ranked.shape} and targets {targets.shape}: expected [n, K] and [n]")
    if k < 1:
        raise ValueError(f"k={k}: must be >= 1")
    if k > ranked.shape[1]:
        raise ValueError(f"k={k} exceeds the {ranked.shape[1]} ranked items per user")


def target_rank(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in its list, or -1 if absent. [n]"""
    hit = (ranked == targets[:, None]) & (ranked >= 0)
    return np.where(hit.any(1), hit.argmax(1), -1)


def gains_at_k(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based target ranks (-1 = absent) -> per-user hit@k and NDCG@k, each [n] float64."""
    rank = np.asarray(rank)
    inside = (rank >= 0) & (rank < k)
    return inside.astype(np.float64), np.where(inside, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)


def recall_at_k(ranked, targets, k: int) -> float:
    ranked, targets = np.asarray(ranked), np.asarray(targets)
    _check(ranked, targets, k)
    hit, _ = gains_at_k(target_rank(ranked[:, :k], targets), k)
    return float(np.mean(hit)) if len(targets) else 0.0


def ndcg_at_k(ranked, targets, k: int) -> float:
    ranked, targets = np.asarray(ranked), np.asarray(targets)
    _check(ranked, targets, k)
    _, gain = gains_at_k(target_rank(ranked[:, :k], targets), k)
    return float(np.mean(gain)) if len(targets) else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(correct: np.ndarray, k: int) -> float:
    """correct [n_users, n_samples] bool (sample j's answer was the target) -> mean pass@k."""
    correct = np.asarray(correct, dtype=bool)
    n = correct.shape[1]
    return float(np.mean([pass_at_k(n, int(c), k) for c in correct.sum(1)])) if len(correct) else 0.0


def coverage(ranked, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k."""
    top = np.asarray(ranked)[:, :k]
    return float(np.unique(top[top >= 0]).size / n_items)


def popularity_bias(ranked, item_counts, k: int, head_share: float = 0.2) -> dict:
    """How much the lists lean on popular items.

    item_counts [n_items]: training interactions per item. Returns
      `avg_popularity@k`: mean training count of recommended items (ARP);
      `head_ratio@k`: share of recommended slots taken by the `head_share` most popular items.
    """
    top = np.asarray(ranked)[:, :k]
    counts = np.asarray(item_counts, dtype=np.float64)
    rec = top[top >= 0]
    if rec.size == 0:
        return {f"avg_popularity@{k}": 0.0, f"head_ratio@{k}": 0.0}
    n_head = max(1, int(round(head_share * len(counts))))
    head = np.zeros(len(counts), bool)
    head[np.argsort(-counts, kind="stable")[:n_head]] = True
    return {f"avg_popularity@{k}": float(counts[rec].mean()), f"head_ratio@{k}": float(head[rec].mean())}


def history_share(ranked, histories, k: int) -> float:
    """Share of top-k slots taken by items of the user's own input history `[n_users]` lists.

    Nothing is excluded at evaluation (baselines.md), so on data where users never return to an
    item (MovieLens) each such slot is a wasted one; a diagnostic, not a ranking metric."""
    top = np.asarray(ranked)[:, :k]
    if len(histories) != len(top):
        raise ValueError(f"history_share: {len(histories)} histories for {len(top)} ranked lists")
    held = [np.isin(row[row >= 0], np.asarray(h)).sum() for row, h in zip(top, histories)]
    slots = int((top >= 0).sum())
    return float(sum(held) / slots) if slots else 0.0


def ranking_metrics(ranked, targets, ks=DEFAULT_KS, n_items: int | None = None,
                    item_counts=None) -> dict:
    """All list metrics for one (split, mode), keys lower-case `recall@K`, `ndcg@K`, ...

    K values above the list length are skipped (a list of 10 has no recall@20).
    """
    ranked, targets = np.asarray(ranked), np.asarray(targets)
    out = {}
    for k in ks:
        if k <= ranked.shape[1]:
            out[f"recall@{k}"] = recall_at_k(ranked, targets, k)
            out[f"ndcg@{k}"] = ndcg_at_k(ranked, targets, k)
    k_max = max(k for k in ks if k <= ranked.shape[1])
    if n_items is not None:
        out[f"coverage@{k_max}"] = coverage(ranked, n_items, k_max)
    if item_counts is not None:
        out.update(popularity_bias(ranked, item_counts, k_max))
    return out
