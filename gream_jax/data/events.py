"""Turns timestamped (user, item) events into an `InteractionData` with deterministic ids.

Sorting is STABLE: each user's events are ordered by timestamp, and events with equal timestamps
keep their order in the source file (the tie-break RecBole and the LC-Rec scripts also use).
"""

from __future__ import annotations

import numpy as np

from gream_jax.data.types import InteractionData, ItemText, sorted_raw_ids


def chronological_order(user_index: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Permutation that groups events by user, then by timestamp, ties in file order.

    user_index, timestamps: [n_events]. The file position is the last sort key, so the order is
    fully determined even if a sort implementation were not stable.
    """
    positions = np.arange(len(user_index))
    return np.lexsort((positions, np.asarray(timestamps, dtype=np.int64), user_index))


def dedupe_first(users: np.ndarray, items: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Keeps, within `order` (a permutation of event indices), only the first occurrence of each
    (user, item) pair; returns the kept indices in `order`'s order."""
    pair = users[order].astype(np.int64) * (int(items.max(initial=0)) + 1) + items[order]
    _, first = np.unique(pair, return_index=True)
    keep = np.zeros(len(order), dtype=bool)
    keep[first] = True
    return order[keep]


def build_interaction_data(name: str, user_raw: list[str], item_raw: list[str],
                           timestamps: np.ndarray, item_texts: dict[str, ItemText],
                           source: str = "", catalog: list[str] | None = None) -> InteractionData:
    """Builds InteractionData from parallel event lists (in file order).

    user_raw, item_raw: [n_events] raw ids; timestamps: [n_events] ints.
    item_texts: raw item id -> text; items without an entry get an empty ItemText.
    catalog: raw ids of every item (default: items that occur in the events).
    """
    user_ids = sorted_raw_ids(user_raw)
    item_ids = sorted_raw_ids(catalog if catalog is not None else item_raw)
    user_map = {r: i for i, r in enumerate(user_ids)}
    item_map = {r: i for i, r in enumerate(item_ids)}
    users = np.fromiter((user_map[r] for r in user_raw), dtype=np.int64, count=len(user_raw))
    items = np.fromiter((item_map[r] for r in item_raw), dtype=np.int64, count=len(item_raw))
    order = chronological_order(users, np.asarray(timestamps))
    sorted_users = users[order]
    bounds = np.searchsorted(sorted_users, np.arange(len(user_ids) + 1))
    sorted_items = items[order].astype(np.int32)
    sequences = [sorted_items[bounds[u]:bounds[u + 1]].copy() for u in range(len(user_ids))]
    texts = [item_texts.get(r, ItemText()) for r in item_ids]
    data = InteractionData(name=name, item_ids=item_ids, user_ids=user_ids, items=texts,
                           sequences=sequences, source=source)
    data.check()
    return data


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Iterative k-core: keeps events whose user and item both have >= k kept events.

    users, items: [n_events] ints. Repeats until nothing changes, so the result is the k-core.
    """
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    while True:
        u_count = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        i_count = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        new_keep = keep & (u_count[users] >= k) & (i_count[items] >= k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep
