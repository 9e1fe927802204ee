"""The trie-factored softmax (config.model.sid_softmax="trie"): states, loss, decoders, RL, config."""

import functools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infer_toy as toy
from gream_jax.config_defaults import base_config, validate_config
from gream_jax.config_defaults.base import ConfigError
from gream_jax.index.trie import build_trie_from_codes
from gream_jax.infer.beam import constrained_beam_search
from gream_jax.infer.recommender import check_sid_softmax
from gream_jax.infer.sampling import sample_sid, sample_tokens
from gream_jax.model import trie_softmax as ts


@pytest.fixture(scope="module")
def setup():
    codes, lengths, sizes = toy.toy_sids(n_items=40)
    trie = build_trie_from_codes(codes, lengths)
    table, vocab = toy.token_table(sizes)
    levels = np.arange(codes.shape[1])[None, :].repeat(len(codes), 0)
    item_tokens = np.where(codes >= 0, table[levels, np.maximum(codes, 0)], -1)
    return dict(trie=trie, table=table, vocab=vocab, dev=trie.to_device(table, renormalise=True),
                item_tokens=item_tokens, lengths=lengths, codes=codes)


def _sid(s, item):
    return [int(t) for t in s["item_tokens"][item, :s["lengths"][item]]]


def test_token_states_follow_sids_and_reset_outside(setup):
    s = setup
    a, b = _sid(s, 0), _sid(s, 1)
    text = [1, 2]
    tokens = text + a + [3] + b + a[1:2] + [4]          # a[1:2] after a complete SID is malformed
    states = np.asarray(ts.token_states(s["dev"], jnp.asarray([tokens], jnp.int32)))[0]
    assert list(states[:2]) == [-1, -1]
    assert states[1 + len(a)] == s["trie"].item_leaf[0]                 # after the whole SID: its leaf
    assert all(x >= 0 for x in states[2:2 + len(a)])
    assert states[2 + len(a)] == -1                                      # text resets
    assert states[3 + len(a) + len(b) - 1] == s["trie"].item_leaf[1]
    assert states[3 + len(a) + len(b)] == -1                             # an inner token outside an SID
    assert states[-1] == -1


def _masked_reference(logits, labels, states, weights, dev):
    lp = jax.nn.log_softmax(ts.mask_logits(dev, logits, states), axis=-1)
    picked = jnp.take_along_axis(lp, labels[..., None], axis=-1)[..., 0]
    ok = picked > -1e20
    return jnp.sum(jnp.where(ok, -picked, 0.0) * weights), jnp.sum(weights * ok)


def test_loss_equals_masked_full_softmax_and_gradients_match(setup):
    s = setup
    rng = np.random.default_rng(0)
    rows = []
    for r in range(3):
        seq = [int(rng.integers(0, toy.N_SPECIAL))]
        while len(seq) < 24:
            seq += _sid(s, int(rng.integers(40))) + [int(rng.integers(0, toy.N_SPECIAL))]
        rows.append(seq[:24])
    rows[2][5] = _sid(s, 3)[1]                       # one malformed inner token: unscored, counted
    tokens = jnp.asarray(rows, jnp.int32)
    states = ts.token_states(s["dev"], tokens)
    d = 8
    hidden = jnp.asarray(rng.normal(size=(3, 23, d)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(s["vocab"], d)), jnp.float32)
    labels, st = tokens[:, 1:], states[:, :-1]
    weights = jnp.asarray(rng.random((3, 23)) < 0.8, jnp.float32)
    outer = jnp.asarray(ts.outer_token_ids(s["trie"], s["table"], s["vocab"]))

    def ours(h, w):
        return ts.trie_nll_terms(h, w, labels, st, weights, s["dev"], outer)

    def ref(h, w):
        return _masked_reference(jnp.einsum("bnd,vd->bnv", h, w), labels, st, weights, s["dev"])

    (nll, count, hits, bad), (r_nll, r_count) = ours(hidden, head), ref(hidden, head)
    np.testing.assert_allclose(float(nll), float(r_nll), rtol=1e-5)
    assert float(count) == float(r_count) and 0 < float(hits) <= float(count)
    # The malformed token's label (and the orphaned rest of its SID) are counted, not scored.
    assert float(bad) == pytest.approx(float(jnp.sum(weights) - r_count)) and float(bad) >= 1
    g1 = jax.grad(lambda h, w: ours(h, w)[0], argnums=(0, 1))(hidden, head)
    g2 = jax.grad(lambda h, w: ref(h, w)[0], argnums=(0, 1))(hidden, head)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # An inner label only competes with its siblings: a much cheaper softmax than the vocabulary.
    assert outer.shape[0] < s["vocab"]

    # "level": an inner label competes with every token of its own SID level instead.
    table = s["table"]
    level_ids = tuple(np.asarray(table[lvl][table[lvl] >= 0]) for lvl in range(1, table.shape[0]))

    def ours_level(h, w):
        return ts.trie_nll_terms(h, w, labels, st, weights, s["dev"], outer, level_ids)

    def ref_level(h, w):
        logits = jnp.einsum("bnd,vd->bnv", h, w)
        inner = np.zeros(s["vocab"], bool)
        inner[np.concatenate(level_ids)] = True
        level_of = np.full(s["vocab"], -1)
        for lvl, ids in enumerate(level_ids):
            level_of[ids] = lvl
        same = jnp.asarray(level_of)[labels][..., None] == jnp.asarray(level_of)[None, None, :]
        inside = ts._has_children(s["dev"], st)[..., None]
        allowed = jnp.where(inside, same & jnp.asarray(inner)[None, None, :], ~jnp.asarray(inner)[None, None, :])
        lp = jax.nn.log_softmax(jnp.where(allowed, logits, ts.NEG_INF), axis=-1)
        picked = jnp.take_along_axis(lp, labels[..., None], axis=-1)[..., 0]
        ok = (ts.mask_logits(s["dev"], logits, st) > -1e20)
        ok = jnp.take_along_axis(ok, labels[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(ok, -picked, 0.0) * weights), jnp.sum(weights * ok)

    (l_nll, l_count, _, l_bad), (lr_nll, lr_count) = ours_level(hidden, head), ref_level(hidden, head)
    np.testing.assert_allclose(float(l_nll), float(lr_nll), rtol=1e-5)
    assert float(l_count) == float(lr_count) == float(count) and float(l_bad) == float(bad)
    assert float(l_nll) > float(nll)          # a level has at least as many competitors as a node
    g1 = jax.grad(lambda h, w: ours_level(h, w)[0], argnums=(0, 1))(hidden, head)
    g2 = jax.grad(lambda h, w: ref_level(h, w)[0], argnums=(0, 1))(hidden, head)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def _trie_scores(s, params, prompts):
    """Reference: log P(item) with each SID token normalised over its node's children."""
    logits, cache = toy.prefill(params, prompts)
    trie = s["trie"]
    out = np.zeros((prompts.shape[0], len(s["lengths"])))
    for item in range(len(s["lengths"])):
        lg, c, node = logits, cache, 0
        for tok in _sid(s, item):
            _, kids = trie.children(node)
            kid_tokens = np.asarray(s["dev"].edge_token)[trie.child_start[node]:trie.child_start[node + 1]]
            row = np.asarray(lg)
            out[:, item] += row[:, tok] - np.log(np.exp(row[:, kid_tokens]).sum(-1))
            node = int(kids[list(kid_tokens).index(tok)])
            lg, c = toy.step_fn(params, jnp.full((prompts.shape[0],), tok), c)
    return out


def test_renormalised_beam_is_exhaustive_trie_scoring(setup):
    s = setup
    params = toy.init_params(s["vocab"])
    prompts = jnp.array(np.random.default_rng(3).integers(0, toy.N_SPECIAL, (4, 4)))

    @functools.partial(jax.jit, static_argnames=("beam", "k"))
    def run(params, prompts, dev, beam, k):
        logits, cache = toy.prefill(params, prompts)
        return constrained_beam_search(toy.step_fn, toy.reorder_fn, params, logits, cache, dev, beam, k)

    res = run(params, prompts, s["dev"], 40, 8)
    ref = _trie_scores(s, params, prompts)
    ref_items = np.argsort(-ref, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(np.asarray(res.items), ref_items)
    np.testing.assert_allclose(np.asarray(res.scores), np.take_along_axis(ref, ref_items, 1), atol=1e-4)
    # Under the vocabulary softmax the same model ranks differently: the flag is what changes it.
    plain = run(params, prompts, s["trie"].to_device(s["table"]), 40, 8)
    assert not np.allclose(np.asarray(plain.scores), np.asarray(res.scores))


def test_samplers_draw_from_the_trie_distribution(setup):
    s = setup
    params = toy.init_params(s["vocab"])
    prompts = jnp.array(np.random.default_rng(4).integers(0, toy.N_SPECIAL, (64, 3)))
    logits, cache = toy.prefill(params, prompts)
    text = jax.jit(lambda lg, c, key: sample_tokens(
        toy.step_fn, params, lg, c, key, max_new_tokens=12, stop_tokens=(99,), temperature=1.0, top_p=1.0,
        pad_id=0, trie=s["dev"]))(logits, cache, jax.random.PRNGKey(0))
    tokens = np.asarray(text.tokens)
    states = np.asarray(ts.token_states(s["dev"], jnp.asarray(tokens)))
    inner = np.asarray(ts.inner_token_mask(s["dev"], s["vocab"]))
    for row, st in zip(tokens, states):
        for t in range(1, len(row)):
            if inner[row[t]]:      # an inner SID token only ever continues an SID
                assert st[t - 1] >= 0 and st[t] >= 0
    assert inner[tokens].any()  # the toy model does write SIDs into its text
    sid = jax.jit(lambda lg, c, key: sample_sid(toy.step_fn, params, lg, c, s["dev"], key, 1.0))(
        logits, cache, jax.random.PRNGKey(1))
    # Its log-probabilities are the children-normalised ones: the first token's, recomputed.
    first = np.asarray(sid.tokens)[:, 0]
    kids = np.asarray(s["dev"].edge_token)[:s["trie"].child_start[1]]
    row = np.asarray(logits)
    expect = row[np.arange(64), first] - np.log(np.exp(row[:, kids]).sum(-1))
    np.testing.assert_allclose(np.asarray(sid.logprobs)[:, 0], expect, rtol=1e-5, atol=1e-5)


def test_rl_logprobs_use_the_trie_distribution():
    from gream_jax import mesh as mesh_lib
    from gream_jax.model import api as model_api
    from gream_jax.model.config import ModelConfig
    from gream_jax.train import srpo
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]], np.int32)
    trie = build_trie_from_codes(codes, np.full(5, 2))
    table = np.array([[40, 41, -1], [50, 51, 52]], np.int32)
    dev = trie.to_device(table, renormalise=True)
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=16, max_position_embeddings=64)
    params = model_api.init_params(cfg, jax.random.PRNGKey(0), mesh)
    tokens = np.array([[0, 3, 7, 41, 50, 40, 51]] * 8, np.int32)   # prompt 3 tokens + items 2 and 1
    mask = np.ones_like(tokens)
    logp, entropy = srpo.response_logprobs(params, cfg, tokens, mask, 4, dev)
    full = np.asarray(model_api.forward(params, cfg, tokens, mask))[0]
    lse = lambda row, ids: np.log(np.exp(row[ids]).sum())   # noqa: E731
    outer = [t for t in range(64) if t not in (50, 51, 52)]
    expect = [full[2, 41] - lse(full[2], outer), full[3, 50] - lse(full[3], [50, 51, 52]),
              full[4, 40] - lse(full[4], outer), full[5, 51] - lse(full[5], [50, 51])]
    np.testing.assert_allclose(np.asarray(logp)[0], expect, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(entropy)))
    fn = srpo.make_logprob_fn(cfg, mesh, mesh_lib.DEFAULT_RULES, 4, True)
    with jax.set_mesh(mesh):
        batched = fn(params, tokens[None], mask[None], dev)
    np.testing.assert_allclose(np.asarray(batched)[0, 0], expect, rtol=1e-4, atol=1e-5)


def test_config_and_model_mismatch_are_refused():
    config = base_config()
    config.model.sid_softmax = "tree"
    with pytest.raises(ConfigError, match="sid_softmax"):
        validate_config(config)
    config.model.sid_softmax = "trie"
    config.train.loss_chunk_tokens = 1024
    with pytest.raises(ConfigError, match="loss_chunk_tokens"):
        validate_config(config)
    config.train.loss_chunk_tokens = 0
    validate_config(config)
    with pytest.raises(ValueError, match="sid_softmax='vocab'"):
        check_sid_softmax(config, {"stage": "sft"}, "/w/sft/final")     # an older model: vocab
    check_sid_softmax(config, {"sid_softmax": "trie"}, "/w/sft/final")


def _trie_steps(config, inputs, host, n=3):
    from gream_jax.model import api
    from gream_jax.train import sft
    from gream_jax.train.sft_stage import _trie_loss
    opt, sched = sft.make_optimizer(config.train), sft.learning_rate_schedule(config.train)
    apply_fn = lambda p, t, m, pos, seg, return_hidden=False: api.forward(      # noqa: E731
        p, inputs.model_cfg, t, m, pos, seg, return_hidden=return_hidden)
    trie_loss = _trie_loss(config, inputs.model_cfg, inputs.tokenizer, inputs.semantic_ids, inputs.mesh)
    step = sft.make_train_step(apply_fn, opt, sched, head_fn=lambda p: api.lm_head_rows(p, inputs.model_cfg),
                               trie_loss=trie_loss)
    state = sft.init_state(inputs.params, opt, 0, inputs.mesh)
    step = sft.jit_train_step(step, state, inputs.mesh, inputs.rules)
    out = []
    for _ in range(n):
        with jax.set_mesh(inputs.mesh):
            state, m = step(state, sft.device_batch(host, 1, inputs.mesh, inputs.rules))
        out.append({k: float(v) for k, v in jax.device_get(m).items()})
    return out


@pytest.mark.parametrize("mode", ["trie", "level"])
def test_sft_step_with_trie_loss_trains_and_shards(mode):
    from sft_toy import tiny_config, tiny_inputs
    from gream_jax.train.sft_data import make_streams
    config = tiny_config()
    config.model.sid_softmax = mode
    one = tiny_inputs(config, jax.devices()[:1])
    host = make_streams(config, one.split, one.semantic_ids, one.items, one.tokenizer).alignment.batch(0)
    m1 = _trie_steps(config, one, host)
    m8 = _trie_steps(config, tiny_inputs(config, jax.devices()), host)
    assert m1[-1]["loss"] < m1[0]["loss"]
    assert m1[0]["trie_unscored"] == 0.0          # data built by the tasks never cuts an SID
    np.testing.assert_allclose([m["loss"] for m in m1], [m["loss"] for m in m8], rtol=1e-5)


def test_next_item_terms_match_a_hand_computed_all_items_softmax():
    """Scored: positions whose label starts a target SID whose item token is in the row; skipped:
    a context SID (weight 0), an SID cut by the row end, text labels, inner SID labels."""
    rng = np.random.default_rng(0)
    first, second, items = np.arange(10, 13), np.arange(13, 16), np.arange(16, 26)
    vocab, d = 28, 6
    c1, c2 = first.tolist(), second.tolist()
    # row: text, SID(item 3) as context, SID(item 7) target, text, SID(item 1) target, SID cut (2 tokens)
    labels = [1, c1[0], c2[1], 19, c1[2], c2[0], 23, 2, c1[1], c2[2], 17, c1[0], c2[0]]
    weights = [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    n = len(labels)
    hidden = rng.normal(size=(1, n, d)).astype(np.float32)
    head = rng.normal(size=(vocab, d)).astype(np.float32)
    total, count, hits = ts.next_item_terms(jnp.asarray(hidden), jnp.asarray(head), jnp.asarray([labels]),
                                            jnp.asarray([weights], jnp.float32), jnp.asarray(first),
                                            jnp.asarray(items), 3)
    expect_total, expect_hits = 0.0, 0.0
    for t, item_token in ((4, 23), (8, 17)):
        logits = head[items] @ hidden[0, t]
        nll = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[item_token - 16]
        expect_total += nll
        expect_hits += float(logits[item_token - 16] >= logits.max())
    assert float(count) == 2.0
    np.testing.assert_allclose(float(total), expect_total, rtol=1e-5)
    assert float(hits) == expect_hits
    # The gradient reaches the item rows and the chosen hidden states only.
    g_h = jax.grad(lambda h: ts.next_item_terms(h, jnp.asarray(head), jnp.asarray([labels]),
                                                jnp.asarray([weights], jnp.float32), jnp.asarray(first),
                                                jnp.asarray(items), 3)[0])(jnp.asarray(hidden))
    nonzero = np.flatnonzero(np.abs(np.asarray(g_h)[0]).sum(-1) > 0)
    assert nonzero.tolist() == [4, 8]


def test_sft_step_with_next_item_objective_logs_it_and_shards():
    from sft_toy import tiny_config, tiny_inputs
    from gream_jax.train.sft_data import make_streams
    config = tiny_config()
    config.model.sid_softmax = "level"
    config.index.collision = "item_token"
    config.train.next_item_weight = 1.0
    one = tiny_inputs(config, jax.devices()[:1])
    host = make_streams(config, one.split, one.semantic_ids, one.items, one.tokenizer).alignment.batch(0)
    m1 = _trie_steps(config, one, host, n=4)
    m8 = _trie_steps(config, tiny_inputs(config, jax.devices()), host, n=4)
    assert m1[-1]["next_item_nll"] < m1[0]["next_item_nll"]
    assert m1[0]["next_item_nll"] == pytest.approx(np.log(30), rel=0.2)   # 30 items, random init
    np.testing.assert_allclose([m["next_item_nll"] for m in m1], [m["next_item_nll"] for m in m8], rtol=1e-4)
    config.train.next_item_weight = 0.0
    m0 = _trie_steps(config, tiny_inputs(config, jax.devices()[:1]), host, n=2)   # params were donated
    assert "next_item_nll" not in m0[0]
    assert m0[1]["loss"] != pytest.approx(m1[1]["loss"], rel=1e-6)   # the objective changed the update


def test_next_item_objective_needs_an_item_unique_last_token():
    config = base_config()
    config.model.sid_softmax = "level"
    config.index.collision = "rank_suffix"
    config.train.next_item_weight = 0.5
    with pytest.raises(ConfigError, match="next_item_weight"):
        validate_config(config)
    config.index.collision = "item_token"
    config.model.sid_softmax = "vocab"
    with pytest.raises(ConfigError, match="sid_softmax"):
        validate_config(config)
    config.model.sid_softmax = "level"
    validate_config(config)
    config.train.next_item_weight = -1.0
    with pytest.raises(ConfigError, match="must be >= 0"):
        validate_config(config)


def test_item_head_reranking_needs_a_model_trained_with_the_head():
    config = base_config()
    config.model.sid_softmax = "level"
    config.eval.item_head_weight = 2.0
    config.index.collision = "rank_suffix"
    with pytest.raises(ConfigError, match="item_head_weight"):
        validate_config(config)
    config.index.collision = "item_token"
    validate_config(config)
    with pytest.raises(ValueError, match="trained without it"):
        check_sid_softmax(config, {"sid_softmax": "level"}, "/w/sft/final")
    check_sid_softmax(config, {"sid_softmax": "level", "next_item_weight": 1.0}, "/w/sft/final")
    config.eval.item_head_weight = 0.0
    check_sid_softmax(config, {"sid_softmax": "level"}, "/w/sft/final")


def test_item_unique_last_level_is_checked_on_the_sid_table():
    """The SID table itself must name each item by its last token (the config alone is not enough:
    an index built with another scheme is refused by the SFT loss and the re-ranking alike)."""
    from sft_toy import toy_sids
    from gream_jax.index.sid import SidArtifactError, require_item_unique_last_level
    require_item_unique_last_level(toy_sids(12), "x")                 # 2 levels + item token
    codes, lengths, sizes = toy.toy_sids(n_items=40)                  # rank suffix: 3-4 tokens
    rank_suffix = type("S", (), {"lengths": lengths, "level_sizes": sizes})()
    with pytest.raises(SidArtifactError, match="config.eval.item_head_weight=2.*SID lengths 3..4"):
        require_item_unique_last_level(rank_suffix, "config.eval.item_head_weight=2")


def _completions(dev, host_trie, row_tokens):
    """[(step, leaf node, parent node)] of the items a row's text completes, by the trie walk."""
    states = np.asarray(ts.token_states(dev, jnp.asarray(row_tokens)[None]))[0]
    out, prev = [], -1
    for t, st in enumerate(states):
        if st >= 0 and host_trie.node_item[st] >= 0:
            out.append((t, int(st), int(prev)))
        prev = st
    return out


@pytest.mark.parametrize("limit", [1, 2])
def test_max_item_mentions_caps_repeated_items_with_a_fallback(setup, limit):
    """`sample_tokens(max_item_mentions=)`: no row completes an item more than `limit` times, except
    where every item under that SID prefix was used up (the row must still finish its SID); rows
    that never reached the cap draw exactly the unlimited run's tokens (same key)."""
    s = setup
    params = toy.init_params(s["vocab"], seed=2)
    prompts = jnp.array(np.random.default_rng(5).integers(0, toy.N_SPECIAL, (64, 3)))
    logits, cache = toy.prefill(params, prompts)

    def run(m):
        return np.asarray(jax.jit(lambda lg, c, key: sample_tokens(
            toy.step_fn, params, lg, c, key, max_new_tokens=40, stop_tokens=(99,), temperature=1.0, top_p=1.0,
            pad_id=0, trie=s["dev"], max_item_mentions=m))(logits, cache, jax.random.PRNGKey(3)).tokens)

    free, capped = run(0), run(limit)
    trie = s["trie"]
    over_free = 0
    for row_free, row in zip(free, capped):
        free_max = max(Counter(leaf for _, leaf, _ in _completions(s["dev"], trie, row_free)).values(), default=0)
        over_free += free_max > limit
        counts = {}
        for _, leaf, parent in _completions(s["dev"], trie, row):
            if counts.get(leaf, 0) >= limit:       # allowed only if all leaf siblings are used up
                _, kids = trie.children(parent)
                assert all(counts.get(int(k), 0) >= limit for k in kids if trie.node_item[k] >= 0)
            counts[leaf] = counts.get(leaf, 0) + 1
        if free_max <= limit:
            np.testing.assert_array_equal(row, row_free)
    assert over_free > 0                          # the unlimited toy text does repeat items
    with pytest.raises(ValueError, match="trie-softmax"):
        sample_tokens(toy.step_fn, params, logits, cache, jax.random.PRNGKey(0), max_new_tokens=2,
                      stop_tokens=(99,), temperature=1.0, top_p=1.0, pad_id=0, trie=None, max_item_mentions=1)
