"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from gream_jax.eval import metrics as m

RANKED = np.array([[3, 1, 2, -1],    # target 1 at rank 1
                   [0, 5, 4, 7],     # target 9 absent
                   [9, 8, 7, 6]])    # target 9 at rank 0
TARGETS = np.array([1, 9, 9])


def test_recall_and_ndcg_by_hand():
    assert m.recall_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)
    assert m.recall_at_k(RANKED, TARGETS, 2) == pytest.approx(2 / 3)
    assert m.ndcg_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)
    assert m.ndcg_at_k(RANKED, TARGETS, 4) == pytest.approx((1 / math.log2(3) + 1.0) / 3)
    np.testing.assert_array_equal(m.target_rank(RANKED, TARGETS), [1, -1, 0])
    # -1 padding never matches a -1 "target".
    assert m.recall_at_k(np.array([[-1]]), np.array([-1]), 1) == 0.0
    with pytest.raises(ValueError, match="k=5 exceeds"):
        m.recall_at_k(RANKED, TARGETS, 5)


def test_pass_at_k_unbiased_estimator():
    assert m.pass_at_k(10, 0, 4) == 0.0
    assert m.pass_at_k(10, 10, 4) == 1.0
    assert m.pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert m.pass_at_k(10, 3, 4) == pytest.approx(1 - 35 / 210)   # C(7,4)=35, C(10,4)=210
    assert m.pass_at_k(5, 3, 3) == 1.0                            # n - c < k
    with pytest.raises(ValueError):
        m.pass_at_k(3, 1, 4)
    correct = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], bool)
    assert m.mean_pass_at_k(correct, 2) == pytest.approx((0.5 + 0 + (1 - 1 / 6)) / 3)


def test_coverage_and_popularity():
    assert m.coverage(RANKED, 10, 2) == pytest.approx(6 / 10)     # {3,1,0,5,9,8}
    counts = np.arange(10)                                        # item i seen i times
    pb = m.popularity_bias(RANKED, counts, 2, head_share=0.2)     # head = items {9, 8}
    assert pb["avg_popularity@2"] == pytest.approx(np.mean([3, 1, 0, 5, 9, 8]))
    assert pb["head_ratio@2"] == pytest.approx(2 / 6)


def test_ranking_metrics_keys_skip_long_k():
    out = m.ranking_metrics(RANKED, TARGETS, ks=(1, 5, 10), n_items=10, item_counts=np.ones(10))
    assert set(out) == {"recall@1", "ndcg@1", "coverage@1", "avg_popularity@1", "head_ratio@1"}
    out = m.ranking_metrics(np.tile(RANKED, (1, 3)), TARGETS, ks=(1, 5, 10))
    assert out["recall@10"] == pytest.approx(2 / 3) and "recall@20" not in out


def test_history_share_counts_own_history_slots():
    ranked = np.array([[3, 1, 2], [5, 6, -1]])
    histories = [[1, 2, 9], [7]]
    # user 0: 2 of 3 slots in its history; user 1: none of its 2 filled slots -> 2 / 5
    assert m.history_share(ranked, histories, 3) == pytest.approx(0.4)
    assert m.history_share(ranked, histories, 1) == 0.0
    with pytest.raises(ValueError, match="2 ranked lists"):
        m.history_share(ranked, histories[:1], 3)
