"""The trie-factored output distribution (`config.model.sid_softmax = "trie"`).

Default ("vocab"): every next-token distribution is one softmax over the whole vocabulary, and
Direct mode scores an item by its SID tokens' full-vocabulary log-probabilities (the reference).

"trie": the next-token distribution depends on where the sequence stands in the SID trie.
  - inside an SID (the tokens just read spell a proper prefix of some item's SID, i.e. a trie
    node with children): a softmax over that node's children only;
  - anywhere else: a softmax over the *outer* vocabulary, every token that is not an inner SID
    token (text, special tokens, first-level codes).
P(item | prompt) = p(c1 | outer) p(c2 | c1) ... p(last | prefix) stays a proper distribution over
the items (a hierarchical softmax whose tree is the SID trie), and the decoders walk exactly this
factorisation (`DeviceTrie.renormalise`).

Why: with an item-unique last level the vocabulary holds one token per item, so a vocabulary
softmax costs V x d per token (Beauty: 13.2k rows, ~90% of a small model's step). Here a token
costs n_outer + max_children rows (Beauty: ~1.1k + 80), so the same CPU budget trains on several
times more windows; and training matches how Direct mode ranks (inside the trie only siblings
compete), where the vocabulary softmax spends capacity pushing down tokens the trie never allows.

State: `token_states` gives, for every position, the trie node reached by the SID tokens read so
far (-1 outside an SID); position t's distribution is the one for token t + 1. Shapes: b batch,
s sequence, d hidden, V vocabulary, W the trie's max_children.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax.index.trie import DeviceTrie

NEG_INF = -1e30


def inner_token_mask(trie: DeviceTrie, vocab_size: int) -> jax.Array:
    """[V] bool: tokens that label an edge below the root (an SID token after the first)."""
    edges = jnp.arange(trie.edge_token.shape[0], dtype=jnp.int32)
    inner = edges >= trie.child_start[1]
    return jnp.zeros((vocab_size,), bool).at[trie.edge_token].max(inner)


def outer_token_ids(trie_host, sid_token_table: np.ndarray, vocab_size: int) -> np.ndarray:
    """[n_outer] int32, host side: the vocabulary minus the inner SID tokens (static for the loss)."""
    table = np.asarray(sid_token_table)
    root_edges = slice(int(trie_host.child_start[0]), int(trie_host.child_start[1]))
    below = np.ones(trie_host.edge_code.shape[0], bool)
    below[root_edges] = False
    inner = np.zeros(vocab_size, bool)
    inner[table[trie_host.edge_level[below], trie_host.edge_code[below]]] = True
    return np.flatnonzero(~inner).astype(np.int32)


def _has_children(trie: DeviceTrie, state: jax.Array) -> jax.Array:
    s = jnp.maximum(state, 0)
    return (state >= 0) & (trie.child_start[s + 1] > trie.child_start[s])


def _child(trie: DeviceTrie, node: jax.Array, token: jax.Array):
    """(found, child node) of `node` whose edge is `token` (elementwise)."""
    tok, child, valid = trie.expand(node)
    hit = valid & (tok == token[..., None])
    return hit.any(-1), jnp.sum(jnp.where(hit, child, 0), axis=-1)


def next_state(trie: DeviceTrie, state: jax.Array, token: jax.Array) -> jax.Array:
    """The state after reading `token` (elementwise over any shape).

    A child of the current inner node continues the SID; a first-level code starts one; anything
    else (text, a malformed continuation, the token after a complete SID) is outside (-1)."""
    inside = _has_children(trie, state)
    cont, cont_node = _child(trie, jnp.maximum(state, 0), token)
    start, start_node = _child(trie, jnp.zeros_like(token), token)
    return jnp.where(inside & cont, cont_node, jnp.where(start, start_node, -1)).astype(jnp.int32)


def token_states(trie: DeviceTrie, tokens: jax.Array) -> jax.Array:
    """tokens [b, s] -> states [b, s]: the trie node after reading tokens[:, :t + 1] (-1 outside)."""
    def body(state, tok):
        state = next_state(trie, state, tok)
        return state, state
    _, states = jax.lax.scan(body, jnp.full(tokens.shape[:1], -1, jnp.int32), tokens.T)
    return states.T


def mask_logits(trie: DeviceTrie, logits: jax.Array, state: jax.Array) -> jax.Array:
    """Full-vocabulary logits [..., V] -> the trie-factored distribution's logits (others NEG_INF).

    For decoding and RL log-probabilities (few positions); `log_softmax` of the result is the
    distribution `trie_nll_terms` trains."""
    shape, vocab = logits.shape, logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    st = state.reshape(-1)
    tok, _, valid = trie.expand(jnp.maximum(st, 0))
    rows = jnp.arange(flat.shape[0])[:, None]
    children = jnp.zeros(flat.shape, bool).at[rows, tok].max(valid)
    inner = inner_token_mask(trie, vocab)
    allowed = jnp.where(_has_children(trie, st)[:, None], children, ~inner[None, :])
    return jnp.where(allowed, flat, NEG_INF).reshape(shape)


def trie_nll_terms(hidden: jax.Array, head: jax.Array, labels: jax.Array, states: jax.Array,
                   weights: jax.Array, trie: DeviceTrie, outer_ids: jax.Array):
    """Training loss terms without a vocabulary-wide matmul.

    hidden [b, n, d] (position t predicts labels[:, t]), head [V, d] (LM head rows), labels /
    states / weights [b, n] (states[:, t] = the node after reading token t), outer_ids [n_outer].
    Returns (sum of weighted -log p(label), weighted count of scored positions, weighted argmax
    hits, weighted count of positions whose label the distribution cannot produce). The last are
    left out of the loss: they only arise from malformed text (an SID cut mid-way), and are logged
    so they cannot pass unseen.
    """
    w = head.astype(hidden.dtype)
    inside = _has_children(trie, states)
    # Outer positions: a softmax over the outer vocabulary's rows.
    outer_logits = jnp.einsum("bnd,od->bno", hidden, w[outer_ids], preferred_element_type=jnp.float32)
    outer_index = jnp.full((head.shape[0],), -1, jnp.int32).at[outer_ids].set(
        jnp.arange(outer_ids.shape[0], dtype=jnp.int32))
    label_pos = outer_index[labels]
    slot_o = jax.lax.broadcasted_iota(jnp.int32, outer_logits.shape, 2)
    pick_o = jnp.sum(jnp.where(slot_o == label_pos[..., None], outer_logits, 0.0), axis=-1)
    top_o = jax.lax.stop_gradient(jnp.max(outer_logits, axis=-1))
    logz_o = top_o + jnp.log(jnp.sum(jnp.exp(outer_logits - top_o[..., None]), axis=-1))
    # Inner positions: a softmax over the node's children, gathered rows [b, n, W, d].
    tok, _, valid = trie.expand(jnp.maximum(states, 0))
    inner_logits = jnp.einsum("bnd,bnwd->bnw", hidden, w[tok], preferred_element_type=jnp.float32)
    inner_logits = jnp.where(valid, inner_logits, NEG_INF)
    is_label = valid & (tok == labels[..., None])
    pick_i = jnp.sum(jnp.where(is_label, inner_logits, 0.0), axis=-1)
    top_i = jax.lax.stop_gradient(jnp.max(inner_logits, axis=-1))
    logz_i = top_i + jnp.log(jnp.sum(jnp.exp(inner_logits - top_i[..., None]), axis=-1))
    ok = jnp.where(inside, is_label.any(-1), label_pos >= 0)
    nll = jnp.where(inside, logz_i - pick_i, logz_o - pick_o)
    hit = jnp.where(inside, pick_i >= top_i, pick_o >= top_o)
    scored = weights * ok
    return (jnp.sum(jnp.where(ok, nll, 0.0) * weights), jnp.sum(scored),
            jnp.sum(jax.lax.stop_gradient(hit.astype(jnp.float32)) * scored), jnp.sum(weights * ~ok))
