"""Decode windows: the schedule, the split loop, and a windowed decode step against the full cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infer_toy as toy
from gream_jax.index.trie import build_trie_from_codes
from gream_jax.infer.windows import attention_windows, windowed_while_loop
from gream_jax.model import api
from gream_jax.train.srpo_rollouts import RolloutSpec, generate, sid_level_code_table


def test_attention_windows_cover_the_slots_after_the_prompt():
    assert attention_windows(664, 128, first_slot=144) == (256, 384, 512, 640)
    assert attention_windows(640, 128, first_slot=128) == (256, 384, 512)   # slot 128 is written first
    assert attention_windows(640, 128, first_slot=127) == (128, 256, 384, 512)
    assert attention_windows(100, 128, first_slot=10) == ()                  # one window: the whole cache
    assert attention_windows(664, 0, first_slot=144) == ()
    with pytest.raises(ValueError, match="cache_len"):
        attention_windows(0, 128)


def test_windowed_loop_runs_each_step_inside_its_window_and_ends_where_the_plain_loop_does():
    # carry = (t, write index, log of (index, window) per step); the body writes one slot per step.
    def cond(c):
        return c[0] < 11

    def body(c, attend_len):
        t, index, log = c
        log = log.at[t].set(jnp.array([index, -1 if attend_len is None else attend_len]))
        return t + 1, index + 1, log

    init = (jnp.int32(0), jnp.int32(3), jnp.zeros((11, 2), jnp.int32))
    t, index, log = jax.jit(lambda c: windowed_while_loop(cond, body, c, lambda c: c[1], (4, 8, 12)))(init)
    assert int(t) == 11 and int(index) == 14
    log = np.asarray(log)
    np.testing.assert_array_equal(log[:, 0], np.arange(3, 14))
    np.testing.assert_array_equal(log[:, 1], [4, 8, 8, 8, 8, 12, 12, 12, 12, -1, -1])
    assert (log[:9, 0] < log[:9, 1]).all()           # every windowed step writes inside its window
    plain = jax.jit(lambda c: windowed_while_loop(cond, body, c, lambda c: c[1]))(init)
    assert int(plain[0]) == 11 and (np.asarray(plain[2])[:, 1] == -1).all()
    with pytest.raises(ValueError, match="increasing"):
        windowed_while_loop(cond, body, init, lambda c: c[1], (8, 4))


@pytest.fixture(scope="module")
def qwen():
    return toy.tiny_qwen(n_items=24, level_sizes=(3, 3))


def test_decode_step_on_a_window_equals_the_full_cache(qwen):
    cfg, params = qwen["cfg"], qwen["params"]
    tokens = jnp.array([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]], jnp.int32)     # a left-padded row
    mask = (tokens > 0).astype(jnp.int32)
    cache = api.init_cache(cfg, 2, 32)
    _, cache = api.prefill(params, cfg, tokens, mask, cache)
    step = jax.jit(api.decode_step, static_argnames=("model_cfg", "attend_len"))
    full_logits, full_cache = step(params, cfg, jnp.array([13, 14]), cache)
    win_logits, win_cache = step(params, cfg, jnp.array([13, 14]), cache, attend_len=8)
    np.testing.assert_allclose(np.asarray(win_logits), np.asarray(full_logits), rtol=1e-5, atol=1e-4)
    for a, b in zip(jax.tree.leaves(win_cache), jax.tree.leaves(full_cache)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))   # the write lands in the full cache


def test_srpo_rollouts_with_decode_windows_equal_the_full_cache(qwen):
    codes, lengths, table, vocab = qwen["codes"], qwen["lengths"], qwen["table"], qwen["vocab"]
    trie = build_trie_from_codes(codes, lengths).to_device(table)
    level_code = jnp.asarray(sid_level_code_table(table, vocab))
    never = vocab + 7
    spec = RolloutSpec(mode="reasoning", sid_max_len=int(codes.shape[1]), sid_min_len=int(lengths.min()),
                       max_think_tokens=12, constrained_answer=True, temperature=1.0, top_p=0.95, pad_id=0,
                       think_open=never, think_close=never, answer_open=never, answer_close=never)
    prompts = jnp.array([[0, 1, 2], [3, 4, 5], [5, 5, 1], [0, 0, 2], [4, 1, 3], [2, 2, 2]], jnp.int32)
    pmask = (prompts > 0).astype(jnp.int32)
    run = jax.jit(generate, static_argnames=("model_cfg", "spec"))
    free = np.asarray(run(qwen["params"], qwen["cfg"], spec, trie, level_code, prompts, pmask,
                          jax.random.PRNGKey(2))["tokens"])
    # Tags the model writes in some rows only: rows answer or end their turn at different steps.
    some = [t for t in range(1, vocab) if 0 < sum(t in row for row in free) < len(free)]
    spec = dict_replace(spec, answer_open=some[0], end_ids=(some[-1],))
    ref = run(qwen["params"], qwen["cfg"], spec, trie, level_code, prompts, pmask, jax.random.PRNGKey(2))
    assert int(np.asarray(ref["mask"]).sum(1).min()) < int(np.asarray(ref["mask"]).sum(1).max())  # ragged
    for window in (4, 8):
        out = run(qwen["params"], qwen["cfg"], dict_replace(spec, decode_window=window), trie, level_code,
                  prompts, pmask, jax.random.PRNGKey(2))
        for key in ref:
            np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(ref[key]), err_msg=key)


def dict_replace(spec, **kw):
    import dataclasses
    return dataclasses.replace(spec, **kw)
