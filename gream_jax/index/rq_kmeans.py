"""Residual k-means (RQ-KMeans), plain or balanced, as one jitted JAX program.

Why not scikit-learn / faiss / k-means-constrained on the host: the whole residual quantiser
(k-means++ seeding, Lloyd iterations, the balanced assignment and the residual update of every
level) compiles to one XLA program that runs on whatever devices the mesh holds, with the item
dimension sharded over the mesh's data axes (logical axis "items"). Pieces:
- `kmeans_seeding`: greedy k-means++ on a row subsample (memory-bound, so kept small; through
  the sample's Gram matrix when the sample is small relative to K);
- `_nearest` (here): the plain assignment, a blocked distance matmul + min, the FLOP-bound part;
- `balanced_assign`: the balanced mode's on-device replacement for the reference release's
  min-cost-flow solver (warm-started Sinkhorn prices + an exact capacity repair).
Each level ends with an M-step, so every codebook is the mean of its codes' rows.

Deterministic for a seed. Results do not depend on the mesh: inputs are padded to a multiple of
256 rows (64 for small inputs; `padded_rows`) whatever the device count, so random draws have the
same shape everywhere, and padded rows carry weight 0 and stay zero. Shapes: items `[n, d]`, centroids `[K, d]`, costs `[n, K]`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gream_jax import mesh as mesh_lib
from gream_jax.index import balanced_assign as balanced
from gream_jax.index import kmeans_seeding as seeding
from gream_jax.index.balanced_assign import balanced_capacities, capacity_assign, sinkhorn_prices  # noqa: F401

PAD_MULTIPLE = 256
SMALL_PAD_MULTIPLE = 64
GRAM_FLOP_RATIO = 4
# Balanced mode's default `settle_share`. Plain mode keeps 0: there label changes are Lloyd's
# real progress (synthetic 200k x 384, 3x256: 0.0075 cut level 1 from 17 to 6 steps and cost
# +0.34% MSE), while balanced labels flip-flop on capacity ties at a settled error. Measured on
# ML-100k MiniLM, 10 seeds, <= 20 steps, balanced (`settle_share`/`settle_patience`: mean MSE,
# mean Lloyd steps of 3 levels): 3x256 0/- 0.17239, 35.9; 0.005/2 0.17241, 22.8; 0.0075/1 0.17283,
# 17.0. 3x32: 0/- 0.33396, 59.4; 0.005/2 0.33416, 53.7; 0.0075/1 0.33446, 47.0. Raised to 0.01/2
# (docs/benchmarks.md, session 7; 11 seeds, paired): 3x32 54.8 -> 46.0 steps, MSE +0.17% (s.e.
# 0.10%), fit 0.89x; 3x256 22.3 -> 17.5 steps, +0.20% (s.e. 0.16%), 0.92x.
BALANCED_SETTLE_SHARE = 0.01
# Balanced mode's greedy k-means++ candidates per step (plain mode keeps scikit-learn's 2 + ln K).
# ML-100k 3x32 (direct-distance seeding, 11 seeds): 5 -> 3 trials cut the fit 0.90x at MSE -0.09%
# (s.e. 0.12%); 3x256 (Gram seeding): no time change, +0.12% (s.e. 0.17%).
BALANCED_INIT_TRIALS = 3


@dataclasses.dataclass(frozen=True)
class KMeansOptions:
    """Static settings of one RQ-KMeans fit (hashable: they key the jit cache)."""

    codes_per_level: tuple[int, ...]
    iters: int = 50                  # max Lloyd iterations per level (stops early when labels settle)
    balanced: bool = False
    balance_slack: int = 0           # cluster sizes within [floor(n/K) - slack, ceil(n/K) + slack]
    sinkhorn_iters: int = 20         # on the first Lloyd step (cold prices)
    sinkhorn_warm_iters: int = 1     # on every later step (prices warm-started from the last step)
    sinkhorn_epsilon: float = 0.02   # entropic regularisation, relative to the mean cost
    init_trials: int = 0             # greedy k-means++ candidates per step; 0 = 2 + ln(K) (sklearn),
                                     # at most BALANCED_INIT_TRIALS if balanced
    init_sample_per_code: int = 64   # k-means++ runs on <= this many points per code; 0 = all
    tol: float = 1e-4                # stop when the centers move less (scikit-learn's relative tol)
    stay_bonus: float = 1e-3         # balanced: cost bonus (relative to the mean) for keeping a label
    settle_share: float | None = None  # also stop once <= this share of rows changed label;
                                       # None: BALANCED_SETTLE_SHARE if balanced, else 0 (none changed)
    settle_patience: int = 2         # ... on this many consecutive steps
    init_gram_rows: int = 4096       # k-means++ via the sample's Gram matrix when it has <= this many rows


@dataclasses.dataclass
class RQResult:
    codes: np.ndarray                # [n, L] int32
    codebooks: list[np.ndarray]      # L arrays [K_l, d] float32
    level_mse: np.ndarray            # [L] mean squared residual after each level
    lloyd_iters: np.ndarray          # [L] Lloyd iterations actually run per level


# ----------------------------------------------------------------------------- distances

def _nearest_block(x: jax.Array, c: jax.Array, cc: jax.Array, xx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest centroid of each row of a small block x `[m, d]` with squared norms xx `[m]`:
    (`[m]` int32, `[m]` squared distance).

    Ranks rows by `|c|^2 - 2 x.c` (|x|^2 does not change the order) and finds the first index
    attaining the row minimum as the smallest index whose score equals the minimum: XLA:CPU
    lowers `argmin` to a two-operand reduction that cost ~40% on top of the distance matmul at
    200k x 256 x 384, and `argmax(s <= min)` to one that cost ~20% more than this plain min.
    """
    k = c.shape[0]
    s = cc[None, :] - 2.0 * (x @ c.T)                                    # [m, K]
    m = jnp.min(s, axis=1)
    a = jnp.min(jnp.where(s <= m[:, None], jnp.arange(k, dtype=jnp.int32)[None, :], k - 1), axis=1)
    return a, jnp.maximum(m + xx, 0.0)


# A `[rows, K]` distance tile of at most this many floats (4 MiB) is reduced in one block: below
# it the loop's per-block overhead costs more than the cache misses it avoids (ML-100k, 1,792
# rows: K=32 1.24 -> 0.66 ms per pass, K=256 3.35 -> 2.45 ms).
SINGLE_BLOCK_FLOATS = 1 << 20


def _block_rows(n_local: int, k: int = 1, target: int = 512) -> int:
    """Rows per distance block: all of n_local when the `[n_local, K]` tile is small
    (SINGLE_BLOCK_FLOATS), else the largest power of two <= target dividing n_local (rows are
    padded to a multiple of 256)."""
    if n_local * k <= SINGLE_BLOCK_FLOATS:
        return n_local
    b = 1
    while b * 2 <= target and n_local % (b * 2) == 0:
        b *= 2
    return b


def _nearest(x: jax.Array, c: jax.Array, row_shards: int = 1, xx: jax.Array | None = None
             ) -> tuple[jax.Array, jax.Array]:
    """Index and squared distance of each row's nearest centroid; `[n]`, `[n]`. `xx [n]`: the rows'
    squared norms when the caller has them (a Lloyd loop computes them once per level).

    Runs block by block (`lax.map` over blocks of <= 512 rows), so each `[block, K]` distance
    tile is reduced while it is still in cache instead of writing and re-reading an `[n, K]`
    array (measured: 0.43 vs 0.51 CPU-s per pass at 200k x 256 x 384). The rows are viewed as
    `[row_shards, blocks, block, d]` and the loop runs over the middle axis, so with rows sharded
    over `row_shards` devices every device walks its own blocks.
    """
    n, d = x.shape
    block = _block_rows(n // row_shards, c.shape[0])
    xx = jnp.sum(x * x, axis=1) if xx is None else xx
    xb = x.reshape(row_shards, n // (row_shards * block), block, d).swapaxes(0, 1)
    xxb = xx.reshape(row_shards, n // (row_shards * block), block).swapaxes(0, 1)
    cc = jnp.sum(c * c, axis=-1)
    a, dist = jax.lax.map(lambda blk: _nearest_block(blk[0].reshape(-1, d), c, cc, blk[1].reshape(-1)),
                          (xb, xxb))
    unblock = lambda v: v.reshape(-1, row_shards, block).swapaxes(0, 1).reshape(n)  # noqa: E731
    return unblock(a), unblock(dist)


# ----------------------------------------------------------------------------- Lloyd

def _update_centers(x, w, assign, dist, centers):
    """Means of the assigned rows; an empty cluster is re-seeded with the farthest rows.

    x's padding rows are zero (the caller keeps them so), so the sums need no weighting: an
    `x * w` operand made XLA:CPU's scatter 6x slower. `dist` = the rows' squared distances to
    their centres, or None: then computed from `centers` only when a cluster is empty."""
    k = centers.shape[0]
    sums = jax.ops.segment_sum(x, assign, num_segments=k)
    counts = jax.ops.segment_sum(w, assign, num_segments=k)
    new = sums / jnp.maximum(counts, 1.0)[:, None]
    empty = counts == 0

    def reseed(new):
        d = jnp.sum((x - centers[assign]) ** 2, axis=1) if dist is None else dist
        far = jax.lax.top_k(d * w, min(k, x.shape[0]))[1]
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, far.shape[0] - 1)
        return jnp.where(empty[:, None], x[far[rank]], new)

    return jax.lax.cond(jnp.any(empty), reseed, lambda c: c, new)


def _seeding_plan(n: int, k: int, opts: KMeansOptions) -> tuple[int, int, bool]:
    """(rows the k-means++ seeding sees, greedy trials, whether it goes through the Gram matrix)."""
    trials = 2 + int(math.log(k))
    trials = opts.init_trials or (min(trials, BALANCED_INIT_TRIALS) if opts.balanced else trials)
    sample = n if not opts.init_sample_per_code else min(n, opts.init_sample_per_code * k)
    return sample, trials, sample <= min(opts.init_gram_rows, GRAM_FLOP_RATIO * k * trials)


def _carries_gram(n: int, opts: KMeansOptions) -> bool:
    """True when every level seeds on all n rows through the Gram matrix: then each level's Gram
    matrix is derived from the previous one (`kmeans_seeding.residual_gram`) instead of a new
    `[n, d] x [d, n]` product."""
    return all(sample >= n and gram for sample, _, gram in
               (_seeding_plan(n, k, opts) for k in opts.codes_per_level))


def kmeans_level(x, w, key, k: int, opts: KMeansOptions, row_shards: int = 1, gram=None):
    """One level: seeding + Lloyd. Returns (centers [k,d], assign [n], Lloyd updates run).
    x's padding rows (w == 0) must be zero; `gram` = x x^T `[n, n]` when the caller has it."""
    n = x.shape[0]
    sample, trials, use_gram = _seeding_plan(n, k, opts)
    key_sample, key_init = jax.random.split(key)
    xs, ws = (x, w) if sample >= n else seeding.init_subsample(x, w, key_sample, sample)
    if gram is not None and sample >= n:
        use_gram = gram
    centers = seeding.kmeans_plusplus(xs, ws, key_init, k, trials, gram=use_gram)

    stats = balanced.row_stats(x, w)         # row norms and mean row: constant within a level

    def assign(centers, g, prev, sink_iters):
        if opts.balanced:
            return balanced.balanced_assign(x, centers, w, g, prev, sink_iters,
                                            opts.sinkhorn_epsilon, opts.stay_bonus, opts.balance_slack,
                                            stats, distances=False)
        a, d = _nearest(x, centers, row_shards, stats[0])
        return a, d, g

    # One assignment per step (traced once): labels from the current centers. Stop when no label
    # changed (then they are consistent with the centers), when at most `settle_share` of the rows
    # changed on `settle_patience` consecutive steps, after `iters` updates, or one step after the
    # centers moved less than tol * mean feature variance (scikit-learn's rule); otherwise move
    # the centers to the means. Why a share: in balanced mode near-tied rows keep flip-flopping
    # for many steps while the error has settled (see BALANCED_SETTLE_SHARE).
    var = jnp.sum(w[:, None] * x, axis=0) / jnp.maximum(jnp.sum(w), 1.0)
    var = jnp.sum(w[:, None] * (x - var) ** 2, axis=0) / jnp.maximum(jnp.sum(w), 1.0)
    tol = opts.tol * jnp.mean(var)
    share = opts.settle_share if opts.settle_share is not None else (
        BALANCED_SETTLE_SHARE if opts.balanced else 0.0)
    settle_rows = share * jnp.sum(w)

    def cond(state):
        return ~state[4]

    def body(state, sink_iters):
        it, centers, prev, g, _, settled, calm = state
        a, d, g = assign(centers, g, prev, sink_iters)
        changed = jnp.sum(((a != prev) & (w > 0)).astype(jnp.float32))
        calm = jnp.where(changed <= settle_rows, calm + 1, 0)
        done = (calm >= opts.settle_patience) | (changed == 0) | (it >= opts.iters) | settled
        new = _update_centers(x, w, a, d, centers)
        settled = jnp.sum((new - centers) ** 2) <= tol
        centers = jnp.where(done, centers, new)
        return it + jnp.where(done, 0, 1), centers, a, g, done, settled, calm

    g0 = jnp.zeros((k,), jnp.float32)
    init = (jnp.int32(0), centers, jnp.full((n,), -1, jnp.int32), g0, jnp.bool_(False), jnp.bool_(False),
            jnp.int32(0))
    if opts.balanced:
        # The first step (cold prices: `sinkhorn_iters`) is peeled off the loop, so every later
        # step runs a fixed `sinkhorn_warm_iters` (unrolled, no inner loop); the loop's first
        # `cond` is always true, so this is the same sequence of steps.
        state = body(init, opts.sinkhorn_iters)
        state = jax.lax.while_loop(cond, functools.partial(body, sink_iters=opts.sinkhorn_warm_iters), state)
    else:
        state = jax.lax.while_loop(cond, functools.partial(body, sink_iters=0), init)
    it, centers, a, g, _, _, _ = state
    # Final M-step: the codebook becomes the mean of each code's rows, the error-minimising
    # codebook for the final codes (O(n d), no distance pass; an empty code keeps its centre).
    sums = jax.ops.segment_sum(x, a, num_segments=k)
    counts = jax.ops.segment_sum(w, a, num_segments=k)
    centers = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centers)
    return centers, a, it


def _level_step(residual, gram, w, key, k, opts, row_shards, next_gram):
    """One level and its residual update. gram: the residuals' Gram matrix `[n, n]` or None;
    `next_gram` (a bool, possibly traced) says whether to derive the next level's."""
    centers, a, it = kmeans_level(residual, w, key, k, opts, row_shards, gram)
    if gram is not None:
        # The next level's Gram matrix from this one: D = r C^T [n, K], E = C C^T [K, K].
        gram = jax.lax.cond(
            next_gram,
            lambda g: seeding.residual_gram(g, residual @ centers.T, centers @ centers.T, a, w),
            jnp.zeros_like, gram)
    residual = (residual - centers[a]) * w[:, None]          # padding rows stay zero
    mse = jnp.sum(jnp.sum(residual * residual, axis=1) * w) / jnp.maximum(jnp.sum(w), 1.0)
    return residual, gram, (a, centers, mse, it)


@functools.partial(jax.jit, static_argnames=("opts", "row_shards"))
def _rq_fit(x, w, key, opts: KMeansOptions, row_shards: int = 1):
    ks = opts.codes_per_level
    gram = x @ x.T if _carries_gram(x.shape[0], opts) else None          # [n, n] or None
    if len(set(ks)) == 1:
        # Equal codebook sizes: one scanned level body, so compile time does not grow with L.
        def step(carry, level):
            residual, gram = carry
            residual, gram, out = _level_step(residual, gram, w, jax.random.fold_in(key, level), ks[0], opts,
                                              row_shards, level < len(ks) - 1)
            return (residual, gram), out

        _, (codes, books, mse, iters) = jax.lax.scan(step, (x, gram), jnp.arange(len(ks)))
        return codes.T, tuple(books[i] for i in range(len(ks))), mse, iters
    residual, outs = x, []
    for level, k in enumerate(ks):
        residual, gram, out = _level_step(residual, gram, w, jax.random.fold_in(key, level), k, opts, row_shards,
                                          level < len(ks) - 1)
        outs.append(out)
    codes, books, mse, iters = zip(*outs)
    return jnp.stack(codes, axis=1), tuple(books), jnp.stack(mse), jnp.stack(iters)


def padded_rows(n: int, data_parallel: int, max_codes: int = 0) -> int:
    """Rows after padding, the same for any mesh of up to 64 data-parallel devices: a multiple of
    256 (and of the data-parallel size), so the blocked distance loop finds power-of-two blocks;
    or of SMALL_PAD_MULTIPLE when the whole `[rows, max_codes]` distance tile is one block anyway
    (`_block_rows`), so small inputs carry fewer zero rows (ML-100k: 1,682 -> 1,728 rows, not
    1,792: 3.6% less work per pass and 7% less for the seeding's Gram matrix)."""
    small = -(-n // SMALL_PAD_MULTIPLE) * SMALL_PAD_MULTIPLE
    base = SMALL_PAD_MULTIPLE if 0 < max_codes and small * max_codes <= SINGLE_BLOCK_FLOATS else PAD_MULTIPLE
    multiple = base * data_parallel // math.gcd(base, data_parallel)
    return -(-n // multiple) * multiple


def fit_rq_kmeans(x: np.ndarray, opts: KMeansOptions, seed: int, mesh=None,
                  rules=mesh_lib.DEFAULT_RULES) -> RQResult:
    """Fits L levels of (balanced) residual k-means on `x [n, d]`; item rows sharded on `mesh`."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"rq_kmeans: embeddings must be a finite [n, d] array, got shape {x.shape}")
    n = x.shape[0]
    if opts.settle_share is not None and not 0.0 <= opts.settle_share <= 1.0:
        raise ValueError(f"rq_kmeans: settle_share must be in [0, 1], got {opts.settle_share}")
    if opts.settle_patience < 1:
        raise ValueError(f"rq_kmeans: settle_patience must be >= 1, got {opts.settle_patience}")
    for level, k in enumerate(opts.codes_per_level):
        if k < 1 or k > n:
            raise ValueError(f"rq_kmeans: level {level} asks for {k} codes but there are {n} items")
    dp = mesh_lib.data_parallel_size(mesh, rules) if mesh is not None else 1
    n_pad = padded_rows(n, dp, max(opts.codes_per_level))
    xp = np.zeros((n_pad, x.shape[1]), np.float32)
    xp[:n] = x
    wp = (np.arange(n_pad) < n).astype(np.float32)
    if mesh is not None:
        xs = jax.device_put(xp, mesh_lib.logical_sharding(mesh, ("items", "features"), rules))
        ws = jax.device_put(wp, mesh_lib.logical_sharding(mesh, ("items",), rules))
    else:
        xs, ws = jnp.asarray(xp), jnp.asarray(wp)
    logging.info("rq_kmeans: %d items x %d dims, levels %s, balanced=%s, <= %d Lloyd iterations per level "
                 "(one compiled program; no per-step progress)", n, x.shape[1], opts.codes_per_level,
                 opts.balanced, opts.iters)
    start = time.perf_counter()
    codes, books, mse, iters = _rq_fit(xs, ws, jax.random.PRNGKey(seed), opts, dp)
    mse = np.asarray(mse)
    logging.info("rq_kmeans: done in %.1f s; Lloyd iterations per level %s; MSE per level %s",
                 time.perf_counter() - start, np.asarray(iters).tolist(), np.round(mse, 5).tolist())
    return RQResult(codes=np.asarray(codes)[:n].astype(np.int32),
                    codebooks=[np.asarray(b) for b in books],
                    level_mse=np.asarray(mse), lloyd_iters=np.asarray(iters))


def reconstruct(codes: np.ndarray, codebooks: list[np.ndarray], levels: int | None = None) -> np.ndarray:
    """Sum of the first `levels` centroids of each row: `[n, d]`."""
    levels = len(codebooks) if levels is None else levels
    out = np.zeros((codes.shape[0], codebooks[0].shape[1]), np.float32)
    for level in range(levels):
        out += codebooks[level][codes[:, level]]
    return out
