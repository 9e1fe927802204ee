"""Benchmark: jitted RQ-KMeans (gream_jax) vs scikit-learn KMeans and k-means-constrained.

Same embeddings, same number of levels, codes and max Lloyd iterations (every method may stop
earlier when its labels stop changing). Reports wall time, process CPU time (all threads: the
fairer figure on a machine shared with other jobs) and the final quantisation error
(mean squared residual after the last level) and, for the balanced runs, the cluster-size
range at every level. Not a test: prints a markdown table (and writes it with --out).

    python benchmarks/bench_rq_kmeans.py                     # ML-100k + 200k synthetic
    python benchmarks/bench_rq_kmeans.py --only=ml100k --levels=3 --codes=32
    # one thread each side (fair on a machine shared with other jobs):
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false \
      intra_op_parallelism_threads=1" python benchmarks/bench_rq_kmeans.py --only=synthetic --modes plain

Datasets:
- ml100k: MiniLM (Flax, this repo) embeddings of the 1,682 MovieLens-100k item texts
  (title + genres + year, fused by gream_jax.index.text), from the data layer's loader.
- synthetic: 200k unit-norm 384-d vectors from a 2,000-component Gaussian mixture.
k-means-constrained solves a min-cost flow with n*K arcs per iteration; on 200k x 256 that does
not finish in reasonable time on 2 cores, so it runs on a random subsample (--kmc_max_rows) and
the table says so; ours runs on the same subsample for that row.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

from gream_jax.index import rq_kmeans


def ml100k_embeddings(cache: str) -> np.ndarray:
    if os.path.exists(cache):
        return np.load(cache)
    from gream_jax.config_defaults import base_config
    from gream_jax.data.loaders import load_dataset
    from gream_jax.index import encoder, text

    config = base_config()
    config.data.name = "ml100k"
    config.data.download_timeout_s = 0.0
    data = load_dataset(config)
    texts = text.item_texts(data.items, max_chars=512, review_sentences_per_item=0)
    x = encoder.SentenceEncoder(max_tokens=128).encode(texts)
    np.save(cache, x)
    return x


def synthetic(n: int, d: int, seed: int = 0, components: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((components, d)).astype(np.float32)
    x = centers[rng.integers(0, components, n)] + 0.7 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mse(x, recon):
    return float(np.mean(np.sum((x - recon) ** 2, axis=1)))


def size_range(codes, ks):
    sizes = [np.bincount(codes[:, i], minlength=k) for i, k in enumerate(ks)]
    return f"{min(s.min() for s in sizes)}..{max(s.max() for s in sizes)}"


SETTLE_SHARE = None     # --settle_share; None = rq_kmeans' per-mode default
REPEATS = 1             # --repeats: timed fits per side (median wall / CPU; MSE, sizes, iters of the first)


def run_ours(x, ks, iters, balanced, seed, tol):
    opts = rq_kmeans.KMeansOptions(codes_per_level=tuple(ks), iters=iters, balanced=balanced, tol=tol,
                                   settle_share=SETTLE_SHARE)
    t = time.perf_counter()
    res = rq_kmeans.fit_rq_kmeans(x, opts, seed)
    cold = time.perf_counter() - t
    walls, cpus, res = [], [], None
    for r in range(REPEATS):
        t, cpu = time.perf_counter(), time.process_time()
        fit = rq_kmeans.fit_rq_kmeans(x, opts, seed + 1 + r)   # same shapes: compiled program reused
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - cpu)
        res = res or fit
    warm, warm_cpu = float(np.median(walls)), float(np.median(cpus))
    err = mse(x, rq_kmeans.reconstruct(res.codes, res.codebooks))
    return {"cold_s": cold, "warm_s": warm, "warm_cpu_s": warm_cpu, "mse": err, "sizes": size_range(res.codes, ks),
            "iters": res.lloyd_iters.tolist()}


def run_host(x, ks, iters, seed, constrained: bool, tol):
    """REPEATS fits (seeds seed, seed + 1, ...): median wall / CPU, the first fit's MSE, sizes, iters."""
    runs = [_run_host_once(x, ks, iters, seed + r, constrained, tol) for r in range(REPEATS)]
    return {**runs[0], "wall_s": float(np.median([r["wall_s"] for r in runs])),
            "cpu_s": float(np.median([r["cpu_s"] for r in runs]))}


def _run_host_once(x, ks, iters, seed, constrained: bool, tol):
    residual = x.copy()
    codes, n_iter = [], []
    t, cpu = time.perf_counter(), time.process_time()
    for level, k in enumerate(ks):
        if constrained:
            from k_means_constrained import KMeansConstrained
            n = len(x)
            km = KMeansConstrained(n_clusters=k, size_min=n // k, size_max=-(-n // k), n_init=1,
                                   max_iter=iters, tol=tol, random_state=seed + level, n_jobs=1)
        else:
            from sklearn.cluster import KMeans
            km = KMeans(n_clusters=k, n_init=1, max_iter=iters, tol=tol, random_state=seed + level)
        labels = km.fit_predict(residual)
        residual = residual - km.cluster_centers_[labels].astype(np.float32)
        codes.append(labels)
        n_iter.append(int(km.n_iter_))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    codes = np.stack(codes, axis=1)
    return {"wall_s": wall, "cpu_s": cpu, "mse": float(np.mean(np.sum(residual ** 2, axis=1))),
            "sizes": size_range(codes, ks), "iters": n_iter}


NO_BASELINE = {"wall_s": float("nan"), "cpu_s": float("nan"), "mse": float("nan"), "sizes": "-", "iters": "-"}


def bench(name, x, ks, iters, kmc_max_rows, tol, seed=0, ours_only=False, modes=("plain", "balanced")):
    rows = []
    if "plain" in modes:
        rows += bench_plain(name, x, ks, iters, tol, seed, ours_only)
    if "balanced" in modes:
        rows += bench_balanced(name, x, ks, iters, kmc_max_rows, tol, seed, ours_only)
    return rows


def bench_plain(name, x, ks, iters, tol, seed, ours_only):
    rows = []
    ours = run_ours(x, ks, iters, False, seed, tol)
    sk = NO_BASELINE if ours_only else run_host(x, ks, iters, seed, constrained=False, tol=tol)
    rows.append((f"{name} {x.shape[0]}x{x.shape[1]}, {len(ks)}x{ks[0]}", "plain", "scikit-learn KMeans",
                 sk, ours))
    print(rows[-1], flush=True)
    return rows


def bench_balanced(name, x, ks, iters, kmc_max_rows, tol, seed, ours_only):
    rows = []
    xb = x
    note = ""
    if x.shape[0] > kmc_max_rows and not ours_only:
        idx = np.random.default_rng(seed).choice(x.shape[0], kmc_max_rows, replace=False)
        xb = x[np.sort(idx)]
        note = f" (subsample {kmc_max_rows} of {x.shape[0]})"
    ours_b = run_ours(xb, ks, iters, True, seed, tol)
    kmc = NO_BASELINE if ours_only else run_host(xb, ks, iters, seed, constrained=True, tol=tol)
    rows.append((f"{name} {xb.shape[0]}x{x.shape[1]}, {len(ks)}x{ks[0]}{note}", "balanced",
                 "k-means-constrained", kmc, ours_b))
    print(rows[-1], flush=True)
    return rows


def table(rows, iters, tol, load_start):
    out = ["| data | mode | baseline | baseline wall (CPU) s | ours cold / warm wall (warm CPU) s "
           "| speed-up wall cold / warm (CPU warm) "
           "| baseline MSE | ours MSE | MSE change | sizes baseline / ours | Lloyd iters baseline / ours |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for data, mode, base_name, base, ours in rows:
        base_name = "(none)" if base is NO_BASELINE else base_name
        out.append(f"| {data} | {mode} | {base_name} | {base['wall_s']:.2f} ({base['cpu_s']:.1f}) | "
                   f"{ours['cold_s']:.2f} / {ours['warm_s']:.2f} ({ours['warm_cpu_s']:.1f}) | "
                   f"{base['wall_s'] / ours['cold_s']:.1f}x / {base['wall_s'] / ours['warm_s']:.1f}x "
                   f"({base['cpu_s'] / ours['warm_cpu_s']:.1f}x) | {base['mse']:.5f} | {ours['mse']:.5f} | "
                   f"{100 * (ours['mse'] / base['mse'] - 1):+.2f}% | {base['sizes']} / {ours['sizes']} | "
                   f"{base['iters']} / {ours['iters']} |")
    import jax
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out.append(f"\nmax Lloyd iterations per level: {iters}, tol {tol} (all methods); ours also stops "
               f"once <= {SETTLE_SHARE if SETTLE_SHARE is not None else rq_kmeans.BALANCED_SETTLE_SHARE} "
               f"(balanced) / {SETTLE_SHARE or 0} (plain) of its labels changed on "
               f"{rq_kmeans.KMeansOptions(codes_per_level=(1,)).settle_patience} consecutive steps; "
               f"times: median of {REPEATS} fit(s) per side (ours warm); MSE, sizes, iterations of the first; "
               f"{platform.machine()}, "
               f"{cores} usable CPU cores, 1-min load average {load_start:.1f} at start, "
               f"{os.getloadavg()[0]:.1f} at end; ours on jax "
               f"{jax.__version__} {jax.default_backend()} ({jax.devices()[0].device_kind}); "
               f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["ml100k", "synthetic", "all"], default="all")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codes", type=int, nargs="+", default=[32, 256], help="codes per level (one run each)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--tol", type=float, default=1e-4, help="relative center-shift tolerance, all methods")
    p.add_argument("--synthetic_rows", type=int, default=200_000)
    p.add_argument("--synthetic_codes", type=int, default=256)
    p.add_argument("--kmc_max_rows", type=int, default=10_000)
    p.add_argument("--cache", default="/tmp/gream_bench_ml100k_minilm.npy")
    p.add_argument("--out", default="")
    p.add_argument("--ours_only", action="store_true", help="skip the host baselines (e.g. on a GPU)")
    p.add_argument("--modes", nargs="+", choices=["plain", "balanced"], default=["plain", "balanced"])
    p.add_argument("--settle_share", type=float, default=None,
                   help="ours: stop a level once <= this share of labels changed (default: balanced "
                        f"{rq_kmeans.BALANCED_SETTLE_SHARE}, plain 0 = labels unchanged)")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed fits per side (ours: warm fits; host: fits), median reported; MSE of the first")
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats={args.repeats}: must be >= 1")
    global SETTLE_SHARE, REPEATS
    SETTLE_SHARE = args.settle_share
    REPEATS = args.repeats
    load_start = os.getloadavg()[0]
    rows = []
    if args.only in ("ml100k", "all"):
        x = ml100k_embeddings(args.cache)
        for k in args.codes:
            rows += bench("ML-100k MiniLM", x, [k] * args.levels, args.iters, args.kmc_max_rows, args.tol,
                          ours_only=args.ours_only, modes=args.modes)
    if args.only in ("synthetic", "all"):
        x = synthetic(args.synthetic_rows, 384)
        rows += bench("synthetic", x, [args.synthetic_codes] * args.levels, args.iters, args.kmc_max_rows,
                      args.tol, ours_only=args.ours_only, modes=args.modes)
    text = table(rows, args.iters, args.tol, load_start)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
