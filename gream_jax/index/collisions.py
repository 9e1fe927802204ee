"""Turning quantiser codes into unique SIDs: three collision schemes.

After L levels, items that share all L codes cannot be told apart by a decoder. Schemes:
- `rank_suffix` (the reference release): every item in a collision group gets one extra code,
  its rank inside the group (ordered by distance to the group's reconstruction, then item index);
  SIDs are L or L+1 codes and stay prefix-free because a singleton's L codes are unique.
- `nearest_free`: colliding items (all but the one nearest the shared centroid) move to the
  nearest last-level code that no other item uses under the same prefix; SIDs stay L codes.
  When a prefix has no free code left, the remaining items of that group fall back to a rank
  suffix (counted in the stats).
- `item_token`: the L semantic levels followed by one item-unique code (the item's index), so
  the trie ends in the item itself; every SID is L+1 codes.
All functions are pure numpy on the host: collisions are a small, irregular set.
"""

from __future__ import annotations

import collections

import numpy as np

SCHEMES = ("rank_suffix", "nearest_free", "item_token")


def collision_groups(codes: np.ndarray) -> list[np.ndarray]:
    """Groups (item index arrays, ascending) of items sharing all codes; only groups of size > 1."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    splits = np.cumsum(counts)[:-1]
    return [g for g in np.split(order, splits) if len(g) > 1]


def collision_stats(codes: np.ndarray) -> dict:
    """Share of items whose full code is shared with another item, and the largest group."""
    groups = collision_groups(codes)
    n = codes.shape[0]
    in_groups = sum(len(g) for g in groups)
    return {"collision_rate": in_groups / max(n, 1), "colliding_items": int(in_groups),
            "collision_groups": len(groups), "largest_group": max((len(g) for g in groups), default=1)}


def _rank_order(group: np.ndarray, residual_sq: np.ndarray | None) -> np.ndarray:
    if residual_sq is None:
        return group
    return group[np.lexsort((group, residual_sq[group]))]


def resolve(codes: np.ndarray, scheme: str, level_sizes: tuple[int, ...],
            last_residual: np.ndarray | None = None, last_codebook: np.ndarray | None = None,
            residual_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], dict]:
    """Returns (sid codes [n, max_len] -1 padded, lengths [n], level sizes, stats).

    codes `[n, L]`; `last_residual [n, d]` is the input of the last quantiser level and
    `last_codebook [K_L, d]` its centroids (needed by `nearest_free`); `residual_sq [n]` is each
    item's final squared residual (orders ranks: the best-quantised item keeps rank 0).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"config.index.collision={scheme!r}: must be one of {SCHEMES}")
    n, n_levels = codes.shape
    codes = np.asarray(codes, np.int32)
    if scheme == "item_token":
        out = np.concatenate([codes, np.arange(n, dtype=np.int32)[:, None]], axis=1)
        return out, np.full(n, n_levels + 1, np.int32), tuple(level_sizes) + (n,), {"fallback_items": 0}
    if scheme == "nearest_free":
        if last_residual is None or last_codebook is None:
            raise ValueError("collisions.resolve: nearest_free needs last_residual and last_codebook")
        codes, stats = _nearest_free(codes, last_residual, last_codebook, residual_sq)
    else:
        stats = {"fallback_items": 0}
    groups = collision_groups(codes)
    out = np.full((n, n_levels + 1), -1, np.int32)
    out[:, :n_levels] = codes
    lengths = np.full(n, n_levels, np.int32)
    for g in groups:
        ranked = _rank_order(g, residual_sq)
        out[ranked, n_levels] = np.arange(len(ranked), dtype=np.int32)
        lengths[ranked] = n_levels + 1
    if scheme == "nearest_free":
        stats["fallback_items"] = int(sum(len(g) for g in groups))
    largest = max((len(g) for g in groups), default=0)
    if largest == 0:
        return out[:, :n_levels], lengths, tuple(level_sizes), stats
    return out, lengths, tuple(level_sizes) + (largest,), stats


def _nearest_free(codes, last_residual, last_codebook, residual_sq):
    """Moves colliding items to the nearest unused last-level code under their prefix."""
    n_levels = codes.shape[1]
    codes = codes.copy()
    used = collections.defaultdict(set)
    for row in codes:
        used[tuple(row[:-1])].add(int(row[-1]))
    moved = 0
    for g in collision_groups(codes):
        ranked = _rank_order(g, residual_sq)
        prefix = tuple(codes[ranked[0], :n_levels - 1])
        taken = used[prefix]
        for item in ranked[1:]:        # ranked[0] keeps the shared code
            d = np.sum((last_codebook - last_residual[item][None, :]) ** 2, axis=1)
            for c in np.argsort(d, kind="stable"):
                if int(c) not in taken:
                    codes[item, -1] = c
                    taken.add(int(c))
                    moved += 1
                    break
    return codes, {"moved_items": moved}
