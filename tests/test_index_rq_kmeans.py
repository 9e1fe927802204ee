"""RQ-KMeans: recovers separated clusters, balanced capacities hold, mesh-independent results."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.index import rq_kmeans as rq


def _blobs(n_per, centers, seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + scale * rng.standard_normal((n_per, len(c))) for c in centers])
    labels = np.repeat(np.arange(len(centers)), n_per)
    perm = rng.permutation(len(x))
    return x[perm].astype(np.float32), labels[perm]


def _same_partition(a, b):
    """True when two labelings induce the same partition (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_separated_clusters_recovered():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((6, 8)) * 5
    x, labels = _blobs(40, centers)
    res = rq.fit_rq_kmeans(x, rq.KMeansOptions(codes_per_level=(6,), iters=30), seed=0)
    assert _same_partition(res.codes[:, 0], labels)
    assert res.level_mse[0] < 0.05 * 8 * 1.5


def test_residual_levels_reduce_error_and_deterministic():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    opts = rq.KMeansOptions(codes_per_level=(8, 8, 8), iters=20)
    a = rq.fit_rq_kmeans(x, opts, seed=3)
    b = rq.fit_rq_kmeans(x, opts, seed=3)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert np.all(np.diff(a.level_mse) < 0)
    # level_mse matches the reconstruction from the returned codebooks
    recon = rq.reconstruct(a.codes, a.codebooks)
    np.testing.assert_allclose(np.mean(np.sum((x - recon) ** 2, 1)), a.level_mse[-1], rtol=1e-4)


@pytest.mark.parametrize("n,k,slack", [(203, 8, 0), (100, 7, 1)])
def test_balanced_capacities_respected(n, k, slack):
    rng = np.random.default_rng(n)
    # Very unbalanced data: one dense blob plus a few scattered points.
    x = np.concatenate([rng.standard_normal((n - 20, 4)) * 0.1,
                        rng.standard_normal((20, 4)) * 5]).astype(np.float32)
    opts = rq.KMeansOptions(codes_per_level=(k, k), iters=15, balanced=True, balance_slack=slack)
    res = rq.fit_rq_kmeans(x, opts, seed=0)
    for level in range(2):
        sizes = np.bincount(res.codes[:, level], minlength=k)
        assert sizes.sum() == n
        assert sizes.min() >= n // k - slack, sizes
        assert sizes.max() <= -(-n // k) + slack, sizes


def test_balanced_assignment_prefers_cheap_clusters():
    # Two clear groups of 4, capacities 4/4: the greedy repair must not mix them.
    cost = jnp.asarray([[0.0, 9.0]] * 4 + [[9.0, 0.0]] * 4, jnp.float32)
    w = jnp.ones((8,), jnp.float32)
    a = rq.capacity_assign(cost, w, jnp.asarray([4, 4]))
    np.testing.assert_array_equal(np.asarray(a), [0, 0, 0, 0, 1, 1, 1, 1])
    # All prefer cluster 0 but it holds 3: the 3 cheapest win it.
    cost = jnp.asarray([[0.1, 5.0], [0.2, 5.0], [0.3, 5.0], [0.4, 5.0], [0.5, 5.0]], jnp.float32)
    a = rq.capacity_assign(cost, jnp.ones((5,)), jnp.asarray([3, 2]))
    np.testing.assert_array_equal(np.asarray(a), [0, 0, 0, 1, 1])


def test_balanced_capacities_sum_to_n():
    demand = jnp.asarray([50, 0, 0, 3, 47], jnp.int32)
    caps = np.asarray(rq.balanced_capacities(demand, jnp.int32(100), 0))
    assert caps.sum() == 100 and caps.min() >= 20 and caps.max() <= 20


def test_balanced_close_to_plain_on_balanced_data():
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((4, 6)) * 4
    x, labels = _blobs(50, centers, seed=5)
    res = rq.fit_rq_kmeans(x, rq.KMeansOptions(codes_per_level=(4,), iters=20, balanced=True), seed=1)
    assert _same_partition(res.codes[:, 0], labels)


def test_sharded_equals_single_device():
    assert jax.device_count() == 8
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((5, 12)) * 3
    x, _ = _blobs(61, centers, seed=7, scale=0.5)   # 305 rows: not a multiple of 8
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    for balanced in (False, True):
        opts = rq.KMeansOptions(codes_per_level=(5, 5), iters=15, balanced=balanced)
        single = rq.fit_rq_kmeans(x, opts, seed=11)
        sharded = rq.fit_rq_kmeans(x, opts, seed=11, mesh=mesh)
        np.testing.assert_array_equal(single.codes, sharded.codes)
        np.testing.assert_allclose(single.level_mse, sharded.level_mse, rtol=1e-4)


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="level 0 asks for 10 codes"):
        rq.fit_rq_kmeans(np.zeros((5, 3), np.float32), rq.KMeansOptions(codes_per_level=(10,)), 0)
    with pytest.raises(ValueError, match="finite"):
        rq.fit_rq_kmeans(np.full((5, 3), np.nan, np.float32), rq.KMeansOptions(codes_per_level=(2,)), 0)


@pytest.mark.parametrize("single_block_floats", [0, 1 << 20])
@pytest.mark.parametrize("row_shards", [1, 2])
def test_blocked_nearest_matches_dense_argmin(row_shards, single_block_floats, monkeypatch):
    # 0: the blocked loop (3 blocks of 512, or 3 x 256 per shard); 1 << 20: one block.
    monkeypatch.setattr(rq, "SINGLE_BLOCK_FLOATS", single_block_floats)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((1536, 12)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((9, 12)), jnp.float32)
    c = c.at[4].set(c[2])                 # a duplicated centre: the first index of the tie wins
    a, d = rq._nearest(x, c, row_shards)
    dense = np.sum((np.asarray(x)[:, None, :] - np.asarray(c)[None]) ** 2, axis=-1)
    np.testing.assert_array_equal(np.asarray(a), dense.argmin(1))
    np.testing.assert_allclose(np.asarray(d), dense.min(1), rtol=1e-4, atol=1e-4)


def test_padding_is_small_for_one_block_inputs_and_the_same_on_any_mesh():
    assert rq.padded_rows(1682, 1, 256) == rq.padded_rows(1682, 8, 256) == 1728     # 64-row multiple
    assert rq.padded_rows(1682, 1) == rq.padded_rows(1682, 8) == 1792               # blocked: 256
    assert rq.padded_rows(200_000, 1, 256) == rq.padded_rows(200_000, 8, 256) == 200_192


def test_carried_gram_gives_the_codes_of_a_fresh_gram_and_shards(monkeypatch):
    # 200 rows, 3 levels of 16 codes: every level seeds on all rows through the Gram matrix, so
    # levels 2 and 3 derive theirs from the level before (kmeans_seeding.residual_gram).
    rng = np.random.default_rng(12)
    x = rng.standard_normal((200, 10)).astype(np.float32)
    # init_trials=4 (2 + ln 16): with balanced mode's 3 the 256-row sample is above 4 * K * trials.
    opts = rq.KMeansOptions(codes_per_level=(16, 16, 16), iters=10, balanced=True, init_trials=4)
    assert rq._carries_gram(rq.padded_rows(200, 1, 16), opts)
    carried = rq.fit_rq_kmeans(x, opts, seed=3)
    sharded = rq.fit_rq_kmeans(x, opts, seed=3, mesh=mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}))
    monkeypatch.setattr(rq, "_carries_gram", lambda n, opts: False)
    rq._rq_fit.clear_cache()
    fresh = rq.fit_rq_kmeans(x, opts, seed=3)
    rq._rq_fit.clear_cache()
    np.testing.assert_array_equal(carried.codes, fresh.codes)
    np.testing.assert_array_equal(carried.codes, sharded.codes)
    np.testing.assert_allclose(carried.level_mse, fresh.level_mse, rtol=1e-5)


def test_block_rows():
    assert rq._block_rows(200192, 256) == 512 and rq._block_rows(64, 1 << 20) == 64
    assert rq._block_rows(96, 1 << 20) == 32 and rq._block_rows(1792, 32) == 1792


def test_codebook_is_mean_of_its_rows():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 6)).astype(np.float32)
    for balanced in (False, True):
        res = rq.fit_rq_kmeans(x, rq.KMeansOptions(codes_per_level=(5, 3), iters=4, balanced=balanced), seed=2)
        residual = x
        for level, k in enumerate((5, 3)):
            codes = res.codes[:, level]
            means = np.stack([residual[codes == j].mean(0) for j in range(k)])
            np.testing.assert_allclose(res.codebooks[level], means, rtol=1e-4, atol=1e-5)
            residual = residual - res.codebooks[level][codes]


def test_compact_repair_rounds_respect_capacities():
    # Everyone prefers cluster 0 (capacity 2); with one pending row per round the repair still
    # fills every cluster exactly and cluster 0 keeps its two keenest rows (largest regret).
    score = jnp.asarray([[0.0, 5.0, 6.0], [0.0, 1.0, 1.5], [0.0, 9.0, 9.5], [0.0, 2.0, 2.5],
                         [0.0, 3.0, 3.1], [0.0, 4.0, 4.2]], jnp.float32)
    caps = jnp.asarray([2, 2, 2])
    a = np.asarray(rq.capacity_assign(score, jnp.ones((6,)), caps, pending_rows=1))
    assert np.bincount(a, minlength=3).tolist() == [2, 2, 2]
    assert sorted(np.flatnonzero(a == 0).tolist()) == [0, 2]


def test_seeding_draws_only_weighted_real_rows():
    from gream_jax.index import kmeans_seeding as seeding
    rng = np.random.default_rng(6)
    x = jnp.asarray(np.concatenate([rng.standard_normal((30, 4)), np.zeros((10, 4))]), jnp.float32)
    w = jnp.asarray([1.0] * 30 + [0.0] * 10)
    centers = np.asarray(seeding.kmeans_plusplus(x, w, jax.random.PRNGKey(0), 8, 3))
    rows = {tuple(r) for r in np.asarray(x[:30]).round(6).tolist()}
    assert all(tuple(c) in rows for c in centers.round(6).tolist())          # real rows only
    assert len({tuple(c) for c in centers.round(6).tolist()}) == 8           # D^2 sampling: distinct
    u = jax.random.uniform(jax.random.PRNGKey(1), (2000,))
    picks = np.asarray(seeding.draw_rows(u, jnp.asarray([0.0, 2.0, 0.0, 1.0]), jnp.ones((4,), bool)))
    assert set(picks.tolist()) == {1, 3} and 0.6 < np.mean(picks == 1) < 0.73


@pytest.mark.parametrize("m", [256, 250])      # the blocked two-level search, and the plain fallback
def test_seeding_draw_follows_the_weights(m):
    from gream_jax.index import kmeans_seeding as seeding
    rng = np.random.default_rng(7)
    weights = rng.random(m).astype(np.float32) * (rng.random(m) < 0.7)      # some rows weigh 0
    weights[-6:] = 0.0                                                       # padding
    valid = jnp.asarray(np.arange(m) < m - 6)
    u = jax.random.uniform(jax.random.PRNGKey(2), (40_000, 8))
    picks = np.asarray(jax.vmap(lambda v: seeding.draw_rows(v, jnp.asarray(weights), valid))(u)).ravel()
    freq = np.bincount(picks, minlength=m) / picks.size
    p = weights / weights.sum()
    assert freq[p == 0].sum() == 0                                           # weight 0: never drawn
    assert np.abs(freq - p).max() < 5 * np.sqrt(p.max() / picks.size)
    # A uniform at the very top of the mass still lands on a row of positive weight.
    top = np.asarray(seeding.draw_rows(jnp.asarray([1.0 - 1e-9, 0.99999994]), jnp.asarray(weights), valid))
    assert (weights[top] > 0).all()
    # All weights 0 (every row is a chosen centre): uniform over the real rows only.
    flat = np.asarray(seeding.draw_rows(u[:, 0], jnp.zeros((m,)), valid))
    assert flat.max() < m - 6 and len(set(flat.tolist())) > (m - 6) * 0.9


def test_residual_gram_matches_the_residuals_own_gram():
    from gream_jax.index import kmeans_seeding as seeding
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    x[-4:] = 0.0
    w = (np.arange(40) < 36).astype(np.float32)
    centers = rng.standard_normal((5, 6)).astype(np.float32)
    a = rng.integers(0, 5, 40)
    r = (x - centers[a]) * w[:, None]
    got = seeding.residual_gram(jnp.asarray(x @ x.T), jnp.asarray(x @ centers.T), jnp.asarray(centers @ centers.T),
                                jnp.asarray(a), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(got), r @ r.T, atol=1e-4)


def test_index_config_sets_the_warm_sinkhorn_iterations_and_refuses_negative_ones():
    from gream_jax.config_defaults import base_config, validate_config
    from gream_jax.config_defaults.base import ConfigError
    from gream_jax.index.stage import kmeans_options
    config = base_config()
    config.index.sinkhorn_warm_iters = 3
    assert kmeans_options(config.index).sinkhorn_warm_iters == 3
    config.index.sinkhorn_warm_iters = -1
    with pytest.raises(ConfigError, match="config.index.sinkhorn_warm_iters"):
        validate_config(config)


def test_settle_share_stops_early_and_keeps_balance():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 8)).astype(np.float32)       # no cluster structure: labels churn
    base = dict(codes_per_level=(8, 8), iters=30, balanced=True, init_trials=4)   # 2 + ln 8, as before
    full = rq.fit_rq_kmeans(x, rq.KMeansOptions(**base, settle_share=0.0), seed=0)
    early = rq.fit_rq_kmeans(x, rq.KMeansOptions(**base, settle_share=0.05, settle_patience=1), seed=0)
    # Share 1.0: the first step's labels (all "changed" from none) already count as settled;
    # with patience 3 the loop needs two more steps.
    first = rq.fit_rq_kmeans(x, rq.KMeansOptions(**base, settle_share=1.0, settle_patience=1), seed=0)
    third = rq.fit_rq_kmeans(x, rq.KMeansOptions(**base, settle_share=1.0, settle_patience=3), seed=0)
    assert np.all(first.lloyd_iters == 0) and np.all(third.lloyd_iters == 2)
    assert np.all(early.lloyd_iters <= full.lloyd_iters) and early.lloyd_iters.sum() < full.lloyd_iters.sum()
    assert early.level_mse[-1] < 1.05 * full.level_mse[-1]
    for res in (early, first):
        for level in range(2):
            assert np.bincount(res.codes[:, level], minlength=8).tolist() == [50] * 8


def test_gram_seeding_picks_the_same_centres():
    from gream_jax.index import kmeans_seeding as seeding
    rng = np.random.default_rng(9)
    x = jnp.asarray(np.concatenate([rng.standard_normal((90, 5)), np.zeros((6, 5))]), jnp.float32)
    w = jnp.asarray([1.0] * 90 + [0.0] * 6)
    for key in range(3):
        a = seeding.kmeans_plusplus(x, w, jax.random.PRNGKey(key), 12, 4, gram=False)
        b = seeding.kmeans_plusplus(x, w, jax.random.PRNGKey(key), 12, 4, gram=True)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sinkhorn_matches_two_logsumexp_reference():
    from gream_jax.index import balanced_assign as ba
    rng = np.random.default_rng(10)
    cost = jnp.asarray(rng.random((50, 7)) + rng.random((50, 1)), jnp.float32)
    w = jnp.asarray([1.0] * 45 + [0.0] * 5)
    col_mass = jnp.full((7,), 45.0 / 7)
    eps = jnp.float32(0.05)

    def reference(g):
        log_w = jnp.where(w > 0, 0.0, -jnp.inf)
        for _ in range(6):
            f = -eps * jax.nn.logsumexp((g[None, :] - cost) / eps, axis=1)
            g = eps * (jnp.log(col_mass) - jax.nn.logsumexp((f[:, None] - cost) / eps + log_w[:, None], axis=0))
        return g

    g0 = jnp.asarray(rng.standard_normal(7) * 0.1, jnp.float32)
    g = ba.sinkhorn_prices(cost, w, col_mass, eps, 6, g0)
    np.testing.assert_allclose(np.asarray(g), np.asarray(reference(g0)), atol=2e-5)
    # The prices balance the plan: column masses of the entropic plan match col_mass.
    plan = np.asarray(jax.nn.softmax((g[None, :] - cost) / eps, axis=1) * w[:, None])
    np.testing.assert_allclose(plan.sum(0), np.asarray(col_mass), rtol=0.1)


def test_packed_accept_matches_three_key_sort(monkeypatch):
    from gream_jax.index import balanced_assign as ba
    rng = np.random.default_rng(11)
    m, k = 60, 5
    prop = jnp.asarray(rng.integers(0, k, m), jnp.int32)
    prio = jnp.asarray(-rng.permutation(m) * 0.37 - 0.01, jnp.float32)   # distinct regrets
    active = jnp.asarray(rng.random(m) < 0.8)
    remaining = jnp.asarray([3, 0, 5, 20, 1], jnp.int32)
    packed = np.asarray(ba._accept(prop, prio, active, remaining))
    monkeypatch.setattr(ba, "MIN_PRIORITY_BITS", 99)                       # force the 3-key sort
    reference = np.asarray(ba._accept(prop, prio, active, remaining))
    np.testing.assert_array_equal(packed, reference)
    kept = np.bincount(np.asarray(prop)[packed], minlength=k)
    offered = np.bincount(np.asarray(prop)[np.asarray(active)], minlength=k)
    np.testing.assert_array_equal(kept, np.minimum(offered, np.asarray(remaining)))


def test_settle_share_default_depends_on_mode_and_is_validated():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    plain = rq.KMeansOptions(codes_per_level=(6,), iters=40)
    default = rq.fit_rq_kmeans(x, plain, seed=0)
    exact = rq.fit_rq_kmeans(x, dataclasses.replace(plain, settle_share=0.0), seed=0)
    np.testing.assert_array_equal(default.codes, exact.codes)              # plain default: labels unchanged
    with pytest.raises(ValueError, match="settle_share"):
        rq.fit_rq_kmeans(x, dataclasses.replace(plain, settle_share=1.5), seed=0)
    with pytest.raises(ValueError, match="settle_patience"):
        rq.fit_rq_kmeans(x, dataclasses.replace(plain, settle_patience=0), seed=0)


def _capacities_by_sorting(demand, n, slack):
    """The argsort formulation balanced_capacities replaced: grow the most demanded clusters
    first, shrink the least demanded first (stable order: lower index first on ties)."""
    k = len(demand)
    lo, hi = max(n // k - slack, 0), -(-n // k) + slack
    caps = np.clip(demand, lo, hi)
    diff = n - caps.sum()
    if diff > 0:
        for j in np.argsort(-demand, kind="stable"):
            step = min(diff, hi - caps[j])
            caps[j] += step
            diff -= step
    elif diff < 0:
        for j in np.argsort(demand, kind="stable"):
            step = min(-diff, caps[j] - lo)
            caps[j] -= step
            diff += step
    return caps


def test_balanced_capacities_match_the_sorting_formulation():
    rng = np.random.default_rng(13)
    for _ in range(200):
        k = int(rng.integers(1, 20))
        n = int(rng.integers(k, 200))
        slack = int(rng.integers(0, 3))
        labels = rng.integers(0, k, n) if rng.random() < 0.5 else rng.integers(0, max(k // 3, 1), n)
        demand = np.bincount(labels, minlength=k)                         # many ties
        caps = np.asarray(rq.balanced_capacities(jnp.asarray(demand, jnp.int32), jnp.int32(n), slack))
        np.testing.assert_array_equal(caps, _capacities_by_sorting(demand, n, slack))
        assert caps.sum() == n


def test_balanced_seeding_uses_fewer_greedy_trials_than_plain():
    # Plain mode keeps scikit-learn's 2 + ln K candidates; balanced caps them (BALANCED_INIT_TRIALS).
    plain, balanced = (rq.KMeansOptions(codes_per_level=(32,), balanced=b) for b in (False, True))
    assert rq._seeding_plan(1728, 32, plain)[1] == 5
    assert rq._seeding_plan(1728, 32, balanced)[1] == rq.BALANCED_INIT_TRIALS == 3
    assert rq._seeding_plan(1728, 2, balanced)[1] == 2                 # 2 + ln 2 is already below
    assert rq._seeding_plan(1728, 32, dataclasses.replace(balanced, init_trials=6))[1] == 6
