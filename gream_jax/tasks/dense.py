"""Dense seqrec: windows of a user's training items written as consecutive SIDs.

Every item after the first in a window is a target (causal LM loss on all its SID tokens), so one
window teaches up to `window - 1` next-item predictions, the way SASRec trains on every position.
The prefix of a window (BOS + the first k items) is exactly the Direct-mode prompt of `prompts.py`.
"""

from __future__ import annotations

import numpy as np

from gream_jax.tasks.tokens import sid_ids


def window_ends(n: int, window: int, stride: int, offset: int) -> list[int]:
    """End positions (exclusive) of the windows over a sequence of length n, latest first.

    Always includes the window ending at n (the most recent items, closest to valid/test) and the
    one ending at min(n, window) (the oldest items); the rest are `stride` apart from `offset`.
    """
    if n < 2:
        return []
    ends = [n]
    e = n - offset if offset > 0 else n - stride
    while e > window:
        ends.append(e)
        e -= stride
    if min(n, window) not in ends:
        ends.append(min(n, window))
    return ends


def dense_windows(train: list[np.ndarray], window: int, stride: int, rng: np.random.Generator
                  ) -> list[tuple[int, np.ndarray]]:
    """(user, items [<= window]) for every window of every training sequence with >= 2 items."""
    stride = stride or max(1, window // 2)
    out = []
    for u, seq in enumerate(train):
        n = len(seq)
        for e in window_ends(n, window, stride, int(rng.integers(stride))):
            out.append((u, np.asarray(seq[max(0, e - window):e], np.int32)))
    return out


def window_tokens(items: np.ndarray, table: np.ndarray, bos: int) -> tuple[list[int], list[int]]:
    """(token ids, target mask): BOS + SIDs; every SID token after the first item is a target."""
    ids, mask = [bos], [0]
    for k, item in enumerate(items):
        toks = sid_ids(table, int(item))
        ids.extend(toks)
        mask.extend([1 if k > 0 else 0] * len(toks))
    return ids, mask


def window_item_ends(items: np.ndarray, table: np.ndarray) -> list[int]:
    """Per token of `window_tokens(items, ...)`: 1 on each item's last SID token, else 0 (the
    repeat-unlikelihood term penalises these tokens of earlier items; meaningful when the last SID
    level is item-unique, `config.index.collision="item_token"`)."""
    ends = [0]
    for item in items:
        n = len(sid_ids(table, int(item)))
        ends.extend([0] * (n - 1) + [1])
    return ends
