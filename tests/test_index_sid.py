"""SID artifact + collision schemes: unique SIDs, tokens, and refusing mismatched artifacts."""

import json
import os

import numpy as np
import pytest

from gream_jax.index import collisions
from gream_jax.index.sid import SemanticIds, SidArtifactError

# 6 items, 2 levels; items 0,1,2 collide on (0, 1); items 3,4 on (1, 0); item 5 alone.
CODES = np.asarray([[0, 1], [0, 1], [0, 1], [1, 0], [1, 0], [2, 2]], np.int32)


def _prefix_free(codes, lengths):
    rows = [tuple(codes[i, :lengths[i]]) for i in range(len(codes))]
    return all(a == b or b[:len(a)] != a for a in rows for b in rows if a is not b) and len(set(rows)) == len(rows)


def test_collision_stats():
    s = collisions.collision_stats(CODES)
    assert s["collision_rate"] == pytest.approx(5 / 6)
    assert s["collision_groups"] == 2 and s["largest_group"] == 3


def test_rank_suffix_matches_reference():
    residual_sq = np.asarray([0.3, 0.1, 0.2, 0.0, 0.5, 0.0])
    codes, lengths, sizes, _ = collisions.resolve(CODES, "rank_suffix", (3, 3), residual_sq=residual_sq)
    assert sizes == (3, 3, 3)
    np.testing.assert_array_equal(lengths, [3, 3, 3, 3, 3, 2])
    # best-quantised item of a group gets rank 0
    np.testing.assert_array_equal(codes[:5, 2], [2, 0, 1, 0, 1])
    assert codes[5, 2] == -1
    assert _prefix_free(codes, lengths)
    assert collisions.collision_stats(codes)["collision_rate"] == 0.0


def test_nearest_free_moves_to_free_codes():
    book = np.asarray([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
    last_residual = np.asarray([[0, 0.9], [0.1, 0.9], [0.9, 0.1], [1, 0], [0, 0], [4, 4]], np.float32)
    codes = np.asarray([[0, 2], [0, 2], [0, 2], [1, 1], [1, 1], [2, 3]], np.int32)
    out, lengths, sizes, stats = collisions.resolve(codes, "nearest_free", (3, 4), last_residual=last_residual,
                                                    last_codebook=book, residual_sq=np.zeros(6))
    assert sizes == (3, 4) and out.shape == (6, 2) and np.all(lengths == 2)
    assert stats["fallback_items"] == 0 and stats["moved_items"] == 3
    assert out[2, 1] == 1      # item 2 is nearest to code 1, which is free under prefix 0
    assert len({tuple(r) for r in out}) == 6


def test_nearest_free_falls_back_to_rank_suffix_when_full():
    book = np.eye(2, dtype=np.float32)
    codes = np.asarray([[0, 0], [0, 0], [0, 0]], np.int32)   # 3 items, only 2 last-level codes
    out, lengths, sizes, stats = collisions.resolve(codes, "nearest_free", (1, 2), last_residual=np.zeros((3, 2)),
                                                    last_codebook=book)
    assert stats["fallback_items"] == 2 and sizes == (1, 2, 2)
    assert _prefix_free(out, lengths)


def test_item_token_scheme():
    out, lengths, sizes, _ = collisions.resolve(CODES, "item_token", (3, 3))
    assert sizes == (3, 3, 6)
    np.testing.assert_array_equal(out[:, 2], np.arange(6))
    assert np.all(lengths == 3)


def test_tokens_and_round_trip(tmp_path):
    codes, lengths, sizes, _ = collisions.resolve(CODES, "rank_suffix", (3, 3))
    sids = SemanticIds(codes, lengths, sizes)
    assert sids.item_string(5) == "<a_2><b_2>"
    assert sids.item_tokens(0)[:2] == ["<a_0>", "<b_1>"]
    assert sids.all_tokens()[:4] == ["<a_0>", "<a_1>", "<a_2>", "<b_0>"] and len(sids.all_tokens()) == 9
    ids = [f"item{i}" for i in range(6)]
    sids.save(str(tmp_path), {"item_ids": ids, "dataset": "toy"})
    back = SemanticIds.load(str(tmp_path), n_items=6, item_ids=ids, dataset="toy")
    np.testing.assert_array_equal(back.codes, sids.codes)
    assert back.level_sizes == sids.level_sizes and back.meta["dataset"] == "toy"


def test_mismatched_artifact_refused(tmp_path):
    sids = SemanticIds(*collisions.resolve(CODES, "item_token", (3, 3))[:3])
    ids = [str(i) for i in range(6)]
    sids.save(str(tmp_path), {"item_ids": ids, "dataset": "toy"})
    with pytest.raises(SidArtifactError, match=r"sids\.npz: SIDs for 6 items, but the dataset has 7"):
        SemanticIds.load(str(tmp_path), n_items=7)
    with pytest.raises(SidArtifactError, match=r"sids\.json: item-id map differs .* internal item 2"):
        SemanticIds.load(str(tmp_path), item_ids=["0", "1", "x", "3", "4", "5"])
    with pytest.raises(SidArtifactError, match=r"sids\.json: made for dataset 'toy', not 'beauty'"):
        SemanticIds.load(str(tmp_path), dataset="beauty")
    with pytest.raises(SidArtifactError, match="not found"):
        SemanticIds.load(str(tmp_path / "nowhere"))
    meta = json.load(open(os.path.join(tmp_path, "sids.json")))
    meta["n_items"] = 5
    json.dump(meta, open(os.path.join(tmp_path, "sids.json"), "w"))
    with pytest.raises(SidArtifactError, match=r"sids\.json: n_items 5"):
        SemanticIds.load(str(tmp_path))


def test_invalid_codes_rejected():
    with pytest.raises(SidArtifactError, match="level 1 code 5 >= level size 3"):
        SemanticIds(np.asarray([[0, 5]]), np.asarray([2]), (3, 3))
    with pytest.raises(SidArtifactError, match="beyond an item's length must be -1"):
        SemanticIds(np.asarray([[0, 1]]), np.asarray([1]), (3, 3))
