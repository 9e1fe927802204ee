"""The chunked LM-head cross-entropy (a memory lever for 151k-token vocabularies) equals the
plain masked loss of the SFT step, in value and in gradients, for chunks that do and do not
divide the number of positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax.train.losses import chunked_masked_nll
from gream_jax.train.sft import masked_nll


@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_chunked_loss_matches_full_logits(chunk):
    rng = np.random.default_rng(0)
    b, s, d, V = 2, 9, 8, 37
    hidden = jnp.asarray(rng.normal(size=(b, s, d)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(V, d)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, V, size=(b, s)), jnp.int32)
    targets = jnp.asarray(rng.random((b, s)) < 0.6, jnp.int32)

    def full(h, w):
        return masked_nll(jnp.einsum("bsd,vd->bsv", h, w), tokens, targets)

    def chunked(h, w):
        return chunked_masked_nll(h, w, tokens, targets, chunk=chunk)

    ref, got = full(hidden, head), chunked(hidden, head)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)
    g_ref = jax.grad(lambda h, w: full(h, w)[0], argnums=(0, 1))(hidden, head)
    g_got = jax.jit(jax.grad(lambda h, w: chunked(h, w)[0], argnums=(0, 1)))(hidden, head)
    for r, g in zip(g_ref, g_got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-5)


def test_chunked_loss_rejects_bad_shapes():
    h = jnp.zeros((1, 4, 8))
    with pytest.raises(ValueError, match="expected \\[vocab, 8\\]"):
        chunked_masked_nll(h, jnp.zeros((8, 5)), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="chunk=0"):
        chunked_masked_nll(h, jnp.zeros((5, 8)), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32), 0)
