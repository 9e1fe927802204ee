"""Prefix trie: structure, refusal of bad SIDs, save/load, device expansion."""

import numpy as np
import pytest

from gream_jax.index.trie import Trie, build_trie_from_codes
from infer_toy import token_table, toy_sids


def test_every_item_reaches_its_own_leaf_and_children_are_sorted():
    codes, lengths, sizes = toy_sids(n_items=50)
    trie = build_trie_from_codes(codes, lengths)
    for item in range(50):
        leaf = trie.walk(codes[item, :lengths[item]])
        assert leaf == trie.item_leaf[item]
        assert trie.node_item[leaf] == item
        assert trie.node_depth[leaf] == lengths[item]
    for node in range(trie.n_nodes):
        c, _ = trie.children(node)
        assert (np.diff(c) > 0).all()
        assert (len(c) == 0) == (trie.node_item[node] >= 0)
    assert trie.n_nodes - 1 == len(trie.edge_code)
    assert trie.walk([sizes[0] + 5]) == -1
    assert trie.max_depth == lengths.max()


def test_refuses_duplicates_and_prefixes():
    codes = np.array([[0, 1, -1], [0, 1, -1]])
    with pytest.raises(ValueError, match="same SID"):
        build_trie_from_codes(codes, np.array([2, 2]))
    codes = np.array([[0, 1, -1], [0, 1, 2]])
    with pytest.raises(ValueError, match="prefix"):
        build_trie_from_codes(codes, np.array([2, 3]))
    with pytest.raises(ValueError, match="negative code"):
        build_trie_from_codes(np.array([[0, -1]]), np.array([2]))


def test_save_load_roundtrip_and_device_expand(tmp_path):
    codes, lengths, sizes = toy_sids(n_items=30)
    trie = build_trie_from_codes(codes, lengths)
    trie.save(str(tmp_path / "trie.npz"))
    again = Trie.load(str(tmp_path / "trie.npz"))
    np.testing.assert_array_equal(again.child_start, trie.child_start)
    np.testing.assert_array_equal(again.edge_child, trie.edge_child)
    table, _ = token_table(sizes)
    dev = again.to_device(table)
    tok, child, valid = (np.asarray(a) for a in dev.expand(np.array([0, trie.item_leaf[0]])))
    root_codes, root_kids = trie.children(0)
    assert valid[0].sum() == len(root_codes) and valid[1].sum() == 0
    np.testing.assert_array_equal(tok[0, :len(root_codes)], table[0, root_codes])
    np.testing.assert_array_equal(child[0, :len(root_codes)], root_kids)


def test_token_table_mismatch_is_refused():
    codes, lengths, sizes = toy_sids(n_items=30)
    trie = build_trie_from_codes(codes, lengths)
    table, _ = token_table(sizes)
    table[0, 0] = -1
    with pytest.raises(ValueError, match="no token for level 0 code 0"):
        trie.to_device(table)
    with pytest.raises(ValueError, match="do not match"):
        trie.to_device(table[:2])
