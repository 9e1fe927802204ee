"""Recency-weighted attribute preferences of a history (offline stand-in for the teacher LLM)."""

from __future__ import annotations

import numpy as np


def attribute_scores(history, attributes: list[list[str]], decay: float) -> dict[str, float]:
    """attribute -> sum over history items having it of decay**(steps back from the most recent)."""
    scores: dict[str, float] = {}
    n = len(history)
    for j, item in enumerate(history):
        w = decay ** (n - 1 - j)
        for a in attributes[int(item)]:
            scores[a] = scores.get(a, 0.0) + w
    return scores


def top_attributes(history, attributes, decay: float, k: int = 3) -> list[tuple[str, float]]:
    """The k highest-scoring attributes (ties broken by name, so the result is deterministic)."""
    scores = attribute_scores(history, attributes, decay)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def preference_text(top: list[tuple[str, float]]) -> str:
    if not top:
        return "The history gives no clear attribute preference."
    names = [a for a, _ in top]
    if len(names) == 1:
        return f"The user mostly prefers {names[0]} items."
    return f"The user mostly prefers {', '.join(names[:-1])} and {names[-1]} items."


def recency_weights(n: int, decay: float) -> np.ndarray:
    """[n] weights, most recent = 1."""
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
