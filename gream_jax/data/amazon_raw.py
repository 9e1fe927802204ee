"""Amazon review datasets in the two public raw formats (J. McAuley's group, UCSD).

- 2014 release: `reviews_<Cat>_5.json.gz` + `meta_<Cat>.json.gz`. Review lines are JSON; meta lines
  are Python literals (single quotes), read with `ast.literal_eval`.
- 2018 release: `<Cat>_5.json.gz` + `meta_<Cat>.json.gz`, both JSON lines.
Either parser accepts both encodings per line, so a re-encoded file still loads.

Processing (as GREAM's release): items without metadata are dropped; repeated (user, item) pairs
keep the earliest; then an iterative k-core filter on users and items; per-user order is a stable
sort on `unixReviewTime` (ties keep file order). Review texts are kept per item, with their author.
"""

from __future__ import annotations

import ast
import gzip
import json
import os

import numpy as np

from gream_jax.data.events import build_interaction_data, chronological_order, dedupe_first, kcore_mask
from gream_jax.data.types import DataFormatError, InteractionData, ItemText, clean_text

RELEASES = {"amazon2014": ("reviews_{}_5.json.gz", "meta_{}.json.gz"),
            "amazon2018": ("{}_5.json.gz", "meta_{}.json.gz")}


def raw_files(release: str, directory: str, category: str) -> tuple[str, str]:
    """(reviews path, meta path) for `release` in {"amazon2014", "amazon2018"}."""
    reviews, meta = RELEASES[release]
    return os.path.join(directory, reviews.format(category)), os.path.join(directory, meta.format(category))


def _records(path: str):
    """Yields (line number, dict) for each non-empty line of a gzip file of JSON / Python literals."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        f = opener(path, "rt", encoding="utf-8")
        with f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    try:
                        record = ast.literal_eval(line.strip())
                    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
                        raise DataFormatError(path, f"neither JSON nor a Python literal "
                                                    f"({type(e).__name__}: {e})", line=lineno) from None
                if not isinstance(record, dict):
                    raise DataFormatError(path, f"expected an object, got {type(record).__name__}",
                                          line=lineno)
                yield lineno, record
    except (OSError, EOFError, UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise DataFormatError(path, "file not found") from None
        raise DataFormatError(path, f"cannot read ({type(e).__name__}: {e})") from None


def _require_str(path, lineno, record, key) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(path, f"field {key!r} missing or not a non-empty string "
                                    f"(got {value!r})", line=lineno)
    return value.strip()


def _categories(record) -> str:
    """2014: `categories` = list of paths (first path kept); 2018: `category` = one flat path."""
    cats = record.get("categories")
    if isinstance(cats, list) and cats:
        first = cats[0]
        return ", ".join(clean_text(c) for c in (first if isinstance(first, list) else cats) if clean_text(c))
    cats = record.get("category")
    if isinstance(cats, list):
        return ", ".join(clean_text(c) for c in cats if clean_text(c))
    return clean_text(cats) if isinstance(cats, str) else ""


def _description(record) -> str:
    value = record.get("description")
    if isinstance(value, list):
        return clean_text(" ".join(str(v) for v in value))
    return clean_text(value) if isinstance(value, str) else ""


def read_meta(path: str) -> dict[str, ItemText]:
    texts: dict[str, ItemText] = {}
    for lineno, record in _records(path):
        asin = _require_str(path, lineno, record, "asin")
        brand = record.get("brand", "")
        texts[asin] = ItemText(title=clean_text(record.get("title") if isinstance(record.get("title"), str) else ""),
                               brand=clean_text(brand) if isinstance(brand, str) else "",
                               categories=_categories(record), description=_description(record))
    return texts


def read_reviews(path: str):
    """Returns parallel lists: users, items, timestamps [n], review texts."""
    users, items, times, reviews = [], [], [], []
    for lineno, record in _records(path):
        users.append(_require_str(path, lineno, record, "reviewerID"))
        items.append(_require_str(path, lineno, record, "asin"))
        t = record.get("unixReviewTime")
        if isinstance(t, bool) or not isinstance(t, int):
            if isinstance(t, str) and t.strip().lstrip("-").isdigit():
                t = int(t)
            else:
                raise DataFormatError(path, f"field 'unixReviewTime' must be an integer, got {t!r}",
                                      line=lineno)
        times.append(t)
        text = record.get("reviewText", "")
        reviews.append(clean_text(text) if isinstance(text, str) else "")
    if not users:
        raise DataFormatError(path, "no reviews")
    return users, items, np.asarray(times, dtype=np.int64), reviews


def load_amazon_raw(data_config, release: str) -> InteractionData:
    """Loads `<path>/<files for config.data.file_prefix>` and applies the processing above."""
    reviews_path, meta_path = raw_files(release, data_config.path, data_config.file_prefix)
    users, items, times, reviews = read_reviews(reviews_path)
    texts = read_meta(meta_path)
    has_meta = np.fromiter((i in texts for i in items), dtype=bool, count=len(items))
    # Dense codes for the k-core counts (raw ids are strings).
    user_codes = np.unique(np.asarray(users), return_inverse=True)[1]
    item_codes = np.unique(np.asarray(items), return_inverse=True)[1]
    # Dedupe before the k-core so a repeated review does not count twice; keep the earliest.
    idx = np.flatnonzero(has_meta)
    first = dedupe_first(user_codes[idx], item_codes[idx], chronological_order(user_codes[idx], times[idx]))
    idx = idx[np.sort(first)]
    core = kcore_mask(user_codes[idx], item_codes[idx], int(data_config.kcore))
    idx = idx[core]
    if not len(idx):
        raise DataFormatError(reviews_path, f"nothing left after dropping items without metadata and "
                                            f"the {data_config.kcore}-core filter")
    for e in idx:   # review texts with their author, in file order
        if reviews[e]:
            text = texts[items[e]]
            text.reviews.append(reviews[e])
            text.review_users.append(users[e])
    name = f"{release}_{data_config.file_prefix}"
    return build_interaction_data(name, [users[e] for e in idx], [items[e] for e in idx], times[idx],
                                  texts, source=reviews_path)
