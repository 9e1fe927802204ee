"""RQ-KMeans: recovers separated clusters, balanced capacities hold, mesh-independent results."""

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
