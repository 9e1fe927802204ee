"""The repeat-unlikelihood term (train/losses.py): hand-computed values on a tiny packed row, the
chunked path equal to the plain one (value and gradients, through the train step), the data
marking (dense windows mark their items' last SID token) and the config checks."""

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
from gream_jax.tasks.dense import window_item_ends, window_tokens
from gream_jax.train import sft
from gream_jax.train.batching import pack
from gream_jax.train.losses import repeat_unlikelihood_terms


def _terms(logits, tokens, targets, ends, segments):
    shift = lambda x: np.concatenate([x[:, 1:], np.zeros_like(x[:, :1])], axis=1)  # noqa: E731
    ul_mask = (shift(targets) > 0) & (shift(ends) > 0)
    return repeat_unlikelihood_terms(jnp.asarray(logits), jnp.arange(tokens.shape[1]), jnp.asarray(ul_mask),
                                     jnp.asarray(shift(tokens)), jnp.asarray(tokens), jnp.asarray(ends),
                                     jnp.asarray(segments))


def test_hand_computed_pairs_and_value():
    # One row, two examples. Example 1 (segment 1): items A=5, B=6, A again, then target C=7, each
    # one token (an item-unique last token). Example 2 (segment 2): item 5 then target 5 (a repeat).
    tokens = np.array([[1, 5, 6, 5, 7, 1, 5, 5, 0]], np.int32)
    segments = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 0]], np.int32)
    ends = np.array([[0, 1, 1, 1, 1, 0, 1, 1, 0]], np.uint8)
    targets = np.array([[0, 0, 1, 1, 1, 0, 0, 1, 0]], np.uint8)
    vocab = 8
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 9, vocab)).astype(np.float32)
    total, pairs = _terms(logits, tokens, targets, ends, segments)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    p = np.exp(logp[0])
    # position 1 predicts 6 (earlier items {5}); position 2 predicts 5 (earlier {5, 6}, 5 is the
    # label: only 6); position 3 predicts 7 (earlier {5, 6}, the second 5 counted once); position
    # 6 (segment 2) predicts 5, its only earlier item is the label; nothing crosses segments.
    expect = [(1, 5), (2, 6), (3, 5), (3, 6)]
    want = sum(-np.log1p(-p[i, t]) for i, t in expect)
    assert float(pairs) == len(expect)
    np.testing.assert_allclose(float(total), want, rtol=1e-5)


def test_train_step_chunked_equals_plain_and_weight_changes_gradients():
    cfg = ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=2, head_dim=8)
    mesh = mesh_lib.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
    rules = mesh_lib.DEFAULT_RULES
    rng = np.random.default_rng(1)
    examples = []
    for _ in range(16):                     # dense-window-like examples: BOS + (code, item) pairs
        items = rng.choice(np.arange(20, 40), size=4, replace=False)
        ids = [1] + [int(t) for it in items for t in (2 + it % 5, it)]
        mask = [0, 0, 0] + [1] * 6
        ends = [0] + [e for _ in items for e in (0, 1)]
        examples.append((np.array(ids, np.int32), np.array(mask, np.uint8), np.array(ends, np.uint8)))
    host = pack(examples, 18, pad_id=0)
    assert host["tokens"].shape == (8, 18) and host["item_ends"].sum() == 64

    def run(weight, chunk):
        params = api.init_params(cfg, jax.random.PRNGKey(0), mesh)
        apply_fn = lambda p, t, m, pos, seg, return_hidden=False: api.forward(  # noqa: E731
            p, cfg, t, m, pos, seg, return_hidden=return_hidden)
        step = sft.make_train_step(apply_fn, optax.sgd(1.0), lambda s: 1.0, loss_chunk_tokens=chunk,
                                   head_fn=lambda p: api.lm_head_rows(p, cfg), repeat_unlikelihood=weight)
        state = sft.init_state(params, optax.sgd(1.0), 0, mesh)
        before = jax.device_get(params)
        with jax.set_mesh(mesh):
            state, metrics = sft.jit_train_step(step, state, mesh, rules)(state, sft.device_batch(host, 1, mesh, rules))
        return jax.tree.map(lambda a, b: a - b, before, jax.device_get(state["params"])), jax.device_get(metrics)

    g0, m0 = run(0.0, 0)
    g1, m1 = run(1.0, 0)
    g2, m2 = run(1.0, 40)                   # chunked loss, chunks of 5 positions
    # 16 examples x (items 2, 3, 4 see 1, 2, 3 earlier items) = 96 pairs
    assert float(m1["repeat_pairs"]) == 96 and float(m2["repeat_pairs"]) == 96
    np.testing.assert_allclose(m2["repeat_ul"], m1["repeat_ul"], rtol=1e-5)
    np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-6)       # `loss` stays the cross-entropy
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g2, g1)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)))
    assert diff > 1e-6 and "repeat_ul" not in m0


def test_window_item_ends_mark_each_items_last_token():
    table = np.array([[10, 20, 30], [11, 21, 31], [12, 22, -1]], np.int32)   # item 2 has a 2-token SID
    ids, mask = window_tokens(np.array([0, 2, 1]), table, bos=1)
    ends = window_item_ends(np.array([0, 2, 1]), table)
    assert len(ends) == len(ids)
    assert [t for t, e in zip(ids, ends) if e] == [30, 22, 31]


def test_config_requires_item_token_and_dense_windows():
    config = base_config()
    config.index.collision = "rank_suffix"
    config.train.repeat_unlikelihood = 1.0
    with pytest.raises(ConfigError, match="item_token"):
        validate_config(config)
    config.index.collision = "item_token"
    config.tasks.dense_seqrec = False
    with pytest.raises(ConfigError, match="dense_seqrec"):
        validate_config(config)
    config.train.repeat_unlikelihood = -1.0
    with pytest.raises(ConfigError, match="must be >= 0"):
        validate_config(config)
