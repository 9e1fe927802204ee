"""Samplers: nucleus filter, greedy and tempered text sampling with stop tokens, trie-constrained SIDs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infer_toy as toy
from gream_jax.index.trie import build_trie_from_codes
from gream_jax.infer.sampling import sample_sid, sample_tokens, top_p_filter, top_p_filter_sorted


def test_top_p_filter_keeps_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.asarray(top_p_filter(logits, 0.7)) > -1e29
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    kept = np.asarray(top_p_filter(logits, 0.81)) > -1e29
    np.testing.assert_array_equal(kept, [[True, True, True, False]])
    assert (np.asarray(top_p_filter(logits, 0.01)) > -1e29).sum() == 1
    assert (np.asarray(top_p_filter(logits, 1.0)) > -1e29).all()


@pytest.mark.parametrize("scale", [0.3, 3.0, 12.0])
def test_top_p_filter_bisection_keeps_exactly_the_sorted_nucleus(scale):
    """The sort-free filter keeps the same tokens as sort + cumsum on random rows, flat to peaked,
    with tied logits, trie-masked (-1e30) entries, and top_p from below 0 to 1."""
    rng = np.random.default_rng(int(scale * 10))
    logits = rng.normal(size=(64, 300)).astype(np.float32) * scale
    logits[:8, :40] = np.round(logits[:8, :40])          # ties, some at the cut
    logits[8:16, 100:] = -1e30                           # masked tokens
    for top_p in (-0.5, 0.0, 0.05, 0.5, 0.9, 0.97, 0.999, 1.0):
        got = np.asarray(top_p_filter(jnp.asarray(logits), top_p)) > -1e29
        want = np.asarray(top_p_filter_sorted(jnp.asarray(logits), top_p)) > -1e29
        np.testing.assert_array_equal(got, want, err_msg=f"top_p={top_p}")
        assert got.any(-1).all()


def test_top_p_filter_keeps_a_tie_at_the_cut():
    logits = jnp.log(jnp.array([[0.4, 0.2, 0.2, 0.2]]))
    kept = np.asarray(top_p_filter(logits, 0.5)) > -1e29
    np.testing.assert_array_equal(kept, [[True, True, True, True]])
    kept = np.asarray(top_p_filter(logits, 0.39)) > -1e29
    np.testing.assert_array_equal(kept, [[True, False, False, False]])


@functools.partial(jax.jit, static_argnames=("budget", "stops", "banned"))
def run_text(params, prompts, rng, temperature, top_p, budget, stops, banned=()):
    logits, cache = toy.prefill(params, prompts)
    return sample_tokens(toy.step_fn, params, logits, cache, rng, max_new_tokens=budget,
                         stop_tokens=stops, temperature=temperature, top_p=top_p, pad_id=0,
                         banned_tokens=banned)


def test_greedy_text_matches_a_manual_argmax_rollout_and_stops():
    params = toy.init_params(20)
    prompts = jnp.array(np.random.default_rng(0).integers(0, 6, (6, 3)))
    out = run_text(params, prompts, jax.random.PRNGKey(0), 0.0, 1.0, 12, (7,))
    logits, cache = toy.prefill(params, prompts)
    manual, lps = [], []
    for _ in range(12):
        tok = jnp.argmax(logits, -1)
        manual.append(np.asarray(tok))
        lps.append(np.asarray(jax.nn.log_softmax(logits)[jnp.arange(6), tok]))
        logits, cache = toy.step_fn(params, tok, cache)
    manual, lps = np.stack(manual, 1), np.stack(lps, 1)
    toks, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for r in range(6):
        stop_at = np.nonzero(manual[r] == 7)[0]
        n = stop_at[0] + 1 if len(stop_at) else 12
        assert lengths[r] == n and bool(out.stopped[r]) == bool(len(stop_at))
        np.testing.assert_array_equal(toks[r, :n], manual[r, :n])
        np.testing.assert_allclose(np.asarray(out.logprobs)[r, :n], lps[r, :n], atol=1e-5)
        assert (toks[r, n:] == 0).all()


def test_tempered_sampling_follows_the_model_distribution():
    params = toy.init_params(12, seed=4)
    prompts = jnp.zeros((4000, 2), jnp.int32)
    out = run_text(params, prompts, jax.random.PRNGKey(1), 1.0, 1.0, 1, ())
    p = np.asarray(jax.nn.softmax(toy.prefill(params, prompts[:1])[0][0]))
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=12) / 4000
    np.testing.assert_allclose(freq, p, atol=0.03)
    # A tiny nucleus is greedy.
    out = run_text(params, prompts[:50], jax.random.PRNGKey(2), 1.0, 1e-4, 1, ())
    assert (np.asarray(out.tokens[:, 0]) == p.argmax()).all()


def test_banned_tokens_are_never_drawn_and_keep_the_models_log_probs():
    """A banned token is never sampled, greedy or tempered, even where it is the argmax; the
    other tokens keep their relative frequencies, and the log-prob reported is the model's own
    (full-vocabulary) one, as for the nucleus."""
    params = toy.init_params(12, seed=4)
    prompts = jnp.zeros((4000, 2), jnp.int32)
    p = np.asarray(jax.nn.softmax(toy.prefill(params, prompts[:1])[0][0]))
    top = int(p.argmax())
    out = run_text(params, prompts, jax.random.PRNGKey(1), 1.0, 1.0, 1, (), (top,))
    drawn = np.asarray(out.tokens[:, 0])
    assert not (drawn == top).any()
    want = np.where(np.arange(12) == top, 0.0, p) / (1 - p[top])
    np.testing.assert_allclose(np.bincount(drawn, minlength=12) / 4000, want, atol=0.03)
    np.testing.assert_allclose(np.asarray(out.logprobs[:, 0]), np.log(p[drawn]), rtol=1e-4)
    greedy = run_text(params, prompts[:3], jax.random.PRNGKey(0), 0.0, 1.0, 8, (), (top,))
    assert int(greedy.tokens[0, 0]) == int(np.argsort(-p)[1])
    assert not (np.asarray(greedy.tokens) == top).any()
    # Without the ban the same greedy run does write it.
    assert int(run_text(params, prompts[:3], jax.random.PRNGKey(0), 0.0, 1.0, 8, ()).tokens[0, 0]) == top


@pytest.fixture(scope="module")
def sid_setup():
    codes, lengths, sizes = toy.toy_sids(n_items=12, level_sizes=(2, 3))
    trie = build_trie_from_codes(codes, lengths)
    table, vocab = toy.token_table(sizes)
    return trie, trie.to_device(table), table, toy.init_params(vocab, seed=5), codes, lengths


@jax.jit
def run_sid(params, prompts, dev, rng, temperature):
    logits, cache = toy.prefill(params, prompts)
    return sample_sid(toy.step_fn, params, logits, cache, dev, rng, temperature)


def constrained_item_probs(trie, table, params, prompt):
    """Exact P(item) when each step samples among the trie children (temperature 1)."""
    probs = {}
    logits, cache = toy.prefill(params, prompt)

    def walk(node, logits, cache, p):
        if trie.node_item[node] >= 0:
            probs[int(trie.node_item[node])] = p
            return
        codes, kids = trie.children(node)
        toks = table[trie.node_depth[node], codes]
        q = np.asarray(jax.nn.softmax(logits[0, toks]))
        for tok, kid, qi in zip(toks, kids, q):
            nl, nc = toy.step_fn(params, jnp.array([tok]), cache)
            walk(kid, nl, nc, p * qi)

    walk(0, logits, cache, 1.0)
    return probs


def test_sampled_sids_are_real_items_with_the_constrained_distribution(sid_setup):
    trie, dev, table, params, codes, lengths = sid_setup
    n = 3000
    out = run_sid(params, jnp.zeros((n, 2), jnp.int32), dev, jax.random.PRNGKey(0), 1.0)
    items = np.asarray(out.items)
    assert (items >= 0).all()
    toks = np.asarray(out.tokens)
    for r in range(50):
        it = items[r]
        np.testing.assert_array_equal(np.asarray(out.lengths)[r], lengths[it])
        np.testing.assert_array_equal(toks[r, :lengths[it]], table[np.arange(lengths[it]), codes[it, :lengths[it]]])
    exact = constrained_item_probs(trie, table, params, jnp.zeros((1, 2), jnp.int32))
    freq = np.bincount(items, minlength=len(codes)) / n
    for item, p in exact.items():
        assert abs(freq[item] - p) < 0.035, (item, freq[item], p)
    greedy = run_sid(params, jnp.zeros((2, 2), jnp.int32), dev, jax.random.PRNGKey(0), 0.0)
    assert int(greedy.items[0]) == int(greedy.items[1])
