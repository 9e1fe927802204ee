"""Chunked next-token cross-entropy over a large vocabulary, for memory-bound LM heads.

With a 151,936-token vocabulary (Qwen3), full float32 logits for a batch of 8 x 2,048 tokens are
10 GB, and their gradient another 10 GB. Here the final hidden states are multiplied by the LM
head one chunk of positions at a time inside a `lax.scan`, and each chunk is wrapped in
`jax.checkpoint`, so the backward pass recomputes that chunk's logits instead of keeping them:
peak memory is O(chunk x vocab) instead of O(batch x seq x vocab), for the same FLOPs as the
unchunked head plus one extra head matmul in the backward pass. The result equals
`gream_jax.train.sft.masked_nll` on `hidden @ head.T` (tests check values and gradients).

Wired into the SFT step by `config.train.loss_chunk_tokens` (> 0; see `gream_jax.train.sft`).

Shapes: b batch, s sequence, d hidden, V vocabulary, c positions per chunk, k chunks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll_terms(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """logits [..., V] float32, labels [...] int, weights [...] float32 -> (sum of weighted
    -log p(label), weighted count of positions whose label has the largest logit).

    Written for the CPU/GPU backward pass: the label's logit is picked with an iota comparison
    (its gradient is a fused select, not a scatter into [..., V]), and "argmax == label" is
    "label logit == max logit", reusing logsumexp's max instead of a separate variadic argmax
    reduction (they differ only when another token ties the maximum exactly)."""
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    logz = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    picked = jnp.sum(jnp.where(vocab == labels[..., None], logits, 0.0), axis=-1)
    hits = (picked >= top).astype(jnp.float32)
    return jnp.sum((logz - picked) * weights), jnp.sum(jax.lax.stop_gradient(hits) * weights)


def chunked_masked_nll(hidden: jax.Array, head: jax.Array, tokens: jax.Array, targets: jax.Array,
                       chunk: int = 1024, item_ends: jax.Array | None = None,
                       segments: jax.Array | None = None):
    """Sum of -log p(next token) over target positions, their count, and argmax hits.

    hidden [b, s, d]: final normed hidden states (`forward(..., return_hidden=True)`, cast to the
    compute dtype); head [V, d]: the LM head as rows (`gream_jax.model.api.lm_head_rows`);
    tokens / targets [b, s] as for `sft.masked_nll` (position i predicts token i + 1, counted
    where targets[:, i + 1] is set). Logits are float32 from a matmul in `hidden`'s dtype, as in
    the model's own head. `chunk` is the number of tokens per chunk: the sequence is cut into
    pieces of max(1, chunk // b) positions and every chunk keeps the whole batch axis, so a batch
    split over data-parallel devices stays split (no resharding of the hidden states).
    With `item_ends` and `segments` [b, s] given, also returns the repeat-unlikelihood sum and
    pair count of `repeat_unlikelihood_terms` (a 5-tuple), computed on the same chunk logits.
    """
    if chunk <= 0:
        raise ValueError(f"chunk={chunk}: must be positive")
    b, s, d = hidden.shape
    if head.ndim != 2 or head.shape[1] != d:
        raise ValueError(f"head has shape {head.shape}; expected [vocab, {d}] to match hidden {hidden.shape}")
    h = hidden[:, :-1]                                  # [b, n, d], n = s - 1
    labels = tokens[:, 1:]
    mask = targets[:, 1:].astype(jnp.float32)
    with_ul = item_ends is not None
    ul_mask = (targets[:, 1:] > 0) & (item_ends[:, 1:] > 0) if with_ul else jnp.zeros_like(labels, bool)
    n = s - 1
    c = min(n, max(1, chunk // b))                      # positions per chunk
    pad = (-n) % c
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    labels = jnp.pad(labels, ((0, 0), (0, pad)))
    mask = jnp.pad(mask, ((0, 0), (0, pad)))            # padded positions carry no weight
    ul_mask = jnp.pad(ul_mask, ((0, 0), (0, pad)))
    k = (n + pad) // c
    w = head.astype(hidden.dtype)

    @jax.checkpoint
    def one_chunk(h_c, y_c, m_c, u_c, pos_c):           # [b, c, d], [b, c], [b, c], [b, c], [c]
        logits = jnp.einsum("bcd,vd->bcv", h_c, w, preferred_element_type=jnp.float32)
        nll, hits = token_nll_terms(logits, y_c, m_c)
        if not with_ul:
            return nll, hits, jnp.zeros(()), jnp.zeros(())
        ul, pairs = repeat_unlikelihood_terms(logits, jnp.minimum(pos_c, s - 1), u_c, y_c, tokens,
                                              item_ends, segments)
        return nll, hits, ul, pairs

    def body(carry, xs):
        return tuple(a + v for a, v in zip(carry, one_chunk(*xs))), None

    split = lambda x: jnp.moveaxis(x.reshape(b, k, c, *x.shape[2:]), 1, 0)   # [k, b, c, ...]
    xs = (split(h), split(labels), split(mask), split(ul_mask), jnp.arange(k * c, dtype=jnp.int32).reshape(k, c))
    zero = jnp.zeros((), jnp.float32)
    (total, correct, ul, pairs), _ = jax.lax.scan(body, (zero,) * 4, xs)
    if with_ul:
        return total, jnp.sum(mask), correct, ul, pairs
    return total, jnp.sum(mask), correct


def repeat_unlikelihood_terms(logits: jax.Array, query_pos: jax.Array, ul_mask: jax.Array, labels: jax.Array,
                              tokens: jax.Array, item_ends: jax.Array, segments: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
    """Unlikelihood of repeating an item already in the context: sum of -log(1 - p(item)) and the
    number of (position, earlier item) pairs it covers.

    Why: in leave-one-out data such as MovieLens a user never rates an item twice, yet a small
    SID decoder trained with cross-entropy alone keeps ranking the user's own recent items high
    (2.5 of the top 10 on ML-100k; nothing is excluded at evaluation). Cross-entropy only pushes
    them down through the softmax normaliser; this term (Welleck et al., 2019, "Neural text
    generation with unlikelihood training") penalises them directly at every position that
    predicts an item-unique token, so the model learns to suppress context items itself.

    logits [b, c, V] at row positions `query_pos [c]` (position i predicts token i + 1);
    ul_mask [b, c]: positions whose label is an item-unique token (a dense-window target);
    labels [b, c]; tokens / item_ends / segments [b, s]: the whole row, item_ends marking each
    item's item-unique (last SID) token. An earlier item of the same example counts once (its
    first occurrence) and never when it is the label itself (a genuine repeat).
    """
    b, s = tokens.shape
    logz = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)                         # [b, c]
    picked = jnp.take_along_axis(logits.astype(jnp.float32),
                                 jnp.broadcast_to(tokens[:, None, :], (b, logits.shape[1], s)), axis=2)
    logp = picked - logz[..., None]                                                       # [b, c, s]
    j = jnp.arange(s, dtype=jnp.int32)
    ends = item_ends > 0
    same_tok = (tokens[:, :, None] == tokens[:, None, :]) & (segments[:, :, None] == segments[:, None, :])
    first = ~jnp.any(same_tok & ends[:, None, :] & (j[None, None, :] < j[None, :, None]), axis=2)  # [b, s]
    pairs = (ul_mask[:, :, None] & (ends & first)[:, None, :]
             & (j[None, None, :] <= query_pos[None, :, None])
             & (segments[:, None, :] == jnp.take(segments, query_pos, axis=1)[:, :, None])
             & (segments[:, None, :] > 0)
             & (tokens[:, None, :] != labels[:, :, None]))
    p = jnp.exp(jnp.minimum(logp, jnp.log1p(-1e-6)))
    return jnp.sum(jnp.where(pairs, -jnp.log1p(-p), 0.0)), jnp.sum(pairs.astype(jnp.float32))
