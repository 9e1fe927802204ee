"""Trainer pieces: packing, the batch stream's state, the masked loss, accumulation, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax.model import api
from gream_jax.train import sft
from gream_jax.train.batching import PackedStream, TokenStats, fit_to_length, pack
from sft_toy import tiny_config, tiny_inputs


def test_pack_keeps_examples_whole_with_segments_and_positions():
    exs = [(np.arange(1, 6, dtype=np.int32), np.array([0, 0, 1, 1, 1], np.uint8)),
           (np.arange(10, 14, dtype=np.int32), np.array([0, 1, 1, 1], np.uint8)),
           (np.arange(20, 27, dtype=np.int32), np.array([0] * 6 + [1], np.uint8))]
    out = pack(exs, 10, pad_id=0)
    assert out["tokens"].shape == (2, 10)
    np.testing.assert_array_equal(out["segment_ids"][0], [1] * 5 + [2] * 4 + [0])
    np.testing.assert_array_equal(out["positions"][0, 5:9], [0, 1, 2, 3])
    np.testing.assert_array_equal(out["tokens"][1, :7], np.arange(20, 27))
    assert out["targets"].sum() == 3 + 3 + 1
    # no target is the first token of a segment
    first = np.diff(np.pad(out["segment_ids"], ((0, 0), (1, 0))), axis=1) != 0
    assert not (first & (out["targets"] > 0)).any()


def test_fit_to_length_truncates_prompt_from_left_and_counts():
    st = TokenStats()
    ids, mask = fit_to_length(list(range(12)), [0] * 9 + [1] * 3, 8, st)
    assert list(ids) == list(range(4, 12)) and st.truncated_prompts == 1
    assert fit_to_length(list(range(12)), [0] * 2 + [1] * 10, 8, st) is None and st.dropped == 1


def test_stream_is_random_access_and_resumable():
    def epoch(e):
        rng = np.random.default_rng(e)
        return [(rng.integers(1, 50, int(rng.integers(2, 6))).astype(np.int32), np.ones(5, np.uint8)[:1])
                for _ in range(40)]
    a = PackedStream("t", lambda e: [(x, np.r_[0, np.ones(len(x) - 1, np.uint8)]) for x, _ in epoch(e)],
                     4, 12, 0, seed=3)
    seq = [a.next()["tokens"] for _ in range(12)]
    assert a.epoch >= 1                              # crossed an epoch boundary
    b = PackedStream(a.name, a.epoch_examples, 4, 12, 0, seed=3)
    b.set_state({"consumed": 7})
    for k in range(7, 12):
        np.testing.assert_array_equal(b.next()["tokens"], seq[k])


def test_masked_nll_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    tokens = rng.integers(0, 7, (2, 5))
    targets = np.array([[0, 0, 1, 1, 0], [0, 1, 0, 0, 1]])
    total, count, _ = sft.masked_nll(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(targets))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -sum(logp[b, t - 1, tokens[b, t]] for b in range(2) for t in range(5) if targets[b, t])
    assert float(count) == 4 and float(total) == pytest.approx(want, rel=1e-5)


def _one_batch(config, inputs):
    from gream_jax.train.sft_data import make_streams
    streams = make_streams(config, inputs.split, inputs.semantic_ids, inputs.items, inputs.tokenizer)
    return streams.alignment.batch(0)


def _run_steps(config, inputs, host, n=2):
    opt, sched = sft.make_optimizer(config.train), sft.learning_rate_schedule(config.train)
    apply_fn = lambda p, t, m, pos, seg: api.forward(p, inputs.model_cfg, t, m, pos, seg)
    state = sft.init_state(inputs.params, opt, 0, inputs.mesh)
    step = sft.jit_train_step(sft.make_train_step(apply_fn, opt, sched, config.train.compute_dtype),
                              state, inputs.mesh, inputs.rules)
    losses = []
    for _ in range(n):
        with jax.set_mesh(inputs.mesh):
            state, m = step(state, sft.device_batch(host, int(config.train.grad_accum), inputs.mesh, inputs.rules))
        losses.append(float(m["loss"]))
    return jax.device_get(state["params"]), losses, state


def test_sharded_step_equals_single_device_step():
    config = tiny_config()
    one = tiny_inputs(config, jax.devices()[:1])
    eight = tiny_inputs(config, jax.devices())
    assert len(jax.devices()) == 8
    host = _one_batch(config, one)
    p1, l1, _ = _run_steps(config, one, host)
    p8, l8, state8 = _run_steps(config, eight, host)
    leaf = jax.tree.leaves(state8["params"])[0]
    assert len(leaf.sharding.device_set) == 8
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    assert l1[1] < l1[0]
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_gradient_accumulation_equals_full_batch():
    config = tiny_config()
    inputs = tiny_inputs(config, jax.devices()[:1])
    host = _one_batch(config, inputs)
    p1, l1, _ = _run_steps(config, inputs, host, n=1)
    config.train.grad_accum = 4
    p4, l4, _ = _run_steps(config, tiny_inputs(config, jax.devices()[:1]), host, n=1)
    assert l1[0] == pytest.approx(l4[0], rel=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=1e-5)  # Adam amplifies float-order noise in tiny grads


def test_bfloat16_compute_trains():
    config = tiny_config(compute_dtype="bfloat16")
    inputs = tiny_inputs(config, jax.devices()[:1])
    _, losses, state = _run_steps(config, inputs, _one_batch(config, inputs), n=3)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert jax.tree.leaves(state["params"])[0].dtype == jnp.float32
