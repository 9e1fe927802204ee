"""Constrained beam search against brute-force scoring on a tiny recurrent model."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infer_toy as toy
from gream_jax.index.trie import build_trie_from_codes
from gream_jax.infer.beam import brute_force_scores, constrained_beam_search


@pytest.fixture(scope="module")
def setup():
    codes, lengths, sizes = toy.toy_sids(n_items=40)
    trie = build_trie_from_codes(codes, lengths)
    table, vocab = toy.token_table(sizes)
    dev = trie.to_device(table)
    params = toy.init_params(vocab)
    prompts = jnp.array(np.random.default_rng(3).integers(0, toy.N_SPECIAL, (5, 4)))
    levels = np.arange(codes.shape[1])[None, :].repeat(len(codes), 0)
    item_tokens = np.where(codes >= 0, table[levels, np.maximum(codes, 0)], -1)
    return dict(codes=codes, lengths=lengths, trie=trie, dev=dev, params=params, prompts=prompts,
                item_tokens=item_tokens, n_items=len(codes))


@functools.partial(jax.jit, static_argnames=("beam", "k"))
def run_beam(params, prompts, dev, beam, k):
    logits, cache = toy.prefill(params, prompts)
    return constrained_beam_search(toy.step_fn, toy.reorder_fn, params, logits, cache, dev, beam, k)


def brute(s):
    logits, cache = toy.prefill(s["params"], s["prompts"])
    return np.asarray(brute_force_scores(toy.step_fn, toy.reorder_fn, s["params"], logits, cache,
                                         jnp.asarray(s["item_tokens"]), jnp.asarray(s["lengths"])))


def test_exhaustive_beam_equals_brute_force(setup):
    s = setup
    k = 10
    res = run_beam(s["params"], s["prompts"], s["dev"], s["n_items"], k)
    ref = brute(s)
    ref_items = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(np.asarray(res.items), ref_items)
    np.testing.assert_allclose(np.asarray(res.scores), np.take_along_axis(ref, ref_items, 1), atol=1e-4)
    # The returned tokens spell each item's SID.
    for u in range(res.items.shape[0]):
        for j, item in enumerate(np.asarray(res.items[u])):
            n = s["lengths"][item]
            np.testing.assert_array_equal(np.asarray(res.tokens[u, j, :n]), s["item_tokens"][item, :n])
            assert (np.asarray(res.tokens[u, j, n:]) == -1).all()


def test_small_beam_returns_real_distinct_items_with_true_scores(setup):
    s = setup
    res = run_beam(s["params"], s["prompts"], s["dev"], 6, 4)
    ref = brute(s)
    items, scores = np.asarray(res.items), np.asarray(res.scores)
    assert items.shape == (5, 4)
    for u in range(5):
        assert (items[u] >= 0).all() and len(set(items[u])) == 4
        np.testing.assert_allclose(scores[u], ref[u, items[u]], atol=1e-4)
        assert (np.diff(scores[u]) <= 1e-6).all()
    # A beam of 6 still finds the true best item for these users (a weak model; many ties are impossible).
    hits = (items[:, 0] == ref.argmax(1)).mean()
    assert hits >= 0.6


def test_fewer_items_than_k_pads_with_minus_one():
    codes = np.array([[0, 1], [1, 0]], np.int32)
    trie = build_trie_from_codes(codes, np.array([2, 2]))
    table, vocab = toy.token_table((2, 2))
    params = toy.init_params(vocab)
    res = run_beam(params, jnp.zeros((2, 3), jnp.int32), trie.to_device(table), 4, 3)
    items = np.asarray(res.items)
    assert sorted(items[0, :2]) == [0, 1] and items[0, 2] == -1
    assert np.asarray(res.scores)[0, 2] < -1e29


def test_top_k_above_beam_is_refused(setup):
    s = setup
    with pytest.raises(ValueError, match="top_k=5 must be <= beam_size=4"):
        run_beam(s["params"], s["prompts"], s["dev"], 4, 5)
