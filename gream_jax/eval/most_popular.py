"""Most-popular baseline on a prepared workdir: the floor every model's figures are read against.

Ranks every item by its count in the training parts (ties by item index), the same list for every
user, nothing excluded (baselines.md's protocol; on ML-100k it gives baselines.md's MostPop row,
test R@10 / N@10 .0498 / .0224). For datasets without a published reference point (Office,
Industrial) it is the context for docs/results.md's figures.

Command (after `--config.stage=prepare`, or any stage that prepared WORKDIR/data):
    python -m gream_jax.eval.most_popular --workdir=WORKDIR [--ks=5,10,20]
"""

from __future__ import annotations

import numpy as np

from gream_jax.eval.metrics import ranking_metrics


def popularity_order(train_items: np.ndarray, n_items: int) -> np.ndarray:
    """Item indices by descending training count, ties by index. train_items [n] -> [n_items]."""
    train_items = np.asarray(train_items)
    if train_items.size and (train_items.min() < 0 or train_items.max() >= n_items):
        raise ValueError(f"popularity_order: item indices must be in [0, {n_items}), got "
                         f"[{train_items.min()}, {train_items.max()}]")
    counts = np.bincount(train_items, minlength=n_items)
    return np.argsort(-counts, kind="stable")


def most_popular_metrics(split, n_items: int, ks=(5, 10, 20)) -> dict:
    """{"valid": metrics, "test": metrics} of the most-popular list (`eval.metrics.ranking_metrics`)."""
    order = popularity_order(np.concatenate(split.train) if split.train else np.zeros(0, np.int64), n_items)
    ranked = order[:max(ks)]
    out = {}
    for name in ("valid", "test"):
        targets = split.targets(name)
        out[name] = ranking_metrics(np.broadcast_to(ranked, (len(targets), len(ranked))), targets, ks)
        out[name]["users"] = int(len(targets))
    return out


def main(argv=None):
    import argparse

    from gream_jax.data.prepare import load_prepared
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a workdir whose data/ the prepare stage wrote")
    p.add_argument("--ks", default="5,10,20")
    args = p.parse_args(argv)
    ks = tuple(int(k) for k in args.ks.split(","))
    try:
        data, split = load_prepared(args.workdir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"gream_jax.eval.most_popular: {e}") from None
    result = most_popular_metrics(split, len(data.item_ids), ks)
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    print(f"most popular on {data.name} ({len(data.item_ids)} items, nothing excluded)")
    print("| split | users | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, m in result.items():
        print(f"| {name} | {m['users']} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")


if __name__ == "__main__":
    from gream_jax.utils.cli import run_cli
    run_cli(main)
