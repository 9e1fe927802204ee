"""The SID artifact: each item's semantic ID (a short code sequence) and its tokens.

Saved as `WORKDIR/index/sids.npz` (arrays) + `sids.json` (item-id map, dataset, config that made
it). Loading checks the artifact against what the caller expects (item count, raw item ids,
dataset name) and refuses a mismatch with an error naming the file, because SIDs silently
applied to another catalogue would train and evaluate on the wrong items.

Tokens are `<a_12>`, `<b_3>`, ...: level letter (a, b, c, ...) and code. `all_tokens()` lists
every (level, code) token in a fixed level-major order; with the `item_token` scheme the last
level holds one token per item.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import string

import numpy as np

from gream_jax.utils import io

FORMAT_VERSION = 1
LEVEL_LETTERS = string.ascii_lowercase


class SidArtifactError(ValueError):
    """A SID artifact that is missing, malformed, or made for other data."""


def item_ids_sha256(item_ids) -> str:
    return hashlib.sha256("\x1f".join(map(str, item_ids)).encode()).hexdigest()


def require_item_unique_last_level(semantic_ids, what: str) -> None:
    """Raises unless every SID has all levels and the last level has one code per item (as
    config.index.collision="item_token" builds), i.e. the last token names the item; `what` is
    the setting that needs it, for the message."""
    lengths = np.asarray(semantic_ids.lengths)
    sizes = [int(k) for k in semantic_ids.level_sizes]
    if sizes[-1] != len(lengths) or lengths.min() != lengths.max() or lengths.max() != len(sizes):
        raise SidArtifactError(f"{what} needs an item-unique last SID level (collision='item_token'); this SID "
                               f"table has level sizes {sizes} for {len(lengths)} items and SID lengths "
                               f"{lengths.min()}..{lengths.max()}: rebuild the index with collision='item_token'")


@dataclasses.dataclass
class SemanticIds:
    codes: np.ndarray                 # [n_items, max_len] int32, -1 beyond each item's length
    lengths: np.ndarray               # [n_items] int32
    level_sizes: tuple[int, ...]      # codes available at each level
    meta: dict = dataclasses.field(default_factory=dict)   # item_ids, dataset, scheme, config, ...

    def __post_init__(self):
        self.codes = np.asarray(self.codes, np.int32)
        self.lengths = np.asarray(self.lengths, np.int32)
        self.level_sizes = tuple(int(s) for s in self.level_sizes)
        n, max_len = self.codes.shape
        if self.lengths.shape != (n,):
            raise SidArtifactError(f"SemanticIds: lengths shape {self.lengths.shape} != ({n},)")
        if len(self.level_sizes) != max_len:
            raise SidArtifactError(
                f"SemanticIds: {len(self.level_sizes)} level sizes for codes of width {max_len}")
        if max_len > len(LEVEL_LETTERS):
            raise SidArtifactError(f"SemanticIds: at most {len(LEVEL_LETTERS)} levels, got {max_len}")
        pos = np.arange(max_len)[None, :]
        inside = pos < self.lengths[:, None]
        if np.any(self.codes[~inside] != -1):
            raise SidArtifactError("SemanticIds: codes beyond an item's length must be -1")
        if np.any(self.codes < -1) or np.any(inside & (self.codes < 0)):
            raise SidArtifactError("SemanticIds: negative code inside an item's length")
        too_big = inside & (self.codes >= np.asarray(self.level_sizes)[None, :])
        if np.any(too_big):
            item, level = np.argwhere(too_big)[0]
            raise SidArtifactError(f"SemanticIds: item {item} level {level} code {self.codes[item, level]}"
                                   f" >= level size {self.level_sizes[level]}")

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.codes.shape[1])

    def token(self, level: int, code: int) -> str:
        return f"<{LEVEL_LETTERS[level]}_{int(code)}>"

    def item_tokens(self, item: int) -> list[str]:
        return [self.token(level, c) for level, c in enumerate(self.codes[item, :self.lengths[item]])]

    def item_string(self, item: int) -> str:
        return "".join(self.item_tokens(item))

    def all_tokens(self) -> list[str]:
        return [self.token(level, c) for level, size in enumerate(self.level_sizes) for c in range(size)]

    def is_unique(self) -> bool:
        rows = {tuple(self.codes[i, :self.lengths[i]]) for i in range(self.n_items)}
        return len(rows) == self.n_items

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str, extra_meta: dict | None = None) -> None:
        meta = dict(self.meta)
        meta.update(extra_meta or {})
        item_ids = meta.get("item_ids")
        if item_ids is None or len(item_ids) != self.n_items:
            raise SidArtifactError(f"SemanticIds.save: meta['item_ids'] must list {self.n_items} raw ids")
        meta.update(format_version=FORMAT_VERSION, n_items=self.n_items,
                    level_sizes=list(self.level_sizes), item_ids_sha256=item_ids_sha256(item_ids))
        os.makedirs(directory, exist_ok=True)
        io.save_npz(os.path.join(directory, "sids.npz"), codes=self.codes, lengths=self.lengths,
                    level_sizes=np.asarray(self.level_sizes, np.int32))
        io.write_json(os.path.join(directory, "sids.json"), meta)

    @classmethod
    def load(cls, directory: str, n_items: int | None = None, item_ids=None,
             dataset: str | None = None) -> "SemanticIds":
        """Loads and checks the artifact. `item_ids` / `dataset` are additive checks (DESIGN.md)."""
        npz_path = os.path.join(directory, "sids.npz")
        json_path = os.path.join(directory, "sids.json")
        if not os.path.exists(npz_path):
            raise SidArtifactError(f"{npz_path}: not found (run the index stage first)")
        meta = io.read_json(json_path)
        with np.load(npz_path) as f:
            codes, lengths, level_sizes = f["codes"], f["lengths"], tuple(f["level_sizes"].tolist())
        if meta.get("format_version") != FORMAT_VERSION:
            raise SidArtifactError(f"{json_path}: format_version {meta.get('format_version')!r}, "
                                   f"expected {FORMAT_VERSION}")
        if meta.get("n_items") != codes.shape[0] or len(meta.get("item_ids", [])) != codes.shape[0]:
            raise SidArtifactError(f"{json_path}: n_items {meta.get('n_items')} and item_ids disagree "
                                   f"with {npz_path} ({codes.shape[0]} rows)")
        if n_items is not None and codes.shape[0] != n_items:
            raise SidArtifactError(f"{npz_path}: SIDs for {codes.shape[0]} items, but the dataset has "
                                   f"{n_items}; rerun the index stage for this dataset")
        if item_ids is not None:
            item_ids = [str(i) for i in item_ids]
            if item_ids_sha256(item_ids) != meta["item_ids_sha256"]:
                first = next((i for i, (a, b) in enumerate(zip(item_ids, meta["item_ids"])) if a != b),
                             min(len(item_ids), len(meta["item_ids"])))
                raise SidArtifactError(f"{json_path}: item-id map differs from the dataset's (first at "
                                       f"internal item {first}); rerun the index stage for this dataset")
        if dataset is not None and meta.get("dataset") != dataset:
            raise SidArtifactError(f"{json_path}: made for dataset {meta.get('dataset')!r}, not {dataset!r}")
        try:
            return cls(codes=codes, lengths=lengths, level_sizes=level_sizes, meta=meta)
        except SidArtifactError as e:
            raise SidArtifactError(f"{npz_path}: {e}") from None
