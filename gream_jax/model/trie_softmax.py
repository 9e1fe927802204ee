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

"level" (`trie_nll_terms(..., level_ids=...)`): decoding as "trie", but in training an inner SID
token competes with every token of its own SID level, so an item-unique last level keeps the dense
all-items objective (every item a negative of every target, as SASRec trains). Without it the item
embeddings (tied: also the history's input embeddings) only ever meet their few trie siblings; on
ML-100k's 2 x 32 codes that is ~1.6 items, and "trie" lost on test there (docs/results.md).

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


def token_states(trie: DeviceTrie, tokens: jax.Array, initial: jax.Array | None = None) -> jax.Array:
    """tokens [b, s] -> states [b, s]: the trie node after reading tokens[:, :t + 1] (-1 outside).

    initial [b]: the state before tokens[:, 0] (a continuation of earlier tokens); default -1."""
    def body(state, tok):
        state = next_state(trie, state, tok)
        return state, state
    if initial is None:
        initial = jnp.full(tokens.shape[:1], -1, jnp.int32)
    _, states = jax.lax.scan(body, initial.astype(jnp.int32), tokens.T)
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


def _log_partition(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(max, logsumexp) over the last axis; the max is a constant of the gradient."""
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    return top, top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))


def _pick(logits: jax.Array, index: jax.Array) -> jax.Array:
    """logits [..., k], index [...] -> logits[..., index] via an iota comparison (-1 picks 0)."""
    slot = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.sum(jnp.where(slot == index[..., None], logits, 0.0), axis=-1)


def _compacted_nll(flat_h, rows, chosen, pos, flat_w, cap: int):
    """(sum of weighted -log softmax(h . rows)[pos], weighted argmax hits, weight kept) over the
    `chosen` flat positions, multiplying only the first `cap` of them by `rows` [k, d]: they are
    moved to the front with a stable argsort, so a caller that knows how many positions can be
    chosen at most pays for those alone. flat_h [m, d]; chosen / pos / flat_w [m]."""
    order = jnp.argsort(~chosen, stable=True)[:cap]
    sel = chosen[order]
    logits = jnp.einsum("cd,kd->ck", flat_h[order], rows, preferred_element_type=jnp.float32)
    top, logz = _log_partition(logits)
    pick = _pick(logits, pos[order])
    ws = flat_w[order] * sel
    total = jnp.sum(jnp.where(sel, logz - pick, 0.0) * ws)
    hits = jnp.sum(jax.lax.stop_gradient((pick >= top).astype(jnp.float32)) * ws)
    return total, hits, jnp.sum(ws)


def _level_sums(hidden, w, labels, chosen, weights, level_ids):
    """Sums of (-log p, argmax hits, overflow) over the `chosen` inner positions [b, n], each label
    scored against every token of its own SID level (`level_ids[j]` = level j + 1's token ids).

    Only the positions of one level are multiplied by that level's rows: they are moved to the
    front (a stable argsort) and the first `cap` taken, with cap = b * ceil(n / (level + 1)),
    which no batch can exceed (a level-l label follows l tokens of its own SID, so such positions
    are at least l + 1 apart in a row). An item-unique last level thus costs about a third of a
    vocabulary softmax on 3-token SIDs, not all of it."""
    b, n, d = hidden.shape
    flat_h, flat_y = hidden.reshape(b * n, d), labels.reshape(-1)
    flat_c, flat_w = chosen.reshape(-1), weights.reshape(-1)
    total = hits = overflow = jnp.zeros((), jnp.float32)
    for level, ids in enumerate(level_ids, start=1):
        ids = jnp.asarray(ids, jnp.int32)
        index = jnp.full((w.shape[0],), -1, jnp.int32).at[ids].set(jnp.arange(ids.shape[0], dtype=jnp.int32))
        pos = index[flat_y]
        at_level = flat_c & (pos >= 0)
        cap = min(b * n, b * -(-n // (level + 1)))
        nll, hit, kept = _compacted_nll(flat_h, w[ids], at_level, pos, flat_w, cap)
        total, hits = total + nll, hits + hit
        overflow += jnp.sum(flat_w * at_level) - kept
    return total, hits, overflow


def trie_nll_terms(hidden: jax.Array, head: jax.Array, labels: jax.Array, states: jax.Array,
                   weights: jax.Array, trie: DeviceTrie, outer_ids: jax.Array, level_ids=None):
    """Training loss terms without a vocabulary-wide matmul.

    hidden [b, n, d] (position t predicts labels[:, t]), head [V, d] (LM head rows), labels /
    states / weights [b, n] (states[:, t] = the node after reading token t), outer_ids [n_outer].
    level_ids (sid_softmax="level"): a sequence, per SID level after the first, of that level's
    token ids; an inner label is then scored against its whole level (the item-unique level
    against every item, SASRec's all-items objective) instead of its trie siblings.
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
    pick_o = _pick(outer_logits, label_pos)
    top_o, logz_o = _log_partition(outer_logits)
    # Inner positions: is the label one of the node's children (a well-formed continuation)?
    tok, _, valid = trie.expand(jnp.maximum(states, 0))
    is_label = valid & (tok == labels[..., None])
    ok = jnp.where(inside, is_label.any(-1), label_pos >= 0)
    if level_ids is None:   # softmax over the node's children, gathered rows [b, n, W, d]
        inner_logits = jnp.einsum("bnd,bnwd->bnw", hidden, w[tok], preferred_element_type=jnp.float32)
        inner_logits = jnp.where(valid, inner_logits, NEG_INF)
        pick_i = jnp.sum(jnp.where(is_label, inner_logits, 0.0), axis=-1)
        top_i, logz_i = _log_partition(inner_logits)
        nll = jnp.where(inside, logz_i - pick_i, logz_o - pick_o)
        hit = jnp.where(inside, pick_i >= top_i, pick_o >= top_o)
        extra = (0.0, 0.0, 0.0)
    else:                   # outer positions here; inner ones per level, below
        nll, hit = logz_o - pick_o, pick_o >= top_o
        extra = _level_sums(hidden, w, labels, ok & inside, weights, level_ids)
    outer_or_all = ok if level_ids is None else ok & ~inside
    scored = weights * ok
    total = jnp.sum(jnp.where(outer_or_all, nll, 0.0) * weights) + extra[0]
    hits = jnp.sum(jax.lax.stop_gradient(hit.astype(jnp.float32)) * weights * outer_or_all) + extra[1]
    return total, jnp.sum(scored) - extra[2], hits, jnp.sum(weights * ~ok) + extra[2]


def next_item_terms(hidden: jax.Array, head: jax.Array, labels: jax.Array, weights: jax.Array,
                    first_ids: jax.Array, item_ids: jax.Array, sid_len: int):
    """The auxiliary next-item objective (`config.train.next_item_weight`): at every position whose
    label starts a target SID, -log p(item) over every item-unique last token, read from the same
    hidden state that predicts the first code.

    Why: in the SID factorisation p(c1) p(c2 | c1) p(item | c1, c2) the item tokens are only ever
    predicted after their prefix is given, so the hidden state that decides the first code (where
    most Direct-mode misses happen: docs/results.md) is trained against 32-64 coarse codes, never
    against the items themselves. This adds SASRec's all-items objective at exactly that position,
    with the same item embeddings (tied: also the history's inputs), and leaves decoding unchanged.

    hidden [b, n, d] (position t predicts labels[:, t]), head [V, d], labels / weights [b, n],
    first_ids [K1] (first-level code tokens), item_ids [n_items] (the item-unique last level),
    sid_len: tokens per SID (every SID, as with config.index.collision="item_token").
    A position counts when its label is a first-level code with weight > 0 and the label
    sid_len - 1 positions later is an item token with weight > 0 (an SID cut by the row end is
    skipped). Returns (sum of weighted -log p(item), weighted count, weighted argmax hits).
    """
    b, n, d = hidden.shape
    vocab = head.shape[0]
    is_first = jnp.zeros((vocab,), bool).at[first_ids].set(True)
    item_index = jnp.full((vocab,), -1, jnp.int32).at[item_ids].set(
        jnp.arange(item_ids.shape[0], dtype=jnp.int32))
    shift = sid_len - 1
    item_labels = jnp.pad(labels[:, shift:], ((0, 0), (0, shift)))
    item_weights = jnp.pad(weights[:, shift:], ((0, 0), (0, shift)))
    pos = item_index[item_labels]                                         # [b, n], -1 = none
    chosen = is_first[labels] & (weights > 0) & (pos >= 0) & (item_weights > 0)
    flat_h, flat_c = hidden.reshape(b * n, d), chosen.reshape(-1)
    flat_w, flat_p = (weights * item_weights).reshape(-1), pos.reshape(-1)
    # An SID starts at most once every sid_len positions in a row: that many first rows suffice.
    cap = min(b * n, b * -(-n // sid_len))
    total, hits, count = _compacted_nll(flat_h, head.astype(hidden.dtype)[item_ids], flat_c, flat_p, flat_w, cap)
    return total, count, hits
