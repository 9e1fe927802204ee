"""Throughput levers of the SFT step and the model (issue 13) compute exactly what the plain paths do:
mask-free causal attention for unpacked rows, the chunked vocabulary loss wired into the train step
(same loss and same gradients), and a KV cache that a decode step updates without copying."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.model.config import ModelConfig
from gream_jax.train import sft

CFG = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8)
UNTIED = CFG.replace(tie_word_embeddings=False)
ROWS, SEQ = 8, 12


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})


def _params(cfg, mesh):
    return api.init_params(cfg, jax.random.PRNGKey(0), mesh)


def _plain_batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CFG.vocab_size, size=(ROWS, SEQ)).astype(np.int32)
    return {"tokens": tokens, "segment_ids": np.ones_like(tokens),
            "positions": np.broadcast_to(np.arange(SEQ, dtype=np.int32), tokens.shape).copy(),
            "targets": (rng.random((ROWS, SEQ)) < 0.7).astype(np.int32)}


def _packed_batch():
    b = _plain_batch(1)
    b["segment_ids"][:, 5:] = 2                      # two examples per row
    b["segment_ids"][::2, 10:] = 0                   # and padding at the end of every other row
    b["positions"][:, 5:] = np.arange(SEQ - 5)
    b["targets"][:, 5] = 0                           # a segment's first token is never a target
    b["targets"][b["segment_ids"] == 0] = 0
    b["tokens"][b["segment_ids"] == 0] = 0
    return b


@pytest.mark.parametrize("attention", ["xla", "einsum"])
def test_mask_free_causal_forward_equals_all_ones_mask(mesh, attention):
    cfg = CFG.replace(attention=attention)
    params = _params(cfg, mesh)
    tokens = jnp.asarray(_plain_batch()["tokens"])
    fwd = jax.jit(api.forward, static_argnames=("model_cfg",))
    masked = fwd(params, cfg, tokens, jnp.ones_like(tokens))
    causal = fwd(params, cfg, tokens, None)
    np.testing.assert_allclose(np.asarray(causal), np.asarray(masked), atol=1e-5)


def _step_grads(cfg, mesh, batch, **levers):
    """One train step with SGD(lr=1): the parameter change is exactly minus the gradient."""
    params = _params(cfg, mesh)
    rules = mesh_lib.DEFAULT_RULES
    apply_fn = lambda p, t, m, pos, seg, return_hidden=False: api.forward(
        p, cfg, t, m, pos, seg, return_hidden=return_hidden)
    step = sft.make_train_step(apply_fn, optax.sgd(1.0), lambda s: 1.0,
                               head_fn=lambda p: api.lm_head_rows(p, cfg), **levers)
    state = sft.init_state(params, optax.sgd(1.0), 0, mesh)
    before = jax.device_get(params)
    with jax.set_mesh(mesh):
        jitted = sft.jit_train_step(step, state, mesh, rules)
        state, metrics = jitted(state, sft.device_batch(batch, 1, mesh, rules))
    after = jax.device_get(state["params"])
    return jax.tree.map(lambda a, b: a - b, before, after), jax.device_get(metrics)


@pytest.mark.parametrize("cfg,batch,levers", [
    (CFG, "plain", dict(loss_chunk_tokens=7, causal_fast_path=True)),     # fast branch, chunk of 1 position
    (UNTIED, "packed", dict(loss_chunk_tokens=16, causal_fast_path=True)),  # masked branch, 2 positions
], ids=["tied-plain", "untied-packed"])
def test_train_step_levers_give_the_same_loss_and_gradients(mesh, cfg, batch, levers):
    host = _plain_batch() if batch == "plain" else _packed_batch()
    ref_g, ref_m = _step_grads(cfg, mesh, host)
    g, m = _step_grads(cfg, mesh, host, **levers)
    for key in ("loss", "token_accuracy", "target_tokens"):
        np.testing.assert_allclose(m[key], ref_m[key], rtol=1e-5, atol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g, ref_g)
    assert float(np.abs(ref_g["embed_tokens"]).max()) > 0


def test_masked_nll_accuracy_counts_argmax_hits():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 6, 11)).astype(np.float32)
    tokens = rng.integers(0, 11, (2, 6))
    tokens[0, 1:] = logits[0, :-1].argmax(-1)        # row 0: every prediction right
    targets = np.ones((2, 6), np.int32)
    total, count, correct = sft.masked_nll(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(targets))
    want = (logits[:, :-1].argmax(-1) == tokens[:, 1:]).sum()
    assert float(count) == 10 and float(correct) == want and want >= 5


def test_train_step_rejects_chunked_loss_without_head():
    with pytest.raises(ValueError, match="head_fn"):
        sft.make_train_step(lambda *a, **k: None, optax.sgd(1.0), lambda s: 1.0, loss_chunk_tokens=8)
    with pytest.raises(ValueError, match="loss_chunk_tokens=-1"):
        sft.make_train_step(lambda *a, **k: None, optax.sgd(1.0), lambda s: 1.0, loss_chunk_tokens=-1)


def test_config_validates_the_levers():
    from gream_jax.config_defaults.base import ConfigError
    from gream_jax.config_defaults import train as train_defaults
    cfg = types.SimpleNamespace(train=train_defaults.defaults())
    assert cfg.train.loss_chunk_tokens == 0 and cfg.train.causal_fast_path is False
    cfg.train.loss_chunk_tokens = -4
    with pytest.raises(ConfigError, match="config.train.loss_chunk_tokens"):
        train_defaults.validate(cfg)


def test_decode_step_updates_the_cache_without_copying_it(mesh):
    """The compiled decode step has no copy or transpose producing a whole-cache-shaped array (the
    old [L, b, T, K, hd] layout restacked and transposed every layer's cache each step)."""
    one = mesh_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    params = _params(CFG, one)
    cache = api.init_cache(CFG, 16, 24)
    step = jax.jit(api.decode_step, static_argnames=("model_cfg",), donate_argnames=("cache",))
    hlo = step.lower(params, CFG, jnp.ones((16,), jnp.int32), cache).compile().as_text()
    dims = ",".join(str(d) for d in cache.k.shape)
    offending = [line.strip()[:160] for line in hlo.splitlines()
                 if f"f32[{dims}]" in line.split("=", 1)[-1][:40] and (" copy(" in line or " transpose(" in line)]
    assert "dynamic-update-slice" in hlo and not offending, offending
