"""Chunked next-token cross-entropy over a large vocabulary, for memory-bound LM heads.

With a 151,936-token vocabulary (Qwen3), full float32 logits for a batch of 8 x 2,048 tokens are
10 GB, and their gradient another 10 GB. Here the final hidden states are multiplied by the LM
head one chunk of positions at a time inside a `lax.scan`, and each chunk is wrapped in
`jax.checkpoint`, so the backward pass recomputes that chunk's logits instead of keeping them:
peak memory is O(chunk x vocab) instead of O(batch x seq x vocab), for the same FLOPs as the
unchunked head plus one extra head matmul in the backward pass. The result equals
`gream_jax.train.sft.masked_nll` on `hidden @ head.T` (tests check values and gradients).

Shapes: b batch, s sequence, d hidden, V vocabulary, N = b x (s - 1) predicted positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def chunked_masked_nll(hidden: jax.Array, head: jax.Array, tokens: jax.Array, targets: jax.Array,
                       chunk: int = 1024) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sum of -log p(next token) over target positions, their count, and argmax hits.

    hidden [b, s, d]: final normed hidden states (`forward(..., return_hidden=True)`);
    head [V, d]: the LM head as rows (the tied embedding, or the untied `lm_head` transposed);
    tokens / targets [b, s] as for `sft.masked_nll` (position i predicts token i + 1, counted
    where targets[:, i + 1] is set). Logits are computed in float32 from `hidden`'s dtype.
    """
    if chunk <= 0:
        raise ValueError(f"chunk={chunk}: must be positive")
    b, s, d = hidden.shape
    if head.ndim != 2 or head.shape[1] != d:
        raise ValueError(f"head has shape {head.shape}; expected [vocab, {d}] to match hidden {hidden.shape}")
    h = hidden[:, :-1].reshape(-1, d)
    labels = tokens[:, 1:].reshape(-1)
    mask = targets[:, 1:].reshape(-1).astype(jnp.float32)
    n = h.shape[0]
    chunk = min(chunk, n)
    pad = (-n) % chunk
    h = jnp.pad(h, ((0, pad), (0, 0)))
    labels = jnp.pad(labels, (0, pad))
    mask = jnp.pad(mask, (0, pad))                      # padded positions carry no weight
    k = (n + pad) // chunk
    w = head.astype(hidden.dtype)

    @jax.checkpoint
    def one_chunk(h_c, y_c, m_c):
        logits = jnp.einsum("nd,vd->nv", h_c, w, preferred_element_type=jnp.float32)
        logz = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, y_c[:, None], axis=-1)[:, 0]
        correct = (jnp.argmax(logits, axis=-1) == y_c).astype(jnp.float32)
        return jnp.sum((logz - picked) * m_c), jnp.sum(correct * m_c)

    def body(carry, xs):
        nll, hits = one_chunk(*xs)
        return (carry[0] + nll, carry[1] + hits), None

    xs = (h.reshape(k, chunk, d), labels.reshape(k, chunk), mask.reshape(k, chunk))
    (total, correct), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)), xs)
    return total, jnp.sum(mask), correct
