"""Paired comparison of two evaluations on the same users (the eval or rl stage's per-user files).

Why: with 943 ML-100k users one Recall@10 carries a standard error of about 0.011, so two runs
can only be told apart on the same per-user targets. This computes, for each K, the mean of the
per-user difference (B - A) of hit@K and of NDCG@K, its standard error, and the number of users
where only one side hits; a difference smaller than two standard errors is reported as noise.

Command:
    python -m gream_jax.eval.paired --a=RUN_A/eval/per_user_test_direct.jsonl \
        --b=RUN_B/eval/per_user_test_direct.jsonl --ks=5,10,20

Several pairs (comma-separated, A_i against B_i: seeds, or independent chain draws of a sampled
Reasoning-mode eval) are pooled per user: each user's difference is the mean of its B_i - A_i, and
the standard error is taken over users, so the users' correlation across pairs is kept and draw
noise averages out; each pair's own difference is printed below the pooled table.
"""

from __future__ import annotations

import math
import os

import numpy as np

from gream_jax.eval.metrics import gains_at_k
from gream_jax.utils.io import read_jsonl


def paired_difference(rank_a: np.ndarray, rank_b: np.ndarray, k: int) -> dict:
    """Mean and standard error of B - A for Recall@k and NDCG@k over the same users: ranks
    `[users]` each, or `[pairs, users]` (row i of A against row i of B; gains averaged per user)."""
    rank_a, rank_b = np.asarray(rank_a), np.asarray(rank_b)
    if rank_a.shape != rank_b.shape or rank_a.ndim not in (1, 2) or not rank_a.size:
        raise ValueError(f"paired_difference: need two equal, non-empty [users] or [pairs, users] rank "
                         f"arrays, got {rank_a.shape} and {rank_b.shape}")
    rank_a, rank_b = np.atleast_2d(rank_a), np.atleast_2d(rank_b)
    n = rank_a.shape[1]
    hit_a, ndcg_a = (g.mean(0) for g in gains_at_k(rank_a, k))
    hit_b, ndcg_b = (g.mean(0) for g in gains_at_k(rank_b, k))
    out = {"users": n, "k": k, "pairs": rank_a.shape[0]}
    for name, a, b in (("recall", hit_a, hit_b), ("ndcg", ndcg_a, ndcg_b)):
        d = b - a
        se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        out[name] = {"a": float(a.mean()), "b": float(b.mean()), "diff": float(d.mean()), "se": se,
                     "only_a": int(np.sum((a > 0) & (b == 0))), "only_b": int(np.sum((b > 0) & (a == 0)))}
    return out


def load_ranks(path: str) -> dict[str, tuple[str, int]]:
    """user -> (target, 0-based hit rank or -1) from a per-user eval file, with clear errors."""
    out = {}
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (the eval stage writes WORKDIR/eval/per_user_<split>_<mode>.jsonl, "
                         "the rl stage WORKDIR/rl/per_user_<split>_<select mode>.jsonl)")
    rows = read_jsonl(path, lambda r: (str(r["user"]), str(r["target"]), int(r["hit_rank"])), "a per-user eval row")
    for line_no, (user, target, rank) in rows:
        if user in out:
            raise ValueError(f"{path}:{line_no}: user {user!r} appears twice")
        out[user] = (target, rank)
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def load_pairs(path_a, path_b) -> tuple[np.ndarray, np.ndarray]:
    """Hit ranks `[pairs, users]` of the A and B files (users in one sorted order). path_a / path_b:
    one file each, or equal-length lists of files (pair i = path_a[i] against path_b[i]); every file
    must hold the same users with the same targets."""
    paths_a = [path_a] if isinstance(path_a, str) else list(path_a)
    paths_b = [path_b] if isinstance(path_b, str) else list(path_b)
    if len(paths_a) != len(paths_b) or not paths_a:
        raise ValueError(f"{len(paths_a)} A files but {len(paths_b)} B files: give one B file per A file")
    loaded = [(p, load_ranks(p)) for p in paths_a + paths_b]
    first_path, first = loaded[0]
    users = sorted(first)
    for path, ranks in loaded[1:]:
        if set(ranks) != set(first):
            only = sorted(set(ranks) ^ set(first))[:5]
            raise ValueError(f"{first_path} and {path} cover different users (e.g. {only}); compare the same split")
        for u in users:
            if ranks[u][0] != first[u][0]:
                raise ValueError(f"user {u!r}: target {first[u][0]!r} in {first_path} but {ranks[u][0]!r} in "
                                 f"{path}; the runs used different splits")
    ranks = np.array([[r[u][1] for u in users] for _, r in loaded])           # [2 pairs, users]
    half = len(paths_a)
    return ranks[:half], ranks[half:]


def compare_files(path_a, path_b, ks: tuple[int, ...]) -> list[dict]:
    """Paired differences for each K, pooled over the pairs (`load_pairs` reads and checks the files)."""
    rank_a, rank_b = load_pairs(path_a, path_b)
    return [paired_difference(rank_a, rank_b, k) for k in ks]


def format_table(results: list[dict]) -> str:
    lines = ["| metric | A | B | B - A | s.e. | users only A / only B hit | reading |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for name in ("recall", "ndcg"):
            m = r[name]
            identical = m["diff"] == 0 and m["se"] == 0          # every user the same on both sides
            verdict = ("no difference" if identical else "within noise" if abs(m["diff"]) < 2 * m["se"]
                       else "B better" if m["diff"] > 0 else "A better")
            lines.append(f"| {name}@{r['k']} | {m['a']:.4f} | {m['b']:.4f} | {m['diff']:+.4f} | {m['se']:.4f} | "
                         f"{m['only_a']} / {m['only_b']} | {verdict} |")
    return "\n".join(lines)


def per_pair_table(rank_a: np.ndarray, rank_b: np.ndarray, names: list[str], ks: tuple[int, ...]) -> str:
    """One row per pair (B_i - A_i and its s.e., each metric@k) of `load_pairs`' `[pairs, users]`
    ranks: the seeds or draws behind a pooled figure, so a pooled gain carried by one pair shows."""
    metrics = [(name, k) for k in ks for name in ("recall", "ndcg")]
    lines = ["| pair | B file | " + " | ".join(f"{n}@{k} B - A (s.e.)" for n, k in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for i, name in enumerate(names):
        by_k = {k: paired_difference(rank_a[i], rank_b[i], k) for k in ks}
        cells = [f"{by_k[k][n]['diff']:+.4f} ({by_k[k][n]['se']:.4f})" for n, k in metrics]
        lines.append(f"| {i + 1} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="per-user eval file(s) of run A (jsonl; comma-separated to pool)")
    p.add_argument("--b", required=True, help="per-user eval file(s) of run B, one per A file")
    p.add_argument("--ks", default="5,10,20")
    args = p.parse_args(argv)
    ks = tuple(int(k) for k in args.ks.split(","))
    try:
        paths_b = args.b.split(",")
        rank_a, rank_b = load_pairs(args.a.split(","), paths_b)
        results = [paired_difference(rank_a, rank_b, k) for k in ks]
        if len(rank_a) > 1:
            print(f"pooled over {len(rank_a)} pairs (each user's mean B - A)")
        print(format_table(results))
        if len(rank_a) > 1:
            print("\neach pair alone\n" + per_pair_table(rank_a, rank_b, paths_b, ks))
    except ValueError as e:
        raise SystemExit(f"gream_jax.eval.paired: {e}") from None


if __name__ == "__main__":
    from gream_jax.utils.cli import run_cli
    run_cli(main)
