"""Functional model API: shapes, padding, packing, KV-cache decoding, beam reordering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.model.config import ModelConfig, ModelConfigError

CFG = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8)
FWD = jax.jit(api.forward, static_argnames=("model_cfg", "return_hidden"))
PREFILL = jax.jit(api.prefill, static_argnames=("model_cfg",), donate_argnames=("cache",))
STEP = jax.jit(api.decode_step, static_argnames=("model_cfg",), donate_argnames=("cache",))


@pytest.fixture(scope="module")
def params():
    mesh = mesh_lib.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
    return api.init_params(CFG, jax.random.PRNGKey(0), mesh)


def _batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, CFG.vocab_size, size=(3, 7)).astype(np.int32)
    mask = np.ones((3, 7), np.int32)
    mask[1, :3] = 0      # left padding
    mask[2, :1] = 0
    tokens[mask == 0] = 0
    return jnp.asarray(tokens), jnp.asarray(mask)


def test_forward_shapes_and_float32(params):
    tokens, mask = _batch()
    logits = FWD(params, CFG, tokens, mask)
    assert logits.shape == (3, 7, CFG.vocab_size) and logits.dtype == jnp.float32
    hidden = FWD(params, CFG, tokens, mask, return_hidden=True)
    assert hidden.shape == (3, 7, CFG.hidden_size) and hidden.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


def test_left_padding_does_not_change_real_token_logits(params):
    tokens, mask = _batch()
    padded = FWD(params, CFG, tokens, mask)[1, 3:]
    alone = FWD(params, CFG, tokens[1:2, 3:], mask[1:2, 3:])[0]
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_packed_segments_do_not_attend_across(params):
    tokens, _ = _batch()
    a, b = tokens[0, :4], tokens[0, 4:]
    packed = FWD(params, CFG, tokens[:1], jnp.ones((1, 7), jnp.int32),
                 segment_ids=jnp.asarray([[1, 1, 1, 1, 2, 2, 2]]))[0]
    np.testing.assert_allclose(packed[:4], FWD(params, CFG, a[None], jnp.ones((1, 4)))[0], atol=1e-5)
    np.testing.assert_allclose(packed[4:], FWD(params, CFG, b[None], jnp.ones((1, 3)))[0], atol=1e-5)


@pytest.mark.parametrize("variant", [dict(attention="einsum"), dict(scan_layers=False, remat="full"),
                                     dict(remat="dots_no_batch")])
def test_implementation_variants_agree(params, variant):
    tokens, mask = _batch()
    ref = FWD(params, CFG, tokens, mask)
    out = FWD(params, CFG.replace(**variant), tokens, mask)
    real = np.asarray(mask) > 0
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=1e-5)


def test_kv_cache_prefill_then_steps_equal_full_forward(params):
    tokens, mask = _batch()
    full = np.asarray(FWD(params, CFG, tokens, mask))
    cache = api.init_cache(CFG, 3, 12)
    logits, cache = PREFILL(params, CFG, tokens[:, :4], mask[:, :4], cache)
    np.testing.assert_allclose(logits, full[:, 3], atol=1e-5)
    for i in range(4, 7):
        logits, cache = STEP(params, CFG, tokens[:, i], cache)
        np.testing.assert_allclose(logits, full[:, i], atol=1e-5)
    assert int(cache.index) == 7
    np.testing.assert_array_equal(cache.positions, np.asarray(mask).sum(-1))


def test_reorder_cache_follows_selected_rows(params):
    tokens, mask = _batch()
    cache = api.init_cache(CFG, 3, 10)
    _, cache = PREFILL(params, CFG, tokens, mask, cache)
    order = jnp.asarray([2, 2, 0, 1])
    reordered = api.reorder_cache(cache, order)
    nxt = jnp.asarray([5, 6, 7, 8])
    got, _ = STEP(params, CFG, nxt, reordered)
    for row, src in enumerate([2, 2, 0, 1]):
        ext = jnp.concatenate([tokens[src], nxt[row:row + 1]])[None]
        ext_mask = jnp.concatenate([mask[src], jnp.ones((1,), jnp.int32)])[None]
        np.testing.assert_allclose(got[row], FWD(params, CFG, ext, ext_mask)[0, -1], atol=1e-5)


def test_config_errors_name_the_field():
    with pytest.raises(ModelConfigError, match="num_kv_heads"):
        ModelConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ModelConfigError, match="lora_targets"):
        ModelConfig(lora_targets=("nope",))
    assert ModelConfig.from_dict(CFG.to_dict()) == CFG


def test_remat_gradients_equal_plain_gradients(params):
    tokens, mask = _batch()

    def loss(p, cfg):
        logits = api.forward(p, cfg, tokens, mask)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0])

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    plain, remat = grad(params, CFG), grad(params, CFG.replace(remat="dots"))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), plain, remat)
    assert float(jnp.abs(plain["layers"]["self_attn"]["q_proj"]["kernel"]).max()) > 0
