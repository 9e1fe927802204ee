"""Shared-prefix update rows (config.rl.shared_prefix): one row per group, the prompt run once.

The layout must score every response exactly as its own `prompt ++ response` row does, with a
trie softmax and with the next-item head, and an update on it must move the parameters as the
row-per-response update does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer_toy import tiny_policy
from gream_jax import mesh as mesh_lib
from gream_jax.index.trie import build_trie_from_codes
from gream_jax.infer.batching import left_pad
from gream_jax.model import api as model_api
from gream_jax.model.decoder import shared_prefix_layout
from gream_jax.train import srpo
from gream_jax.train.srpo_batch import shared_prefix_batches, update_batches

CODES = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]], np.int32)     # 5 items, 2 levels
TABLE = np.array([[40, 41, -1], [50, 51, 52]], np.int32)                # (level, code) -> token


@pytest.fixture(scope="module")
def tiny():
    return tiny_policy(num_layers=2, seed=3)


def test_layout_positions_and_mask_by_hand():
    prefix = np.array([[0, 1, 1]])                     # one left pad, a 2-token prompt
    resp = np.array([[[1, 1], [1, 0]]])                # G = 2, R = 2; response 2 has one pad
    positions, mask = shared_prefix_layout(prefix, resp)
    np.testing.assert_array_equal(np.asarray(positions)[0], [0, 0, 1, 2, 3, 2, 2])   # a pad repeats
    m = np.asarray(mask)[0, 0].astype(int)
    want = np.array([[0, 0, 0, 0, 0, 0, 0],           # the pad sees nothing real
                     [0, 1, 0, 0, 0, 0, 0],
                     [0, 1, 1, 0, 0, 0, 0],
                     [0, 1, 1, 1, 0, 0, 0],           # response 1: the prompt and itself
                     [0, 1, 1, 1, 1, 0, 0],
                     [0, 1, 1, 0, 0, 1, 0],           # response 2 never sees response 1
                     [0, 1, 1, 0, 0, 1, 0]])          # ... nor its own pad
    np.testing.assert_array_equal(m, want)


def _groups(rng, n_groups, g, width=6):
    """Random prompts of different lengths, each with G two-token item responses (some padded)."""
    prompts = [list(rng.integers(1, 30, size=rng.integers(2, width + 1))) for _ in range(n_groups)]
    items = rng.integers(0, len(CODES), size=(n_groups, g))
    resp = TABLE[np.arange(2), CODES[items]].astype(np.int32)                 # [P, G, 2]
    rmask = np.ones_like(resp)
    rmask[0, 1, 1] = 0                                                         # a padded response token
    resp = np.where(rmask > 0, resp, 0)
    return prompts, resp, rmask


def _rows(prompts, resp, rmask, width):
    """Both layouts of the same groups: (row per response [P G, W + R], row per group [P, W + G R])."""
    p, g, r = resp.shape
    ptok, pmask = left_pad(prompts, width, p, 0)
    one = (np.concatenate([np.repeat(ptok, g, 0), resp.reshape(-1, r)], 1),
           np.concatenate([np.repeat(pmask, g, 0), rmask.reshape(-1, r)], 1))
    shared = (np.concatenate([ptok, resp.reshape(p, g * r)], 1),
              np.concatenate([pmask, rmask.reshape(p, g * r)], 1))
    return one, shared


@pytest.mark.parametrize("variant", ["plain", "trie", "head"])
def test_shared_prefix_logprobs_equal_a_row_per_response(tiny, variant):
    mesh, cfg, params = tiny
    p, g, r, width = 4, 3, 2, 8
    prompts, resp, rmask = _groups(np.random.default_rng(7), p, g)
    (tok1, mask1), (tok2, mask2) = _rows(prompts, resp, rmask, width)
    trie = head = None
    weight = 0.0
    if variant == "trie":
        trie = build_trie_from_codes(CODES, np.full(len(CODES), 2)).to_device(TABLE, renormalise=True)
    if variant == "head":                                  # the last SID token names an item
        item_tokens = np.array([50, 51, 52], np.int32)
        item_of_token = np.full(64, -1, np.int32)
        item_of_token[item_tokens] = np.arange(3)
        head, weight = {"item_tokens": jnp.asarray(item_tokens), "item_of_token": jnp.asarray(item_of_token)}, 1.5
    want, want_ent = srpo.response_logprobs(params, cfg, tok1, mask1, r, trie, head, weight)
    got, got_ent = srpo.shared_prefix_logprobs(params, cfg, tok2, mask2, r, g, trie, head, weight)
    live = rmask.reshape(p * g, r) > 0
    np.testing.assert_allclose(np.asarray(got).reshape(p * g, r)[live], np.asarray(want)[live], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got_ent).reshape(p * g, r)[live], np.asarray(want_ent)[live],
                               rtol=1e-5, atol=1e-5)
    if variant == "trie":     # the trie softmax really changes the values (the comparison is not vacuous)
        plain, _ = srpo.response_logprobs(params, cfg, tok1, mask1, r)
        assert not np.allclose(np.asarray(plain)[live], np.asarray(want)[live], atol=1e-3)


def test_shared_prefix_update_moves_parameters_as_a_row_per_response(tiny):
    """Same groups, same advantages: the two layouts' batches, log-probs and one optimiser step
    agree. 4 groups per mini-batch in micro-batches of 8 groups (the 8-device mesh's multiple)
    leave 4 weight-0 filler rows."""
    mesh, cfg, params = tiny
    rules = mesh_lib.DEFAULT_RULES
    p, g, r = 4, 4, 2
    rng = np.random.default_rng(11)
    prompts, resp, rmask = _groups(rng, p, g)
    prompt_ids = np.empty(p, dtype=object)
    prompt_ids[:] = prompts
    batch = {"prompt_ids": prompt_ids, "response_tokens": resp, "response_mask": rmask,
             "group_weight": np.array([1.0, 1.0, 0.0, 1.0], np.float32)}     # one weight-0 group
    adv = rng.normal(size=(p, g)).astype(np.float32)
    one = update_batches(batch, adv, 4, 8, np.random.default_rng(0), 0, width_bucket=8)
    shared = shared_prefix_batches(batch, adv, 4, 8, np.random.default_rng(0), 0, width_bucket=8)
    assert len(one) == len(shared) == 1
    np.testing.assert_array_equal(one[0]["index"], shared[0]["index"])
    assert shared[0]["tokens"].shape == (1, 8, 8 + g * r)                    # 4 groups + 4 fillers
    assert shared[0]["response_mask"][0, 4:].sum() == 0                       # the fillers
    live_tokens = float((rmask * batch["group_weight"][:, None, None]).sum())
    assert shared[0]["response_mask"].sum() == one[0]["response_mask"].sum() == live_tokens
    opt = srpo.OptimizerConfig(learning_rate=1e-2, warmup_steps=0)
    out = []
    for mb, rows in ((one[0], 0), (shared[0], g)):
        logprob_fn = srpo.make_logprob_fn(cfg, mesh, rules, r, group_size=rows)
        update = srpo.make_update_fn(cfg, opt, srpo.LossConfig(), mesh, rules, r, group_size=rows)
        state = srpo.init_optimizer_state(cfg, opt, params, mesh, rules)
        mb = {k: v for k, v in mb.items() if k != "index"}
        with jax.set_mesh(mesh):
            mb["old_logp"] = mb["ref_logp"] = np.asarray(logprob_fn(params, mb["tokens"], mb["attention_mask"]))
            new, _, metrics = update(jax.tree.map(lambda x: x.copy(), params), state, mb)
        out.append((jax.tree.map(np.asarray, new), jax.device_get(metrics)))
    (a, ma), (b, mb_) = out
    assert float(ma["tokens"]) == float(mb_["tokens"]) == live_tokens
    np.testing.assert_allclose(float(ma["loss"]), float(mb_["loss"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(ma["entropy"]), float(mb_["entropy"]), rtol=1e-4)
    moved = [not np.allclose(x, np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(params))]
    assert any(moved)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_forward_with_an_explicit_mask_needs_positions(tiny):
    _, cfg, params = tiny
    tokens = np.ones((1, 3), np.int32)
    with pytest.raises(ValueError, match="explicit positions"):
        model_api.forward(params, cfg, tokens, mask=np.ones((1, 1, 3, 3), bool))
