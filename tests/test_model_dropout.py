"""Training-time dropout (config.train.dropout_rate): it adds no parameters, rate 0 is exactly the
inference graph, masks are reproducible from the key, and the SFT step draws a fresh mask per
update from the state's seed (so a resumed run repeats them) while staying deterministic."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults import base_config
from gream_jax.config_defaults.base import ConfigError, validate_config
from gream_jax.model import api
from gream_jax.model.config import ModelConfig
from gream_jax.train import sft

CFG = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8)
ROWS, SEQ = 8, 12


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})


@pytest.fixture(scope="module")
def params(mesh):
    return api.init_params(CFG, jax.random.PRNGKey(0), mesh)


def _tokens(seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(1, CFG.vocab_size, (ROWS, SEQ)), jnp.int32)


def test_dropout_changes_activations_reproducibly_and_rate_zero_is_inference(params):
    fwd = jax.jit(api.forward, static_argnames=("model_cfg", "dropout_rate"))
    tokens = _tokens()
    plain = np.asarray(fwd(params, CFG, tokens, jnp.ones_like(tokens)))
    zero = np.asarray(fwd(params, CFG, tokens, jnp.ones_like(tokens), dropout_rate=0.0,
                          dropout_rng=jax.random.key(1)))
    np.testing.assert_array_equal(zero, plain)
    a = np.asarray(fwd(params, CFG, tokens, jnp.ones_like(tokens), dropout_rate=0.3,
                       dropout_rng=jax.random.key(1)))
    a2 = np.asarray(fwd(params, CFG, tokens, jnp.ones_like(tokens), dropout_rate=0.3,
                        dropout_rng=jax.random.key(1)))
    b = np.asarray(fwd(params, CFG, tokens, jnp.ones_like(tokens), dropout_rate=0.3,
                       dropout_rng=jax.random.key(2)))
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a - plain).max() > 1e-3
    assert np.abs(a - b).max() > 1e-3
    # the dropout model has exactly the same parameters (it loads every checkpoint unchanged)
    import flax.linen as nn

    from gream_jax.model.decoder import Decoder
    shapes = jax.eval_shape(lambda r: nn.meta.unbox(Decoder(CFG, 0.3).init({"params": r, "dropout": r}, tokens[:1, :1],
                                                            jnp.zeros((1, 1), jnp.int32), None)["params"]),
                            jax.random.key(0))
    assert jax.tree.structure(shapes) == jax.tree.structure(params)


def test_dropout_without_a_key_is_refused(params):
    with pytest.raises(ValueError, match="dropout_rng"):
        api.forward(params, CFG, _tokens(), None, dropout_rate=0.1)


def _run_steps(mesh, params, rate, seed, n=2):
    rules = mesh_lib.DEFAULT_RULES
    apply_fn = lambda p, t, m, pos, seg, return_hidden=False, dropout_rng=None: api.forward(
        p, CFG, t, m, pos, seg, return_hidden=return_hidden,
        dropout_rate=rate if dropout_rng is not None else 0.0, dropout_rng=dropout_rng)
    step = sft.make_train_step(apply_fn, optax.sgd(0.0), lambda s: 0.0, dropout=rate > 0)
    state = sft.init_state(jax.tree.map(jnp.copy, params), optax.sgd(0.0), seed, mesh)
    tokens = np.concatenate([np.asarray(_tokens(3)), np.asarray(_tokens(4))])   # 2 micro-batches of 8 rows
    batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
             "positions": np.broadcast_to(np.arange(SEQ, dtype=np.int32), tokens.shape).copy(),
             "targets": np.ones_like(tokens)}
    losses = []
    with jax.set_mesh(mesh):
        jitted = sft.jit_train_step(step, state, mesh, rules)
        for _ in range(n):    # lr 0: the same parameters every step, only the masks can differ
            state, metrics = jitted(state, sft.device_batch(batch, 2, mesh, rules))
            losses.append(float(metrics["loss"]))
    return losses


def test_train_step_draws_a_new_mask_per_step_and_repeats_for_a_seed(mesh, params):
    plain = _run_steps(mesh, params, 0.0, seed=0)
    assert plain[0] == plain[1]
    first = _run_steps(mesh, params, 0.3, seed=0)
    again = _run_steps(mesh, params, 0.3, seed=0)
    other = _run_steps(mesh, params, 0.3, seed=1)
    assert first == again
    assert first[0] != first[1]                 # the step number is folded into the key
    assert abs(first[0] - plain[0]) > 1e-4
    assert first != other


def test_config_refuses_impossible_dropout():
    config = base_config()
    config.train.dropout_rate = 1.0
    with pytest.raises(ConfigError, match="dropout_rate"):
        validate_config(config)
