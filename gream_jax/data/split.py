"""Chronological leave-one-out split (the LC-Rec / GREAM / RecBole protocol).

Per user, with the sequence already in time order (stable on ties, see `events.py`): the last item
is the test target, the second-to-last the validation target, everything earlier is training.
Model inputs are the most recent `max_history` items: validation sees the training part, test
sees training + the validation target.

Users with fewer than 3 interactions cannot give one training item plus two targets. They are
removed by `drop_short_users` before splitting (run_prepare reports how many in stats.json as
`dropped_users`); `leave_one_out` itself refuses them. ML-100k and the shared Amazon data have none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from gream_jax.data.types import InteractionData

MIN_INTERACTIONS = 3
SPLITS = ("valid", "test")


def training_counts(sequences, n_items: int = 0) -> np.ndarray:
    """[max(n_items, 1 + largest item)] int64: how often each item occurs in `sequences` (lists or
    arrays of item ids), the training popularity that `Split.item_counts` and the chain
    templates' group examples rank items by."""
    flat = np.concatenate([np.asarray(t, np.int64) for t in sequences if len(t)] or [np.zeros(0, np.int64)])
    return np.bincount(flat, minlength=n_items)


@dataclass
class Split:
    train: list[np.ndarray]         # per user: all but the last two items, int32
    valid_targets: np.ndarray       # [n_users] second-to-last item
    test_targets: np.ndarray        # [n_users] last item
    max_history: int

    @property
    def n_users(self) -> int:
        return len(self.train)

    def valid_history(self, u: int) -> np.ndarray:
        return self.train[u][-self.max_history:]

    def test_history(self, u: int) -> np.ndarray:
        full = np.append(self.train[u], np.int32(self.valid_targets[u])).astype(np.int32)
        return full[-self.max_history:]

    def history(self, split: str, u: int) -> np.ndarray:
        if split == "valid":
            return self.valid_history(u)
        if split == "test":
            return self.test_history(u)
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def targets(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.valid_targets if split == "valid" else self.test_targets

    def histories(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """All users' inputs for `split`: ([n_users, max_history] int32 LEFT-padded with -1, [n_users] lengths)."""
        out = np.full((self.n_users, self.max_history), -1, dtype=np.int32)
        lengths = np.zeros(self.n_users, dtype=np.int32)
        for u in range(self.n_users):
            h = self.history(split, u)
            lengths[u] = len(h)
            if len(h):
                out[u, -len(h):] = h
        return out, lengths

    def item_counts(self, n_items: int = 0) -> np.ndarray:
        """[max(n_items, 1 + largest training item)] int64: how often each item occurs in the
        training parts (the popularity every "most popular" figure is measured by)."""
        return training_counts(self.train, n_items)

    def full_sequence(self, u: int) -> np.ndarray:
        return np.concatenate([self.train[u], [self.valid_targets[u], self.test_targets[u]]]).astype(np.int32)

    # --- storage: train is flattened as (values, offsets) so the file is a plain .npz ---
    def to_arrays(self) -> dict[str, np.ndarray]:
        lengths = np.array([len(t) for t in self.train], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(self.train).astype(np.int32) if self.train else np.zeros(0, np.int32)
        return {"train_items": flat, "train_offsets": offsets,
                "valid_targets": self.valid_targets.astype(np.int32),
                "test_targets": self.test_targets.astype(np.int32),
                "max_history": np.array(self.max_history, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays, path: str = "split.npz") -> "Split":
        missing = [k for k in ("train_items", "train_offsets", "valid_targets", "test_targets",
                               "max_history") if k not in arrays]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        flat, offsets = np.asarray(arrays["train_items"]), np.asarray(arrays["train_offsets"])
        n = len(offsets) - 1
        if n != len(arrays["valid_targets"]) or n != len(arrays["test_targets"]):
            raise ValueError(f"{path}: train_offsets describe {n} users but targets have "
                             f"{len(arrays['valid_targets'])}/{len(arrays['test_targets'])}")
        train = [flat[offsets[u]:offsets[u + 1]].astype(np.int32) for u in range(n)]
        return cls(train=train, valid_targets=np.asarray(arrays["valid_targets"], dtype=np.int32),
                   test_targets=np.asarray(arrays["test_targets"], dtype=np.int32),
                   max_history=int(arrays["max_history"]))


def drop_short_users(data: InteractionData, min_interactions: int = MIN_INTERACTIONS
                     ) -> tuple[InteractionData, int]:
    """Removes users with fewer than `min_interactions` items; returns (data, number removed).

    Items are never removed (the catalogue stays the full item set), so item ids do not change.
    """
    keep = [u for u, s in enumerate(data.sequences) if len(s) >= min_interactions]
    if len(keep) == data.n_users:
        return data, 0
    return dataclasses.replace(data, user_ids=[data.user_ids[u] for u in keep],
                               sequences=[data.sequences[u] for u in keep]), data.n_users - len(keep)


def leave_one_out(data: InteractionData, max_history: int) -> Split:
    """Splits every user's chronological sequence: [..train.., valid target, test target]."""
    if max_history < 1:
        raise ValueError(f"max_history={max_history}: must be >= 1")
    short = [data.user_ids[u] for u, s in enumerate(data.sequences) if len(s) < MIN_INTERACTIONS]
    if short:
        raise ValueError(f"{data.name}: {len(short)} users have fewer than {MIN_INTERACTIONS} "
                         f"interactions (e.g. raw user {short[0]!r}); call drop_short_users first")
    train = [np.asarray(s[:-2], dtype=np.int32) for s in data.sequences]
    valid = np.array([s[-2] for s in data.sequences], dtype=np.int32)
    test = np.array([s[-1] for s in data.sequences], dtype=np.int32)
    return Split(train=train, valid_targets=valid, test_targets=test, max_history=int(max_history))
