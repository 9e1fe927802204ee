"""Choosing Direct mode's re-ranking weight on validation (gream_jax/eval/head_weight.py)."""

import numpy as np
import pytest

from gream_jax.eval import head_weight
from gream_jax.infer.recommender import Candidates, rank_candidates


def _candidates():
    # Two users, beam 3, best SID score first. User 0: the head prefers item 7 strongly; user 1:
    # the head prefers item 2 a little. Slot -1 is empty.
    return Candidates(items=np.array([[4, 5, 7], [1, 2, -1]]),
                      sid_scores=np.array([[-1.0, -1.5, -3.0], [-0.5, -1.0, -1e30]], np.float32),
                      head_logq=np.array([[-4.0, -3.0, -0.5], [-2.0, -1.8, 0.0]], np.float32))


def test_rank_candidates_by_hand():
    c = _candidates()
    np.testing.assert_array_equal(rank_candidates(c, 0.0, 3).items, [[4, 5, 7], [1, 2, -1]])
    # w = 1: user 0 fused -5, -4.5, -3.5 -> 7, 5, 4; user 1 -2.5, -2.8 -> 1, 2
    r = rank_candidates(c, 1.0, 2)
    np.testing.assert_array_equal(r.items, [[7, 5], [1, 2]])
    np.testing.assert_allclose(r.scores, [[-3.5, -4.5], [-2.5, -2.8]])
    # w = 4: user 1 -8.5 vs -8.2 -> 2 first; the empty slot stays last
    np.testing.assert_array_equal(rank_candidates(c, 4.0, 3).items, [[7, 5, 4], [2, 1, -1]])


def test_sweep_metrics_and_choice_by_hand():
    c = _candidates()
    targets = np.array([7, 2])
    table = head_weight.sweep_metrics(c, targets, (0.0, 1.0, 4.0), ks=(1, 2), top_k=2, n_items=10)
    assert list(table) == [0.0, 1.0, 4.0]
    assert table[0.0]["recall@2"] == pytest.approx(0.5)           # only user 1's 2 is in the top 2
    assert table[1.0]["recall@1"] == pytest.approx(0.5)           # user 0's 7 first
    assert table[1.0]["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert table[4.0]["recall@1"] == pytest.approx(1.0)
    assert head_weight.choose_weight(table, "ndcg@2") == 4.0
    assert head_weight.choose_weight(table, "recall@2") == 1.0    # 1 and 4 tie at 1.0: the first listed
    with pytest.raises(KeyError, match="select_metric='ndcg@10'"):
        head_weight.choose_weight(table, "ndcg@10")
    with pytest.raises(ValueError, match="empty"):
        head_weight.choose_weight({}, "ndcg@2")


def test_sweep_markdown_marks_the_choice():
    table = {0.0: {"recall@1": 0.1, "ndcg@1": 0.1}, 2.0: {"recall@1": 0.2, "ndcg@1": 0.2}}
    choice = head_weight.HeadWeightChoice(weight=2.0, metric="ndcg@1", table=table, valid_candidates=None,
                                          valid_seconds=0.0)
    text = head_weight.sweep_markdown(choice, (1,), users=5)
    assert "| 2 (chosen) | 0.2000 | 0.2000 |" in text and "| 0 | 0.1000 | 0.1000 |" in text
    assert "5 users" in text and "ndcg@1" in text
