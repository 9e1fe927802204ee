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


DRAW_BLOCK = 64
SLICED_TAKE_MAX = 16


def _take_rows(table: jax.Array, idx: jax.Array) -> jax.Array:
    """`table[idx]` for idx `[t]`: one dynamic row slice each when t is small (the seeding loop's
    handful of candidates; XLA:CPU's generic gather cost twice as much there), else a gather."""
    if idx.shape[0] > SLICED_TAKE_MAX:
        return table[idx]
    return jnp.stack([jax.lax.dynamic_index_in_dim(table, idx[j], keepdims=False) for j in range(idx.shape[0])])


def draw_rows(u: jax.Array, weights: jax.Array, valid: jax.Array, block: int = DRAW_BLOCK) -> jax.Array:
    """Row indices drawn with probability proportional to `weights [m]` (>= 0) by inverse-CDF
    sampling, one per uniform in `u [t]` (values in [0, 1)); uniform over the `valid` rows when
    every weight is 0 (all rows duplicate the chosen centres). Rows of weight 0 are never drawn.

    Two-level search, because the seeding loop draws once per step (K - 1 steps per level) and
    XLA:CPU's running sum over all m rows cost more than the rest of the step: the running sum
    of the `[m / block]` block totals picks each draw's block, then the running sum inside that
    one block (a `[t, block] x [block, block]` product with a triangular matrix of ones) picks
    the row. ML-100k (1,728 rows, K=256): a level's seeding loop 9.3 -> 3.6 ms. Falls back to
    one running sum when m is not a multiple of `block`."""
    m = weights.shape[0]
    use = jnp.where(jnp.sum(weights) > 0, weights, valid.astype(weights.dtype))
    # Counts in float32 (exact below 2^24): XLA:CPU vectorises a float sum, not an int32 one.
    count_below = lambda cum, v: jnp.sum((cum[None, :] <= v[:, None]).astype(jnp.float32), axis=1).astype(jnp.int32)
    # The last row of positive weight: rounding can put a draw past the end of the mass, and it
    # must then land on a drawable row, never on padding.
    last_positive = lambda v: jnp.max(jnp.where(v > 0, jnp.arange(v.shape[-1]), 0), axis=-1)
    if m % block or m <= block:
        cum = jnp.cumsum(use)
        return jnp.minimum(count_below(cum, u * cum[-1]), last_positive(use))
    blocks = use.reshape(m // block, block)                               # [nb, block]
    totals = jnp.sum(blocks, axis=1)                                      # [nb]
    cum_blocks = jnp.cumsum(totals)
    target = u * cum_blocks[-1]                                           # [t]
    b = jnp.minimum(count_below(cum_blocks, target), last_positive(totals))
    rest = target - (cum_blocks[b] - totals[b])                           # mass left inside block b
    rows = _take_rows(blocks, b)                                          # [t, block]
    within = rows @ jnp.triu(jnp.ones((block, block), use.dtype))         # [t, block] running sums
    r = jnp.minimum(jnp.sum((within <= rest[:, None]).astype(jnp.float32), axis=1).astype(jnp.int32),
                    last_positive(rows))
    return b * block + r


def gram_sq_dists(gram: jax.Array, w: jax.Array) -> jax.Array:
    """Squared distances between all rows from their Gram matrix `[m, m]`, zero in padding
    columns (w == 0), so a padded row never adds to the D^2 potential: `[m, m]`."""
    xx = jnp.diagonal(gram)
    return jnp.maximum(xx[:, None] - 2.0 * gram + xx[None, :], 0.0) * w[None, :]


def residual_gram(gram: jax.Array, dots: jax.Array, center_gram: jax.Array, assign: jax.Array,
                  w: jax.Array) -> jax.Array:
    """The Gram matrix of the next level's residuals `r' = (r - C[a]) w` from this level's:
    r'_i . r'_j = G_ij - D_i,a_j - D_j,a_i + E_a_i,a_j (times w_i w_j), with D = r C^T `[m, K]`
    and E = C C^T `[K, K]`. Gathers instead of a `[m, d] x [d, m]` product: on ML-100k
    (1,728 x 384, K=256) 4 ms against 13 ms. gram `[m, m]`, assign `[m]` -> `[m, m]`."""
    cross = jnp.take(dots, assign, axis=1)                                  # [m, m]: D_i,a_j
    return (gram - cross - cross.T + center_gram[assign][:, assign]) * (w[:, None] * w[None, :])


def kmeans_plusplus(x: jax.Array, w: jax.Array, key: jax.Array, k: int, n_trials: int,
                    gram: bool | jax.Array = False) -> jax.Array:
    """Greedy k-means++ (as scikit-learn): each step draws `n_trials` candidates with probability
    proportional to D^2 and keeps the one that lowers the potential most.

    x `[m, d]`, w `[m]` (1 = real row, 0 = padding) -> centroids `[k, d]`.
    `gram=True` computes the Gram matrix `x x^T [m, m]` once (or `gram` is that matrix, e.g. from
    `residual_gram`), and with it all squared distances, so a step reads `n_trials` rows of
    them instead of a skinny `[n_trials, d] x [d, m]` product that re-reads all of x: worth it
    when the sample is small relative to K (same FLOPs at m = k * n_trials, but one large
    matmul instead of k bandwidth-bound ones; ML-100k 1,792 rows, K=256: 100 -> 20 CPU-ms).
    """
    valid = w > 0
    if gram is not False:
        dist = gram_sq_dists(x @ x.T if gram is True else gram, w)        # [m, m], once

        def sq_dists_to(idx):                                             # [t] -> [t, m]
            return _take_rows(dist, idx)
    else:
        xx = jnp.sum(x * x, axis=1)                                       # [m], once
        xt = x.T                                                          # [d, m], once

        def sq_dists_to(idx):                                             # [t] -> [t, m]
            rows = _take_rows(x, idx)
            rr = xx[idx]
            return jnp.maximum(rr[:, None] - 2.0 * rows @ xt + xx[None, :], 0.0) * w[None, :]

    uniforms = jax.random.uniform(key, (k, n_trials))                     # all draws, once
    first = draw_rows(uniforms[0, :1], jnp.zeros_like(w), valid)
    d2 = sq_dists_to(first)[0]
    chosen = jnp.zeros((k,), jnp.int32).at[0].set(first[0])

    def body(i, state):
        chosen, d2 = state
        cand = draw_rows(uniforms[i], d2, valid)                         # [t]
        new_d2 = jnp.minimum(d2[None, :], sq_dists_to(cand))              # [t, m]
        best = jnp.argmin(jnp.sum(new_d2, axis=1))                        # over t potentials
        return chosen.at[i].set(cand[best]), new_d2[best]

    chosen, _ = jax.lax.fori_loop(1, k, body, (chosen, d2))
    return x[chosen]
