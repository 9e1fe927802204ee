"""The `prepare` stage: load, split, and write `WORKDIR/data/*` for every later stage.

Files (each written atomically; stats.json last, so its presence marks a complete prepare):
  split.npz     the leave-one-out split (see Split.to_arrays)
  id_maps.json  {"user_ids": [raw id of internal user u], "item_ids": [raw id of internal item i]}
  items.jsonl   one row per internal item: id, raw_id and its ItemText; reviews are restricted to
                training interactions (a review of a user's valid/test item would leak the target)
  stats.json    n_users, n_items, n_interactions, density, history_length_percentiles, ...
                plus the data config fingerprint that `load_prepared` checks.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging

from gream_jax.data.loaders import load_dataset
from gream_jax.data.split import Split, drop_short_users, leave_one_out
from gream_jax.data.types import InteractionData, ItemText
from gream_jax.utils import io

PERCENTILES = (0, 25, 50, 75, 90, 99, 100)
FILES = ("split.npz", "id_maps.json", "items.jsonl", "stats.json")


def data_fingerprint(config) -> dict:
    """The config fields that determine the prepared data; a workdir is bound to these."""
    d = config.data
    return {"name": d.name, "file_prefix": d.file_prefix,
            "kcore": int(d.kcore) if d.name in ("amazon2014", "amazon2018") else None,
            "max_history": int(d.max_history), "min_user_interactions": int(d.min_user_interactions),
            "path": os.path.basename(os.path.normpath(d.path)) if d.path else ""}


def compute_stats(data: InteractionData, split: Split, dropped_users: int) -> dict:
    lengths = np.array([len(s) for s in data.sequences])
    pct = np.percentile(lengths, PERCENTILES)
    return {
        "dataset": data.name, "source": data.source,
        "n_users": data.n_users, "n_items": data.n_items, "n_interactions": data.n_interactions,
        "density": data.n_interactions / (data.n_users * data.n_items),
        "history_length_percentiles": {f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)},
        "history_length_mean": float(lengths.mean()),
        "n_train_interactions": int(sum(len(t) for t in split.train)),
        "max_history": split.max_history,
        "dropped_users": int(dropped_users),
        "items_with_title": int(sum(bool(t.title) for t in data.items)),
        "items_with_reviews": int(sum(bool(t.reviews) for t in data.items)),
        "content_sha256": data.content_sha256(),
    }


def format_stats(stats: dict) -> str:
    p = stats["history_length_percentiles"]
    rows = [("dataset", stats["dataset"]), ("source", stats["source"]),
            ("users", f"{stats['n_users']:,}"), ("items", f"{stats['n_items']:,}"),
            ("interactions", f"{stats['n_interactions']:,}"),
            ("density", f"{100 * stats['density']:.4f}%"),
            ("history length", " / ".join(f"{k} {v:g}" for k, v in p.items())
             + f" / mean {stats['history_length_mean']:.2f}"),
            ("training interactions", f"{stats['n_train_interactions']:,}"),
            ("dropped users (< min_user_interactions)", f"{stats['dropped_users']:,}"),
            ("items with title / reviews", f"{stats['items_with_title']:,} / {stats['items_with_reviews']:,}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def training_reviews(data: InteractionData, split: Split) -> list[ItemText]:
    """Item texts whose reviews come only from training interactions (or from users not in the split)."""
    user_map = {r: u for u, r in enumerate(data.user_ids)}
    train_sets: dict[int, set] = {}
    out = []
    for i, text in enumerate(data.items):
        if not text.review_users:
            out.append(text)
            continue
        keep_r, keep_u = [], []
        for review, author in zip(text.reviews, text.review_users):
            u = user_map.get(author)
            if u is not None:
                if u not in train_sets:
                    train_sets[u] = set(split.train[u].tolist())
                if i not in train_sets[u]:
                    continue
            keep_r.append(review)
            keep_u.append(author)
        out.append(ItemText(title=text.title, brand=text.brand, categories=text.categories,
                            description=text.description, reviews=keep_r, review_users=keep_u))
    return out


def _check_fingerprint(directory: str, expected: dict) -> None:
    stats_path = os.path.join(directory, "stats.json")
    if not os.path.exists(stats_path):
        return
    found = io.read_json(stats_path).get("fingerprint")
    if found != expected:
        diff = {k: (found.get(k) if isinstance(found, dict) else None, v) for k, v in expected.items()
                if not isinstance(found, dict) or found.get(k) != v}
        raise ValueError(f"{directory} was prepared from a different data config "
                         f"(field: (prepared, requested) = {diff}); use a fresh --workdir or delete {directory}")


def run_prepare(config, workdir: str) -> dict:
    """Loads `config.data`, splits it, writes WORKDIR/data/*, prints and returns the stats."""
    directory = os.path.join(workdir, "data")
    fingerprint = data_fingerprint(config)
    _check_fingerprint(directory, fingerprint)
    data = load_dataset(config)
    data, dropped = drop_short_users(data, int(config.data.min_user_interactions))
    split = leave_one_out(data, int(config.data.max_history))
    stats = compute_stats(data, split, dropped)
    stats["fingerprint"] = fingerprint
    if jax.process_index() == 0:
        io.save_npz(os.path.join(directory, "split.npz"), **split.to_arrays())
        io.write_json(os.path.join(directory, "id_maps.json"),
                      {"user_ids": data.user_ids, "item_ids": data.item_ids}, indent=None)
        io.write_jsonl(os.path.join(directory, "items.jsonl"),
                       ({"id": i, "raw_id": r, **t.to_dict()}
                        for i, (r, t) in enumerate(zip(data.item_ids, training_reviews(data, split)))))
        io.write_json(os.path.join(directory, "stats.json"), stats)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("gream_jax.prepare")
    table = format_stats(stats)
    print(table, flush=True)
    logging.info("prepared %s into %s (%d users, %d items, %d interactions)", data.name, directory,
                 stats["n_users"], stats["n_items"], stats["n_interactions"])
    return {k: stats[k] for k in ("dataset", "n_users", "n_items", "n_interactions", "density",
                                  "history_length_percentiles", "dropped_users")}


def load_split(path: str) -> Split:
    """The leave-one-out split run_prepare wrote to `path` (WORKDIR/data/split.npz)."""
    with np.load(path) as z:
        return Split.from_arrays(dict(z), path)


def load_prepared(workdir: str, config=None) -> tuple[InteractionData, Split]:
    """Reloads what run_prepare wrote. With `config`, refuses data prepared from another data config."""
    directory = os.path.join(workdir, "data")
    for name in FILES:
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{os.path.join(directory, name)}: missing; run "
                                    f"--config.stage=prepare with this --workdir first")
    stats = io.read_json(os.path.join(directory, "stats.json"))
    if config is not None:
        _check_fingerprint(directory, data_fingerprint(config))
    split = load_split(os.path.join(directory, "split.npz"))
    maps = io.read_json(os.path.join(directory, "id_maps.json"))
    items_path = os.path.join(directory, "items.jsonl")
    items = []
    with open(items_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{items_path}:{lineno}: invalid JSON: {e.msg}") from None
            if row.get("id") != len(items):
                raise ValueError(f"{items_path}:{lineno}: expected item id {len(items)}, got {row.get('id')!r}")
            items.append(ItemText.from_dict(row))
    data = InteractionData(name=stats["dataset"], item_ids=maps["item_ids"], user_ids=maps["user_ids"],
                           items=items, sequences=[split.full_sequence(u) for u in range(split.n_users)],
                           source=stats.get("source", ""))
    data.check()
    if data.content_sha256() != stats["content_sha256"]:
        raise ValueError(f"{directory}: split.npz / id_maps.json do not match stats.json "
                         f"(content_sha256 differs); re-run the prepare stage into a fresh workdir")
    return data, split
