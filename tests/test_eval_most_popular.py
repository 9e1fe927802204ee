"""Most-popular baseline (gream_jax/eval/most_popular.py) on a hand-made split."""

import math

import numpy as np
import pytest

from gream_jax.data.split import Split
from gream_jax.eval import most_popular


def test_popularity_order_counts_and_breaks_ties_by_index():
    order = most_popular.popularity_order(np.array([3, 1, 3, 1, 0, 4]), 6)
    np.testing.assert_array_equal(order, [1, 3, 0, 4, 2, 5])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        most_popular.popularity_order(np.array([0, 6]), 6)


def test_most_popular_metrics_against_hand_values():
    # training counts: item 2 x3, item 0 x2, item 1 x1 -> list [2, 0, 1, 3, 4]
    split = Split(train=[np.array([2, 0, 1], np.int32), np.array([2, 0], np.int32), np.array([2], np.int32)],
                  valid_targets=np.array([0, 4, 2], np.int32), test_targets=np.array([1, 2, 3], np.int32),
                  max_history=20)
    m = most_popular.most_popular_metrics(split, 5, ks=(1, 2, 5))
    # valid ranks: 0 -> 1, 4 -> 4, 2 -> 0 (0-based)
    assert m["valid"]["recall@1"] == pytest.approx(1 / 3)
    assert m["valid"]["recall@2"] == pytest.approx(2 / 3)
    assert m["valid"]["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 3)
    assert m["valid"]["recall@5"] == pytest.approx(1.0)
    # test ranks: 1 -> 2, 2 -> 0, 3 -> 3
    assert m["test"]["recall@2"] == pytest.approx(1 / 3)
    assert m["test"]["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1.0 + 1 / math.log2(5)) / 3)
    assert m["test"]["users"] == 3
