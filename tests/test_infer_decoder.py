"""Jitted Direct / Reasoning programs on a tiny random Qwen3 model against teacher forcing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infer_toy as toy
from gream_jax.index.trie import build_trie_from_codes
from gream_jax.infer import decoder
from gream_jax.infer.batching import left_pad
from gream_jax.model import api

ANSWER, THINK_CLOSE, PAD = 3, 4, 0


@pytest.fixture(scope="module")
def model():
    t = toy.tiny_qwen(n_items=24, level_sizes=(3, 3))
    codes, lengths, table, cfg, params, vocab = t["codes"], t["lengths"], t["table"], t["cfg"], t["params"], t["vocab"]
    trie = build_trie_from_codes(codes, lengths)
    levels = np.arange(codes.shape[1])[None].repeat(len(codes), 0)
    item_tokens = np.where(codes >= 0, table[levels, np.maximum(codes, 0)], -1)
    return dict(cfg=cfg, params=params, dev=trie.to_device(table), item_tokens=item_tokens,
                lengths=lengths, vocab=vocab)


@functools.partial(jax.jit, static_argnames="model_cfg")
def _log_probs(params, tokens, mask, model_cfg):
    return jax.nn.log_softmax(api.forward(params, model_cfg, tokens, mask), -1)


def teacher_forced_scores(m, prompt):
    """log P(item | prompt) for every item with one full forward pass per item."""
    seqs = [list(prompt) + list(m["item_tokens"][i, :m["lengths"][i]]) for i in range(len(m["lengths"]))]
    width = max(map(len, seqs))
    tokens, mask = left_pad(seqs, width, len(seqs), PAD)
    logp = np.asarray(_log_probs(m["params"], jnp.asarray(tokens), jnp.asarray(mask), model_cfg=m["cfg"]))
    out = []
    for i, s in enumerate(seqs):
        n = m["lengths"][i]
        pos = np.arange(width - n - 1, width - 1)
        out.append(logp[i, pos, tokens[i, width - n:]].sum())
    return np.array(out)


def direct(m, prompts, beam, k):
    width = max(map(len, prompts))
    tokens, mask = left_pad(prompts, width, len(prompts), PAD)
    return decoder.direct_search(m["params"], jnp.asarray(tokens), jnp.asarray(mask), m["dev"], model_cfg=m["cfg"],
                                 beam_size=beam, top_k=k, cache_len=decoder.direct_cache_len(width, m["dev"]))


def test_direct_exhaustive_beam_equals_teacher_forcing(model):
    m = model
    prompts = [[7, 8, 9, 10], [11, 12, 13, 5], [5, 6, 7]]      # ragged: left padding must not leak
    res = direct(m, prompts, beam=24, k=8)
    for u, p in enumerate(prompts):
        ref = teacher_forced_scores(m, p)
        order = np.argsort(-ref, kind="stable")[:8]
        np.testing.assert_array_equal(np.asarray(res.items[u]), order)
        np.testing.assert_allclose(np.asarray(res.scores[u]), ref[order], atol=2e-3)


def _reason(m, tokens, mask, spec, rng, temperature):
    return decoder.reasoning_search(m["params"], jnp.asarray(tokens), jnp.asarray(mask), m["dev"], rng,
                                    jnp.float32(temperature), jnp.float32(1.0), model_cfg=m["cfg"], spec=spec,
                                    cache_len=decoder.reasoning_cache_len(tokens.shape[1], spec, m["dev"]))


def _tokens_some_chains_write(m, tokens, mask, rng, num_samples):
    """A free-running spec (a stop token the model never writes), its chains `[b * n, budget]`, and the
    tokens that some of them write and others do not: stopping at one makes some rows answer and some not."""
    free = decoder.ReasoningSpec(budget=6, num_samples=num_samples, beam_size=6, top_k=4,
                                 answer_open=m["vocab"] + 5, think_close=THINK_CLOSE, pad_id=PAD)
    chains = np.asarray(_reason(m, tokens, mask, free, rng, 1.0).think_tokens)
    rows = len(chains)
    return free, chains, [t for t in range(1, m["vocab"])
                          if t != THINK_CLOSE and 0 < sum(t in r for r in chains) < rows]


def test_reasoning_continuation_equals_direct_on_the_written_prompt(model):
    m = model
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [6, 6]]
    tokens, mask = left_pad(prompts, 4, 4, PAD)
    rng = jax.random.PRNGKey(3)
    # First with a stop token the model never writes, then stop at a token that some chains write
    # and others do not: the same rng gives the same chains up to each row's stop.
    free, chains, partial = _tokens_some_chains_write(m, tokens, mask, rng, num_samples=2)
    stop, end = partial[0], partial[-1]
    spec = free._replace(answer_open=stop, end_tokens=(end,))
    out = _reason(m, tokens, mask, spec, rng, 1.0)
    think, keep = np.asarray(out.think_tokens), np.asarray(out.think_lengths)
    answered, forced = np.asarray(out.answered), np.asarray(out.forced_close)
    assert answered.any() and not answered.all()
    assert (~answered & (keep < spec.budget)).any()     # some chains ended their turn without answering
    written = []
    for row in range(8):
        chain = list(think[row, :keep[row]])
        assert stop not in chain and end not in chain
        np.testing.assert_array_equal(chain, chains[row, :keep[row]])
        if answered[row]:
            assert think[row, keep[row]] == stop and not forced[row]
        else:
            assert keep[row] == spec.budget or think[row, keep[row]] == end
            assert forced[row] == (THINK_CLOSE not in chain)
        written.append(prompts[row // 2] + chain + ([THINK_CLOSE] if forced[row] else []) + [stop])
    ref = direct(m, written, beam=6, k=4)
    np.testing.assert_array_equal(np.asarray(out.beams.items), np.asarray(ref.items))
    np.testing.assert_allclose(np.asarray(out.beams.scores), np.asarray(ref.scores), atol=2e-3)
    greedy = np.asarray(_reason(m, tokens, mask, spec, rng, 0.0).think_tokens)
    np.testing.assert_array_equal(greedy[0::2], greedy[1::2])   # greedy chains of a user agree


def test_sample_chains_are_reasoning_searchs_chains_and_chain_prompts_its_beam_prompts(model):
    """`decoder.sample_chains` (SRPO's chain rollouts) draws exactly the chains `reasoning_search`
    draws from the same key, and `srpo_chain.chain_prompts` writes from them the tokens after
    which the eval's beam starts (checked by the beam: Direct mode on those prompts gives the
    same items)."""
    from gream_jax.train.srpo_chain import chain_prompts
    m = model
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [6, 6]]
    tokens, mask = left_pad(prompts, 4, 4, PAD)
    rng = jax.random.PRNGKey(3)
    free, _, partial = _tokens_some_chains_write(m, tokens, mask, rng, num_samples=1)
    spec = free._replace(answer_open=partial[0])
    ref = _reason(m, tokens, mask, spec, rng, 1.0)
    think, keep, answered, forced = (np.asarray(x) for x in decoder.sample_chains(
        m["params"], jnp.asarray(tokens), jnp.asarray(mask), m["dev"], rng, jnp.float32(1.0), jnp.float32(1.0),
        model_cfg=m["cfg"], spec=spec, cache_len=decoder.reasoning_cache_len(4, spec, m["dev"])))
    np.testing.assert_array_equal(think, np.asarray(ref.think_tokens))
    np.testing.assert_array_equal(keep, np.asarray(ref.think_lengths))
    np.testing.assert_array_equal(answered, np.asarray(ref.answered))
    np.testing.assert_array_equal(forced, np.asarray(ref.forced_close))
    assert answered.any() and not answered.all()
    written = chain_prompts(prompts, think, keep, forced, THINK_CLOSE, spec.answer_open)
    assert all(w[-1] == spec.answer_open for w in written)
    assert [len(w) for w in written] == [len(p) + k + int(f) + 1 for p, k, f in zip(prompts, keep, forced)]
    beam = direct(m, written, beam=6, k=4)
    np.testing.assert_array_equal(np.asarray(beam.items), np.asarray(ref.beams.items))


def test_direct_item_head_reranks_the_beams_items_by_the_fused_score(model):
    """config.eval.item_head_weight: the beam's items (all beam_size of them), ordered by
    log P(item) + w log q(item), q the softmax of the first-token logits over every item's
    last-token id; the best K kept."""
    m = model
    prompts = [[7, 8, 9, 10], [11, 12, 13, 5]]
    last = np.asarray([m["item_tokens"][i, m["lengths"][i] - 1] for i in range(len(m["lengths"]))], np.int32)
    width = max(map(len, prompts))
    tokens, mask = left_pad(prompts, width, len(prompts), PAD)
    plain = direct(m, prompts, beam=12, k=12)
    fused = decoder.direct_search(m["params"], jnp.asarray(tokens), jnp.asarray(mask), m["dev"], jnp.asarray(last),
                                  model_cfg=m["cfg"], beam_size=12, top_k=8,
                                  cache_len=decoder.direct_cache_len(width, m["dev"]), item_head_weight=2.0)
    first = np.asarray(_log_probs(m["params"], jnp.asarray(tokens), jnp.asarray(mask), model_cfg=m["cfg"]))[:, -1]
    for u in range(len(prompts)):
        logq = first[u, last] - np.logaddexp.reduce(first[u, last])
        cand = np.asarray(plain.items[u])
        score = np.asarray(plain.scores[u]) + 2.0 * logq[cand]
        order = np.argsort(-score, kind="stable")[:8]
        np.testing.assert_array_equal(np.asarray(fused.items[u]), cand[order])
        np.testing.assert_allclose(np.asarray(fused.scores[u]), score[order], atol=2e-3)
        tok = np.asarray(fused.tokens[u])
        for j, item in enumerate(np.asarray(fused.items[u])):            # tokens follow their items
            np.testing.assert_array_equal(tok[j, :m["lengths"][item]], m["item_tokens"][item, :m["lengths"][item]])
    assert not np.array_equal(np.asarray(fused.items), np.asarray(plain.items)[:, :8])   # the head mattered


def test_direct_candidates_fused_on_the_host_equal_the_jitted_rerank(model):
    """config.eval.item_head_weights: one unfused decoding pass (`decoder.direct_candidates`),
    fused on the host for several weights (`recommender.rank_candidates`), gives what the jitted
    re-ranking gives at each weight, and the plain beam at weight 0."""
    from gream_jax.infer.recommender import Candidates, rank_candidates
    m = model
    prompts = [[7, 8, 9, 10], [11, 12, 13, 5], [5, 6, 7]]
    last = np.asarray([m["item_tokens"][i, m["lengths"][i] - 1] for i in range(len(m["lengths"]))], np.int32)
    width = max(map(len, prompts))
    tokens, mask = left_pad(prompts, width, len(prompts), PAD)
    cache_len = decoder.direct_cache_len(width, m["dev"])
    res, logq = decoder.direct_candidates(m["params"], jnp.asarray(tokens), jnp.asarray(mask), m["dev"],
                                          jnp.asarray(last), model_cfg=m["cfg"], beam_size=12, cache_len=cache_len)
    cands = Candidates(items=np.asarray(res.items), sid_scores=np.asarray(res.scores), head_logq=np.asarray(logq))
    first = np.asarray(_log_probs(m["params"], jnp.asarray(tokens), jnp.asarray(mask), model_cfg=m["cfg"]))[:, -1]
    for u in range(len(prompts)):                                   # log q read off the same logits
        ref = first[u, last] - np.logaddexp.reduce(first[u, last])
        np.testing.assert_allclose(cands.head_logq[u], ref[cands.items[u]], atol=2e-4)
    plain = direct(m, prompts, beam=12, k=6)
    zero = rank_candidates(cands, 0.0, 6)
    np.testing.assert_array_equal(zero.items, np.asarray(plain.items))
    np.testing.assert_allclose(zero.scores, np.asarray(plain.scores), atol=1e-5)
    orders = set()
    for weight in (0.5, 2.0, 5.0):
        fused = decoder.direct_search(m["params"], jnp.asarray(tokens), jnp.asarray(mask), m["dev"],
                                      jnp.asarray(last), model_cfg=m["cfg"], beam_size=12, top_k=6,
                                      cache_len=cache_len, item_head_weight=weight)
        host = rank_candidates(cands, weight, 6)
        np.testing.assert_array_equal(host.items, np.asarray(fused.items))
        np.testing.assert_allclose(host.scores, np.asarray(fused.scores), atol=1e-4)
        orders.add(host.items.tobytes())
    assert len(orders) > 1                                           # the weights rank differently


def test_reasoning_with_decode_windows_samples_what_the_full_cache_does(model):
    """Decode windows (infer.windows) only skip masked cache slots: chains, answers and scores are the
    full-cache program's, with windows ending before, at and after the rows' stops."""
    m = model
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    tokens, mask = left_pad(prompts, 4, 3, PAD)
    full = decoder.ReasoningSpec(budget=14, num_samples=2, beam_size=6, top_k=4, answer_open=m["vocab"] + 5,
                                 think_close=THINK_CLOSE, pad_id=PAD)
    for temperature in (1.0, 0.0):
        ref = _reason(m, tokens, mask, full, jax.random.PRNGKey(5), temperature)
        for step in (3, 8):
            out = _reason(m, tokens, mask, full._replace(decode_window=step), jax.random.PRNGKey(5), temperature)
            np.testing.assert_array_equal(np.asarray(out.think_tokens), np.asarray(ref.think_tokens))
            np.testing.assert_array_equal(np.asarray(out.beams.items), np.asarray(ref.beams.items))
            np.testing.assert_allclose(np.asarray(out.beams.scores), np.asarray(ref.beams.scores), atol=1e-4)
            np.testing.assert_allclose(np.asarray(out.think_logprob), np.asarray(ref.think_logprob), atol=1e-4)


def test_reasoning_chains_never_write_a_banned_token(model):
    """`ReasoningSpec.banned_tokens` (config.eval.ban_stray_answer_close bans `</answer>`): a token
    that some free-running chains write appears in none once banned, and the chains that never
    wrote it are unchanged (same key, same draws)."""
    m = model
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [6, 6]]
    tokens, mask = left_pad(prompts, 4, 4, PAD)
    rng = jax.random.PRNGKey(3)
    free, chains, partial = _tokens_some_chains_write(m, tokens, mask, rng, num_samples=2)
    banned = partial[0]
    out = np.asarray(_reason(m, tokens, mask, free._replace(banned_tokens=(banned,)), rng, 1.0).think_tokens)
    assert not (out == banned).any()
    untouched = ~(chains == banned).any(-1)
    assert untouched.any() and not untouched.all()
    np.testing.assert_array_equal(out[untouched], chains[untouched])


def test_reasoning_spec_takes_the_chain_rules_from_the_config():
    from gream_jax.config_defaults import eval as eval_defaults
    from gream_jax.infer.recommender import reasoning_spec

    class Tokenizer:
        ids = {"<answer>": 3, "</think>": 4, "</answer>": 9, "<|im_end|>": 11}
        eos_id, pad_id = 2, 0

        def token_to_id(self, token):
            return self.ids.get(token)

    import ml_collections
    config = ml_collections.ConfigDict({"eval": eval_defaults.defaults(), "model": {"sid_softmax": "level"}})
    spec = reasoning_spec(Tokenizer(), config)
    assert spec.banned_tokens == (9,) and spec.answer_open == 3 and spec.end_tokens == (2, 11)
    assert spec.max_item_mentions == 0
    config.eval.ban_stray_answer_close = False
    config.eval.max_item_mentions = 3
    assert reasoning_spec(Tokenizer(), config).banned_tokens == ()
    assert reasoning_spec(Tokenizer(), config).max_item_mentions == 3
    config.model.sid_softmax = "vocab"        # SIDs are not tracked through the trie: no limit
    assert reasoning_spec(Tokenizer(), config).max_item_mentions == 0
    Tokenizer.ids.pop("</answer>")
    with pytest.raises(ValueError, match="</answer>"):
        reasoning_spec(Tokenizer(), config)
