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


def with_repeat_negative(ids: list[int], mask: list[int], table: np.ndarray, negative: int,
                         last_only: bool = False) -> tuple[list[int], list[int], list[int]]:
    """Appends a repeat negative to a window: the SID of `negative` (an item of the window) after
    its last item, with no cross-entropy on it and all its tokens marked unlikely (one sequence;
    `last_only`: only its item-unique last token, i.e. p(h | h1, h2)). Returns (ids, target mask,
    unlikely mask).

    Why: Direct mode scores an item as p(c1) p(c2 | c1) p(item | c1, c2), and nothing is excluded
    at evaluation. With the user's own item h in the context, a cross-entropy-only model copies
    it: on ML-100k 2.5 of its top 10 were items the user already had, and p(h | h1, h2) rose to
    ~0.3 during training, although no training target ever repeats an item. Teacher-forcing the
    negative and pushing p(h) = p(h1) p(h2 | h1) p(h | h1, h2) down as a whole
    (`losses.sequence_unlikelihood`) trains the Direct-mode score itself. Where the window is cut
    matters: see `gream_jax.train.sft_data.repeat_negative_example`."""
    toks = sid_ids(table, int(negative))
    marks = [0] * (len(toks) - 1) + [1] if last_only else [1] * len(toks)
    return ids + toks, mask + [0] * len(toks), [0] * len(ids) + marks
