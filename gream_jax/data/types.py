"""The data contract every stage codes against: item texts, interaction sequences, format errors.

Internal ids are 0-based ints; raw ids (ASINs, MovieLens ids, processed-file keys) are kept in
`item_ids` / `user_ids` so results can always be mapped back to the source files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np


class DataFormatError(ValueError):
    """Malformed input data. The message always starts with the file, then the line or JSON key."""

    def __init__(self, path: str, message: str, *, line: int | None = None, key: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if key is not None:
            where += f" [key {key!r}]"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.key = str(path), line, key


@dataclass
class ItemText:
    """Text known about one item; every field is a str, "" when unknown (never None)."""

    title: str = ""
    brand: str = ""
    categories: str = ""       # category path, root to leaf, joined with ", "; ML-100k: genres
    description: str = ""
    reviews: list[str] = field(default_factory=list)   # may be empty
    # Additive to DESIGN.md: raw user id of each review (aligned with `reviews`, or empty when not
    # known). `run_prepare` uses it to keep only reviews of training interactions (no target leaks).
    review_users: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ItemText":
        return cls(title=d.get("title", ""), brand=d.get("brand", ""),
                   categories=d.get("categories", ""), description=d.get("description", ""),
                   reviews=list(d.get("reviews", [])), review_users=list(d.get("review_users", [])))


@dataclass
class InteractionData:
    """A whole dataset: per-user chronological item sequences plus item texts."""

    name: str
    item_ids: list[str]            # raw id of internal item i
    user_ids: list[str]            # raw id of internal user u
    items: list[ItemText]          # aligned with item_ids
    sequences: list[np.ndarray]    # per user: internal item ids, chronological (oldest first), int32
    source: str = ""               # additive: where the data was read from (file, cache, download)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def check(self) -> None:
        """Raises ValueError if the fields disagree with each other (a loader bug, not bad input)."""
        if len(self.items) != len(self.item_ids):
            raise ValueError(f"{self.name}: {len(self.items)} item texts for {len(self.item_ids)} items")
        if len(self.sequences) != len(self.user_ids):
            raise ValueError(f"{self.name}: {len(self.sequences)} sequences for {len(self.user_ids)} users")
        for name, ids in (("item_ids", self.item_ids), ("user_ids", self.user_ids)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{self.name}: duplicate raw ids in {name}")
        for u, seq in enumerate(self.sequences):
            if seq.dtype != np.int32 or seq.ndim != 1:
                raise ValueError(f"{self.name}: sequence of user {u} must be 1-d int32, got {seq.dtype}")
            if len(seq) and (seq.min() < 0 or seq.max() >= self.n_items):
                raise ValueError(f"{self.name}: user {u} has item ids outside [0, {self.n_items})")

    def content_sha256(self) -> str:
        """Fingerprint of ids and sequences: later stages use it to refuse mismatched artifacts."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.item_ids).encode())
        h.update(b"\x1e")
        h.update("\x1f".join(self.user_ids).encode())
        for seq in self.sequences:
            h.update(b"\x1e")
            h.update(np.ascontiguousarray(seq, dtype=np.int32).tobytes())
        return h.hexdigest()


def raw_id_sort_key(raw_ids) -> callable:
    """Deterministic order of raw ids: numeric when every id is a decimal integer, else by string.

    Independent of file order, so the id maps depend only on which ids exist.
    """
    if all(isinstance(r, str) and r.isdigit() for r in raw_ids):
        return lambda r: (int(r), r)
    return lambda r: r


def sorted_raw_ids(raw_ids) -> list[str]:
    unique = set(raw_ids)
    return sorted(unique, key=raw_id_sort_key(unique))


def clean_text(value) -> str:
    """Collapses whitespace (newlines, tabs) to single spaces; None -> ""."""
    if value is None:
        return ""
    return " ".join(str(value).split())
