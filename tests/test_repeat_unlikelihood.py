"""Repeat negatives: the label-unlikelihood term (train/losses.py) by hand, the chunked loss equal
to the plain one through the train step, the window a negative is appended to, and the config."""

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
from gream_jax.tasks.dense import window_tokens, with_repeat_negative
from gream_jax.train import sft
from gream_jax.train.batching import TokenStats, pack
from gream_jax.train.losses import label_logprobs, per_segment_sums, sequence_unlikelihood
from gream_jax.train.sft_data import fit_window, repeat_negative_example


def test_sequence_unlikelihood_by_hand():
    # two rows; row 0 holds two examples (segments 1, 2), each with a 2-token negative
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]],
                              [[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0 + 1e-9], [0.2, 0.2, 0.6]]],
                             np.float32))
    labels = np.array([[0, 1, 2, 0], [1, 2, 0, 0]])
    marks = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
    segments = np.array([[1, 1, 2, 2], [1, 1, 1, 1]])
    lp = label_logprobs(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(np.asarray(lp[0]), np.log([0.5, 0.6, 0.6, 0.3]), rtol=1e-5)
    sums = per_segment_sums(jnp.asarray(marks) * lp, jnp.asarray(segments), 4)
    present = per_segment_sums(jnp.asarray(marks), jnp.asarray(segments), 4) > 0
    total, p, n = sequence_unlikelihood(sums, present)
    p1, p2 = 0.5 * 0.6, 0.6 * 0.3                  # the two sequences of row 0; row 1 has none
    np.testing.assert_allclose(float(total), -np.log(1 - p1) - np.log(1 - p2), rtol=1e-5)
    np.testing.assert_allclose(float(p), p1 + p2, rtol=1e-5)
    assert float(n) == 2


TABLE = np.array([[10, 20, 30], [11, 21, 31], [12, 22, 32], [10, 21, 33]], np.int32)


def test_negative_is_appended_without_cross_entropy():
    ids, mask = window_tokens(np.array([0, 1, 2]), TABLE, bos=1)
    ids2, mask2, unlikely = with_repeat_negative(ids, mask, TABLE, 1)
    assert ids2 == ids + [11, 21, 31] and mask2 == mask + [0, 0, 0]
    assert unlikely == [0] * len(ids) + [1, 1, 1]
    assert with_repeat_negative(ids, mask, TABLE, 1, last_only=True)[2] == [0] * len(ids) + [0, 0, 1]


def test_negative_example_cuts_the_window_at_a_random_item():
    rng, st = np.random.default_rng(0), TokenStats()
    items = np.array([0, 1, 2, 3])
    cuts = set()
    for _ in range(40):
        ids, mask, unlikely = repeat_negative_example(items, TABLE, 1, 13, rng, st)   # room for 4 items: <= 3 + negative
        n_items = (len(ids) - 1) // 3 - 1
        cuts.add(n_items)
        assert unlikely[-3:].sum() == 3 and unlikely.sum() == 3 and mask[-3:].sum() == 0
        context = [int(t) for t in ids[3:len(ids) - 3:3]]                   # last tokens of the context items
        assert int(ids[-1]) in context                                       # the negative is one of them
        assert mask.sum() == 3 * (n_items - 1)                               # cross-entropy on items 2..k only
    assert cuts == {1, 2, 3} and st.examples == 40
    assert fit_window(items, TABLE, 1, 13, TokenStats())[1].sum() == 9     # plain windows are unchanged


def test_train_step_chunked_equals_plain_and_weight_changes_gradients():
    cfg = ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=2, head_dim=8)
    mesh = mesh_lib.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
    rules = mesh_lib.DEFAULT_RULES
    rng = np.random.default_rng(1)
    table = np.stack([2 + np.arange(20, 40) % 5, np.arange(20, 40)], axis=1).astype(np.int32)   # item i -> (code, 20 + i)
    examples = []
    for _ in range(16):
        items = rng.choice(20, size=3, replace=False)
        ids, mask = window_tokens(items, table, bos=1)
        ids, mask, unlikely = with_repeat_negative(ids, mask, table, int(items[0]))
        examples.append((np.array(ids, np.int32), np.array(mask, np.uint8), np.array(unlikely, np.uint8)))
    host = pack(examples, 18, pad_id=0)                  # 9 tokens each, two per row
    assert host["tokens"].shape == (8, 18) and host["unlikely"].sum() == 32

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
    g2, m2 = run(1.0, 40)                               # chunked loss, chunks of 5 positions
    assert float(m1["repeat_items"]) == 16 and 0 < float(m1["repeat_p"]) < 1
    np.testing.assert_allclose(m2["repeat_p"], m1["repeat_p"], rtol=1e-5)
    np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-6)       # `loss` stays the cross-entropy
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g2, g1)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)))
    assert diff > 1e-6 and "repeat_p" not in m0


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
    config.tasks.dense_seqrec = True
    config.train.repeat_unlikelihood_tokens = "all"
    with pytest.raises(ConfigError, match="'sid' or 'last'"):
        validate_config(config)
    config.train.repeat_unlikelihood_tokens = "sid"
    config.train.repeat_unlikelihood = -1.0
    with pytest.raises(ConfigError, match="must be >= 0"):
        validate_config(config)
