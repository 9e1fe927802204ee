"""Chunked next-token cross-entropy over a large vocabulary, for memory-bound LM heads.

With a 151,936-token vocabulary (Qwen3), full float32 logits for a batch of 8 x 2,048 tokens are
10 GB, and their gradient another 10 GB. Here the final hidden states are multiplied by the LM
head one chunk of positions at a time inside a `lax.scan`, and each chunk is wrapped in
`jax.checkpoint`, so the backward pass recomputes that chunk's logits instead of keeping them:
peak memory is O(chunk x vocab) instead of O(batch x seq x vocab), for the same FLOPs as the
unchunked head plus one extra head matmul in the backward pass. The result equals
`gream_jax.train.sft.masked_nll` on `hidden @ head.T` (tests check values and gradients).

Wired into the SFT step by `config.train.loss_chunk_tokens` (> 0; see `gream_jax.train.sft`).
Also here: the sequence unlikelihood of the repeat negatives (`config.train.repeat_unlikelihood`),
computed from the same logits in both the chunked and the plain loss.

Shapes: b batch, s sequence, d hidden, V vocabulary, c positions per chunk, k chunks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _label_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """logits [..., V], labels [...] -> the label's logit [...], picked with an iota comparison."""
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.sum(jnp.where(vocab == labels[..., None], logits, 0.0), axis=-1)


def token_nll_terms(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """logits [..., V] float32, labels [...] int, weights [...] float32 -> (sum of weighted
    -log p(label), weighted count of positions whose label has the largest logit).

    Written for the CPU/GPU backward pass: the label's logit is picked with an iota comparison
    (its gradient is a fused select, not a scatter into [..., V]), and "argmax == label" is
    "label logit == max logit", reusing logsumexp's max instead of a separate variadic argmax
    reduction (they differ only when another token ties the maximum exactly)."""
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    logz = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
    picked = _label_logits(logits, labels)
    hits = (picked >= top).astype(jnp.float32)
    return jnp.sum((logz - picked) * weights), jnp.sum(jax.lax.stop_gradient(hits) * weights)


def chunked_masked_nll(hidden: jax.Array, head: jax.Array, tokens: jax.Array, targets: jax.Array,
                       chunk: int = 1024, unlikely: jax.Array | None = None,
                       segments: jax.Array | None = None):
    """Sum of -log p(next token) over target positions, their count, and argmax hits.

    hidden [b, s, d]: final normed hidden states (`forward(..., return_hidden=True)`, cast to the
    compute dtype); head [V, d]: the LM head as rows (`gream_jax.model.api.lm_head_rows`);
    tokens / targets [b, s] as for `sft.masked_nll` (position i predicts token i + 1, counted
    where targets[:, i + 1] is set). Logits are float32 from a matmul in `hidden`'s dtype, as in
    the model's own head. `chunk` is the number of tokens per chunk: the sequence is cut into
    pieces of max(1, chunk // b) positions and every chunk keeps the whole batch axis, so a batch
    split over data-parallel devices stays split (no resharding of the hidden states).
    With `unlikely` and `segments` [b, s] given (`unlikely` marks the tokens of at most one
    sequence per segment whose probability is to be pushed down), also returns the sums of
    `sequence_unlikelihood` (a 6-tuple), with the sequences' log-probabilities accumulated from
    the same chunk logits.
    """
    if chunk <= 0:
        raise ValueError(f"chunk={chunk}: must be positive")
    b, s, d = hidden.shape
    if head.ndim != 2 or head.shape[1] != d:
        raise ValueError(f"head has shape {head.shape}; expected [vocab, {d}] to match hidden {hidden.shape}")
    h = hidden[:, :-1]                                  # [b, n, d], n = s - 1
    labels = tokens[:, 1:]
    mask = targets[:, 1:].astype(jnp.float32)
    with_ul = unlikely is not None
    ul_mask = unlikely[:, 1:].astype(jnp.float32) if with_ul else jnp.zeros_like(mask)
    ul_seg = segments[:, 1:] if with_ul else jnp.zeros_like(labels)
    n = s - 1
    c = min(n, max(1, chunk // b))                      # positions per chunk
    pad = (-n) % c
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    labels = jnp.pad(labels, ((0, 0), (0, pad)))
    mask = jnp.pad(mask, ((0, 0), (0, pad)))            # padded positions carry no weight
    ul_mask = jnp.pad(ul_mask, ((0, 0), (0, pad)))
    ul_seg = jnp.pad(ul_seg, ((0, 0), (0, pad)))
    k = (n + pad) // c
    w = head.astype(hidden.dtype)

    @jax.checkpoint
    def one_chunk(h_c, y_c, m_c, u_c, g_c):             # [b, c, d], [b, c] x 4
        logits = jnp.einsum("bcd,vd->bcv", h_c, w, preferred_element_type=jnp.float32)
        nll, hits = token_nll_terms(logits, y_c, m_c)
        if not with_ul:
            return nll, hits, jnp.zeros((b, 1)), jnp.zeros((b, 1))
        return (nll, hits, per_segment_sums(u_c * label_logprobs(logits, y_c), g_c, s),
                per_segment_sums(u_c, g_c, s))

    def body(carry, xs):
        return tuple(a + v for a, v in zip(carry, one_chunk(*xs))), None

    split = lambda x: jnp.moveaxis(x.reshape(b, k, c, *x.shape[2:]), 1, 0)   # [k, b, c, ...]
    xs = (split(h), split(labels), split(mask), split(ul_mask), split(ul_seg))
    zero = jnp.zeros((), jnp.float32)
    width = s if with_ul else 1
    init = (zero, zero, jnp.zeros((b, width)), jnp.zeros((b, width)))
    (total, correct, seq_logp, n_tokens), _ = jax.lax.scan(body, init, xs)
    if with_ul:
        return (total, jnp.sum(mask), correct) + sequence_unlikelihood(seq_logp, n_tokens > 0)
    return total, jnp.sum(mask), correct


def label_logprobs(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """log p(label) at every position: logits [..., V], labels [...] -> [...] float32."""
    logits = logits.astype(jnp.float32)
    return _label_logits(logits, labels) - jax.nn.logsumexp(logits, axis=-1)


def per_segment_sums(values: jax.Array, segments: jax.Array, size: int) -> jax.Array:
    """values [b, c] summed per (row, segment id): segments [b, c] in [0, size) -> [b, size]."""
    rows = jnp.broadcast_to(jnp.arange(values.shape[0])[:, None], values.shape)
    return jnp.zeros((values.shape[0], size), values.dtype).at[rows, segments].add(values)


def sequence_unlikelihood(seq_logp: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Unlikelihood of whole token sequences (Welleck et al., 2019): seq_logp [...] = log p of
    each sequence (its tokens' log-probabilities summed), present [...] bool -> (sum of
    -log(1 - p), sum of p, number of sequences).

    Used for the repeat negatives of dense windows (`tasks.dense.with_repeat_negative`): the
    sequence is the SID of an item the user already has, so its Direct-mode score
    p(c1) p(c2 | c1) p(item | c1, c2) is pushed down as a whole; each level's log-probability
    gets the same gradient p / (1 - p), so a shared prefix code is pushed down only while the
    whole item is likely."""
    p = jnp.exp(jnp.minimum(seq_logp, jnp.log1p(-1e-6)))
    total = jnp.sum(jnp.where(present, -jnp.log1p(-p), 0.0))
    return total, jnp.sum(jnp.where(present, jax.lax.stop_gradient(p), 0.0)), jnp.sum(present.astype(jnp.float32))
