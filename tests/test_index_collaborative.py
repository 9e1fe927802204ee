"""Collaborative vectors use training interactions only: targets cannot change them."""

import numpy as np
import pytest

from gream_jax.data.split import leave_one_out
from gream_jax.data.types import InteractionData, ItemText
from gream_jax.index import collaborative


def _data(seed, n_users=60, n_items=30):
    rng = np.random.default_rng(seed)
    seqs = []
    for u in range(n_users):
        group = u % 3      # three taste groups over items 0-9, 10-19, 20-29
        items = rng.permutation(np.arange(group * 10, group * 10 + 10))[:rng.integers(5, 9)]
        seqs.append(items.astype(np.int32))
    return InteractionData(name="toy", item_ids=[str(i) for i in range(n_items)],
                           user_ids=[str(u) for u in range(n_users)],
                           items=[ItemText(title=f"item {i}") for i in range(n_items)], sequences=seqs)


@pytest.mark.parametrize("method", ["svd", "ppmi"])
def test_targets_do_not_influence_vectors(method):
    data = _data(0)
    split = leave_one_out(data, max_history=20)
    base = collaborative.collaborative_vectors(split.train, data.n_items, 8, method, seed=0)
    # Replace every valid/test target by other items: the training part is unchanged.
    rng = np.random.default_rng(1)
    changed = [np.concatenate([s[:-2], rng.integers(0, data.n_items, 2)]).astype(np.int32) for s in data.sequences]
    data2 = InteractionData(data.name, data.item_ids, data.user_ids, data.items, changed)
    split2 = leave_one_out(data2, max_history=20)
    assert any(not np.array_equal(a, b) for a, b in zip(split.test_targets, split2.test_targets))
    again = collaborative.collaborative_vectors(split2.train, data.n_items, 8, method, seed=0)
    np.testing.assert_array_equal(base, again)
    # ... while changing a TRAINING interaction does change them (the test can fail).
    train3 = [s.copy() for s in split.train]
    train3[0][0] = (train3[0][0] + 15) % data.n_items
    moved = collaborative.collaborative_vectors(train3, data.n_items, 8, method, seed=0)
    assert not np.allclose(base, moved)


def test_groups_are_neighbours_and_unseen_items_zero():
    data = _data(2)
    split = leave_one_out(data, max_history=20)
    train = [s[s < 25] for s in split.train]        # items 25..29 never in training
    v = collaborative.collaborative_vectors(train, data.n_items, 8, "svd", seed=0)
    assert np.all(v[25:] == 0)
    np.testing.assert_allclose(np.linalg.norm(v[:25], axis=1), 1.0, atol=1e-5)
    sim = v[:20] @ v[:20].T
    same = np.equal.outer(np.arange(20) // 10, np.arange(20) // 10)
    assert sim[same].mean() > sim[~same].mean() + 0.3
