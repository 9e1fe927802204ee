"""k-means++ seeding for the jitted RQ-KMeans (see rq_kmeans.py), on a uniform row subsample.

Why a subsample: seeding is K sequential passes over the rows it sees, each a skinny
`[trials, m] x [m, d]` product that is bound by memory bandwidth, not FLOPs; on all 200k rows it
would cost more than the Lloyd iterations it saves. As faiss does, it runs on a few dozen rows
per code (`KMeansOptions.init_sample_per_code`). Candidates are drawn by inverse-CDF sampling on
the running D^2 sum (as scikit-learn does) rather than a Gumbel draw per row, so a step costs one
pass over the sample, and row norms are computed once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_subsample(x: jax.Array, w: jax.Array, key: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """`size` distinct rows chosen uniformly, valid rows first (padding is never picked while
    enough real rows exist). x `[n, d]`, w `[n]` -> (`[size, d]`, `[size]`)."""
    u = jax.random.uniform(key, w.shape) + (1.0 - w) * 2.0
    idx = jnp.argsort(u)[:size]
    return x[idx], w[idx]


def _draw(key: jax.Array, weights: jax.Array, valid: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Row indices drawn with probability proportional to `weights [m]` (>= 0); uniform over the
    `valid` rows when every weight is 0 (all rows duplicate the chosen centres)."""
    total_w = jnp.sum(weights)
    use = jnp.where(total_w > 0, weights, valid.astype(weights.dtype))
    cum = jnp.cumsum(use)
    u = jax.random.uniform(key, shape) * cum[-1]
    # First row whose running sum exceeds u: rows of weight 0 are never drawn.
    return jnp.minimum(jnp.sum(cum[None, :] <= u.reshape(-1, 1), axis=1), weights.shape[0] - 1).reshape(
        shape).astype(jnp.int32)


def kmeans_plusplus(x: jax.Array, w: jax.Array, key: jax.Array, k: int, n_trials: int,
                    gram: bool = False) -> jax.Array:
    """Greedy k-means++ (as scikit-learn): each step draws `n_trials` candidates with probability
    proportional to D^2 and keeps the one that lowers the potential most.

    x `[m, d]`, w `[m]` (1 = real row, 0 = padding) -> centroids `[k, d]`.
    `gram=True` computes the Gram matrix `x x^T [m, m]` once, so a step gathers `n_trials` rows
    of it instead of a skinny `[n_trials, d] x [d, m]` product that re-reads all of x: worth it
    when the sample is small relative to K (same FLOPs at m = k * n_trials, but one large
    matmul instead of k bandwidth-bound ones; ML-100k 1,792 rows, K=256: 100 -> 20 CPU-ms).
    """
    valid = w > 0
    xx = jnp.sum(x * x, axis=1)                                           # [m], once
    if gram:
        g = x @ x.T                                                       # [m, m], once

        def sq_dists_to(idx):                                             # [t] -> [t, m]
            return jnp.maximum(xx[idx][:, None] - 2.0 * g[idx] + xx[None, :], 0.0) * w[None, :]
    else:
        def sq_dists_to(idx):                                             # [t] -> [t, m]
            rows = x[idx]
            rr = jnp.sum(rows * rows, axis=1)
            return jnp.maximum(rr[:, None] - 2.0 * rows @ x.T + xx[None, :], 0.0) * w[None, :]

    key, sub = jax.random.split(key)
    first = _draw(sub, jnp.zeros_like(w), valid, (1,))
    d2 = sq_dists_to(first)[0]
    chosen = jnp.zeros((k,), jnp.int32).at[0].set(first[0])

    def body(i, state):
        chosen, d2, key = state
        key, sub = jax.random.split(key)
        cand = _draw(sub, d2, valid, (n_trials,))
        new_d2 = jnp.minimum(d2[None, :], sq_dists_to(cand))              # [t, m]
        best = jnp.argmin(jnp.sum(new_d2, axis=1))
        return chosen.at[i].set(cand[best]), new_d2[best], key

    chosen, _, _ = jax.lax.fori_loop(1, k, body, (chosen, d2, key))
    return x[chosen]
