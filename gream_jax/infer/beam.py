"""Trie-constrained beam search over semantic IDs, generic over the decoder.

The decoder is given as two functions so this module is independent of the model:
  step_fn(params, tokens [n], cache) -> (logits [n, V], cache)     one incremental decode step
  reorder_fn(cache, indices [m]) -> cache                          row gather (m may differ from n)
and the search starts from `first_logits [b, V]`, the distribution of the first SID token
(the prefill's last position), with `cache` holding `b` rows (one per user).

At every step each live beam may only extend to a child of its trie node, so every surviving
hypothesis is a prefix of a real item's SID and every returned hypothesis is a real item. A beam
that reaches a leaf is *finished*: it keeps its score and stays in the beam (its one candidate is
"stay"), competing with the still-growing beams, so SIDs of different lengths (4 or 5 tokens with a
rank suffix) are handled exactly. All beams of one user are distinct trie nodes, so the K returned
items are distinct.

With `trie.renormalise` (a model trained with `config.model.sid_softmax = "trie"` or "level",
`gream_jax.model.trie_softmax`) each SID token is instead normalised over its node's children, which is that model's
own P(item | prompt) up to the first level's outer mass (a constant per user, so the ranking is the
model's exactly). Otherwise:
Scores are the sum of the model's full-vocabulary log-probabilities of the SID tokens, i.e.
log P(item | prompt), with NO length normalisation. Why: each item has exactly one SID, so the raw
sum is the model's probability of recommending that item; dividing by length (Hugging Face's
default `length_penalty=1.0`) would favour the 5-token rank-suffix items over their 4-token
neighbours for no reason that concerns the user. Masking after the log-softmax (not renormalising
over the valid children) matches `generate(prefix_allowed_tokens_fn=...)`, which the benchmark
compares against, and leaves the ranking of complete items identical to brute-force scoring.

With `beam_size >= n_items` the search is exhaustive (at every step the frontier has at most
n_items distinct nodes), so it returns exactly the brute-force top-K; tests check this.

The loop is a `lax.while_loop` over SID positions that stops as soon as every beam is finished;
the cache is carried through the loop, so XLA updates it in place. Reordering the cache to the
chosen parents copies every beam's cache, so it is deferred to the start of the next step and
never done after the last one.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gream_jax.index.trie import DeviceTrie

NEG_INF = -1e30  # finite "impossible" score: -inf - -inf would make NaNs in differences


class BeamResult(NamedTuple):
    items: jax.Array    # [b, K] int32 item index, -1 where fewer than K items exist
    scores: jax.Array   # [b, K] float32 log P(item | prompt), NEG_INF where items == -1
    tokens: jax.Array   # [b, K, L] int32 SID token ids, -1 past each SID's end


def _top(scores: jax.Array, k: int):
    """Top-k along the last axis, padding with NEG_INF when there are fewer than k entries."""
    n = scores.shape[-1]
    if n < k:
        pad = jnp.full(scores.shape[:-1] + (k - n,), NEG_INF, scores.dtype)
        scores = jnp.concatenate([scores, pad], axis=-1)
    return jax.lax.top_k(scores, k)


def _expand(trie: DeviceTrie, logp: jax.Array, node: jax.Array, score: jax.Array):
    """Candidate scores for every (beam, child slot).

    logp [b, n, V] (raw logits when `trie.renormalise`), node/score [b, n] -> (cand_score,
    cand_token, cand_node), each [b, n * W].
    A finished beam (a leaf) has one candidate, itself, in slot 0 with its score unchanged.
    """
    b, n = node.shape
    token, child, valid = trie.expand(node)                               # [b, n, W]
    lp = jnp.take_along_axis(logp, token, axis=-1)                        # [b, n, W]
    if trie.renormalise:   # `logp` holds raw logits: normalise over the node's children only
        lp = lp - jax.nn.logsumexp(jnp.where(valid, lp, NEG_INF), axis=-1, keepdims=True)
    cand = jnp.where(valid, score[..., None] + lp, NEG_INF)
    finished = (trie.node_item[node] >= 0) & (score > NEG_INF / 2)
    slot0 = jnp.arange(trie.max_children) == 0
    stay = finished[..., None] & slot0
    cand = jnp.where(stay, score[..., None], cand)
    child = jnp.where(stay, node[..., None], child)
    token = jnp.where(stay, -1, token)
    flat = lambda x: x.reshape(b, n * trie.max_children)
    return flat(cand), flat(token), flat(child)


def _log_probs(trie: DeviceTrie, logits: jax.Array) -> jax.Array:
    """Vocabulary log-softmax, or the raw logits when `_expand` normalises over the children."""
    logits = logits.astype(jnp.float32)
    return logits if trie.renormalise else jax.nn.log_softmax(logits, axis=-1)


def _select(trie: DeviceTrie, logp, node, score, history, step, beam_size):
    """One beam step: expand, keep the best `beam_size`, and return the parents chosen."""
    b, n = node.shape
    cand_score, cand_token, cand_node = _expand(trie, logp, node, score)
    new_score, pick = _top(cand_score, beam_size)                          # [b, B]
    pick = jnp.minimum(pick, cand_score.shape[-1] - 1)  # padded slots point anywhere valid
    parent = pick // trie.max_children
    new_node = jnp.take_along_axis(cand_node, pick, axis=-1)
    new_token = jnp.take_along_axis(cand_token, pick, axis=-1)
    new_history = jnp.take_along_axis(history, parent[..., None], axis=1)
    new_history = new_history.at[:, :, step].set(new_token)
    return new_node, new_score, new_history, new_token, parent


def constrained_beam_search(step_fn: Callable, reorder_fn: Callable, params: Any,
                            first_logits: jax.Array, cache: Any, trie: DeviceTrie,
                            beam_size: int, top_k: int) -> BeamResult:
    """Returns the top-K items under the trie constraint (call inside `jax.jit`).

    first_logits [b, V]: logits of the first SID token; cache: `b` rows, positioned right after
    the prompt. The returned cache is not needed by callers and is dropped.
    """
    if top_k > beam_size:
        raise ValueError(f"top_k={top_k} must be <= beam_size={beam_size}")
    b = first_logits.shape[0]
    depth = trie.max_depth
    rows = jnp.arange(b, dtype=jnp.int32)[:, None]

    # Step 0: one beam per user at the root; its children become the first B beams.
    logp0 = _log_probs(trie, first_logits)[:, None, :]
    node0 = jnp.zeros((b, 1), jnp.int32)
    score0 = jnp.zeros((b, 1), jnp.float32)
    hist0 = jnp.full((b, 1, depth), -1, jnp.int32)
    node, score, history, last, parent = _select(trie, logp0, node0, score0, hist0, 0, beam_size)
    # parent is 0 here (one beam per user), so beam j of user u reads the prompt cache row u.
    cache = reorder_fn(cache, (rows + parent).reshape(-1))

    def live(node, score):
        return ((trie.node_item[node] < 0) & (score > NEG_INF / 2)).any()

    def advance(step, node, score, history, last, cache):
        feed = jnp.where(last >= 0, last, 0).reshape(-1)   # finished beams feed a harmless token
        logits, cache = step_fn(params, feed, cache)
        logp = _log_probs(trie, logits).reshape(b, beam_size, -1)
        node, score, history, last, parent = _select(trie, logp, node, score, history, step, beam_size)
        return node, score, history, last, parent, cache

    def cond(carry):
        step, node, score, *_ = carry
        return (step < depth) & live(node, score)

    def body(carry):
        # The cache is reordered to the parents chosen in the previous step only now, so the
        # last step's reorder (a copy of every beam's cache) is never paid.
        step, node, score, history, last, parent, cache = carry
        cache = reorder_fn(cache, (rows * beam_size + parent).reshape(-1))
        return (step + 1,) + advance(step, node, score, history, last, cache)

    if depth > 1:
        # Step 1 runs outside the loop: its cache is already laid out by beam (no reorder).
        node, score, history, last, parent, cache = advance(1, node, score, history, last, cache)
        carry = (jnp.int32(2), node, score, history, last, parent, cache)
        _, node, score, history, *_ = jax.lax.while_loop(cond, body, carry)

    score, history, node = score[:, :top_k], history[:, :top_k], node[:, :top_k]
    ok = score > NEG_INF / 2
    items = jnp.where(ok, trie.node_item[node], -1)
    ok = ok & (items >= 0)
    return BeamResult(items=jnp.where(ok, items, -1),
                      scores=jnp.where(ok, score, NEG_INF),
                      tokens=jnp.where(ok[..., None], history, -1))


def rerank_with_item_head(result: BeamResult, first_logits: jax.Array, item_tokens: jax.Array,
                          weight: float) -> BeamResult:
    """Re-ranks the beam's items by log P(item | prompt) + weight * log q(item | prompt).

    q is the next-item head (`config.train.next_item_weight`, `trie_softmax.next_item_terms`): a
    softmax over every item-unique last token read from the same logits that give the first SID
    token, first_logits [b, V]; item_tokens [n_items] is each item's last-token id. The beam still
    decides which items are candidates (every one a valid SID); the head only orders them. Why:
    the head sees every item against every other at the prompt's end, where the SID path decides
    among 32-64 coarse first codes first (docs/results.md "next-item head"). Returned scores
    are the fused ones, NEG_INF where items == -1.
    """
    q = item_head_logq(result.items, first_logits, item_tokens)
    fused = jnp.where(result.items >= 0, result.scores + weight * q, NEG_INF)
    order = jnp.argsort(-fused, axis=-1, stable=True)
    take = lambda x: jnp.take_along_axis(x, order, axis=-1)                      # noqa: E731
    return BeamResult(items=take(result.items), scores=take(fused),
                      tokens=jnp.take_along_axis(result.tokens, order[..., None], axis=1))


def item_head_logq(items: jax.Array, first_logits: jax.Array, item_tokens: jax.Array) -> jax.Array:
    """log q(item | prompt) of the next-item head for each listed item: items [b, k] (-1 = empty
    slot, which gets 0), first_logits [b, V], item_tokens [n_items] -> [b, k] float32."""
    logits = jnp.take(first_logits.astype(jnp.float32), item_tokens, axis=-1)      # [b, n_items]
    logq = jax.nn.log_softmax(logits, axis=-1)
    q = jnp.take_along_axis(logq, jnp.maximum(items, 0), axis=-1)
    return jnp.where(items >= 0, q, 0.0)


def brute_force_scores(step_fn: Callable, reorder_fn: Callable, params: Any, first_logits: jax.Array,
                       cache: Any, item_tokens: jax.Array, item_lengths: jax.Array) -> jax.Array:
    """log P(item | prompt) for every item by teacher forcing: reference for tests and checks.

    item_tokens [n_items, L] (vocab ids, any value past the length), item_lengths [n_items];
    first_logits [b, V] and cache (b rows) as for the beam search. Returns [b, n_items].
    """
    b = first_logits.shape[0]
    n_items, depth = item_tokens.shape
    cache = reorder_fn(cache, jnp.repeat(jnp.arange(b, dtype=jnp.int32), n_items))
    tok = jnp.tile(jnp.maximum(item_tokens, 0), (b, 1))                    # [b * n_items, L]
    length = jnp.tile(item_lengths, b)
    logp = jax.nn.log_softmax(first_logits.astype(jnp.float32), axis=-1)
    logp = jnp.repeat(logp, n_items, axis=0)
    total = jnp.take_along_axis(logp, tok[:, :1], axis=-1)[:, 0]
    for d in range(1, depth):
        logits, cache = step_fn(params, tok[:, d - 1], cache)
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        total = total + jnp.where(d < length, jnp.take_along_axis(lp, tok[:, d:d + 1], axis=-1)[:, 0], 0.0)
    return total.reshape(b, n_items)
