"""Beam rollouts for Direct-mode SRPO (srpo_beam) and the rank-discounted reward."""

import jax.numpy as jnp
import numpy as np
import pytest

import infer_toy as toy
from gream_jax.config_defaults import base_config, validate_config
from gream_jax.config_defaults.base import ConfigError
from gream_jax.index.sid import SemanticIds
from gream_jax.index.trie import build_trie_from_codes
from gream_jax.infer import decoder
from gream_jax.infer.batching import left_pad
from gream_jax.train import rewards
from gream_jax.train.srpo_beam import BeamRolloutRunner, item_response_tokens

PAD = 0


def test_rank_penalised_hand_values():
    r = jnp.asarray([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    hits = jnp.asarray([[True, False, False, False], [False] * 4])
    out = np.asarray(rewards.rank_penalised(r, hits, 0.5))
    d = 1.0 / np.log2(np.arange(4) + 2.0)                 # 1, .631, .5, .431
    np.testing.assert_allclose(out[0], [1.0, 0.5 - 0.5 * d[1], -0.5 * d[2], -0.5 * d[3]], rtol=1e-6)
    np.testing.assert_allclose(out[1], -0.5 * d, rtol=1e-6)
    # A hit keeps its reward wherever it is ranked; weight 0 changes nothing.
    hits2 = jnp.asarray([[False, False, True, False]] * 2)
    assert np.asarray(rewards.rank_penalised(r, hits2, 0.5))[1, 2] == 0.0
    np.testing.assert_array_equal(np.asarray(rewards.rank_penalised(r, hits, 0.0)), np.asarray(r))
    # Without a hit a group still has variance: the top-ranked wrong item is pushed hardest.
    assert out[1].std() > 0 and np.argmin(out[1]) == 0


def test_item_response_tokens_spell_each_items_sid():
    table = np.array([[10, 11, 12], [20, 21, -1], [30, 31, 32]], np.int32)
    codes = np.array([[0, 1, -1], [2, 0, 1], [1, 1, 2]], np.int32)
    lengths = np.array([2, 3, 3])
    tokens, mask = item_response_tokens(table, codes, lengths, PAD)
    np.testing.assert_array_equal(tokens, [[10, 21, PAD], [12, 20, 31], [11, 21, 32]])
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match="item 0: a SID code has no vocabulary token"):
        item_response_tokens(table, np.array([[0, 2, 0]]), np.array([3]), PAD)


@pytest.fixture(scope="module")
def toy_model():
    m = toy.tiny_qwen(n_items=24, level_sizes=(3, 3))
    m["sids"] = SemanticIds(m["codes"], m["lengths"], m["sizes"], meta={})
    m["dev"] = build_trie_from_codes(m["codes"], m["lengths"]).to_device(m["table"])
    return m


@pytest.mark.parametrize("head_weight", [0.0, 1.5])
def test_beam_runner_groups_are_the_decoders_top_items(toy_model, head_weight):
    m = toy_model
    g, beam = 5, 12
    item_tokens = None
    if head_weight:   # any item-unique token per item will do for the fused ranking's plumbing
        item_tokens = jnp.asarray(np.arange(len(m["codes"])) % 7 + toy.N_SPECIAL, jnp.int32)
    runner = BeamRolloutRunner(m["cfg"], m["dev"], m["table"], m["sids"], m["mesh"], m["cfg"].rules, g, beam,
                               chunk_prompts=2, reward_fn=rewards.residual_reward,
                               credit_table=rewards.credit_table(m["codes"].shape[1], 2), pad_id=PAD,
                               item_tokens=item_tokens, head_weight=head_weight)
    prompts = [[7, 8, 9], [11, 12, 13, 5], [5, 6]]          # 3 prompts over chunks of 2: padding dropped
    targets = m["codes"][[4, 9, 17]]
    out = runner.run(m["params"], prompts, targets)
    width = 32                                               # the runner's prompt bucket
    tokens, mask = left_pad(prompts, width, len(prompts), PAD)
    ref = decoder.direct_search(m["params"], jnp.asarray(tokens), jnp.asarray(mask), m["dev"], item_tokens,
                                model_cfg=m["cfg"], beam_size=beam, top_k=g,
                                cache_len=decoder.direct_cache_len(width, m["dev"]), item_head_weight=head_weight)
    items = np.asarray(ref.items)
    assert out["codes"].shape == (3, g, m["codes"].shape[1]) and out["well_formed"].all()
    for p in range(3):
        assert len(set(items[p])) == g                                         # distinct items
        np.testing.assert_array_equal(out["codes"][p], m["codes"][items[p]])
        for j, item in enumerate(items[p]):
            n = m["lengths"][item]
            want = m["table"][np.arange(n), m["codes"][item, :n]]
            np.testing.assert_array_equal(out["response_tokens"][p, j, :n], want)
            assert out["response_mask"][p, j].sum() == n
    want_r = rewards.residual_reward(jnp.asarray(out["codes"]), jnp.asarray(out["well_formed"]),
                                     jnp.asarray(targets), runner.credit_table)
    np.testing.assert_allclose(out["rewards"], np.asarray(want_r))
    np.testing.assert_array_equal(out["hits"], (items == np.array([4, 9, 17])[:, None]))


def test_beam_runner_rejects_a_group_larger_than_the_beam(toy_model):
    m = toy_model
    with pytest.raises(ValueError, match="beam_size=4 must be >= config.rl.group_size=5"):
        BeamRolloutRunner(m["cfg"], m["dev"], m["table"], m["sids"], m["mesh"], m["cfg"].rules, 5, 4, 2,
                          rewards.residual_reward, rewards.credit_table(3, 2), PAD)


@pytest.mark.parametrize("edit, message", [
    (dict(rollout="beam", mode="reasoning"), "rollout='beam' needs config.rl.mode='direct'"),
    (dict(rollout="beam", mode="direct", beam_size=4), "beam_size=4: must be >= config.rl.group_size=10"),
    (dict(rollout="sample", mode="direct", rank_penalty=0.5), "rank_penalty=0.5 needs config.rl.rollout='beam'"),
    (dict(rollout="beam", mode="direct", rank_penalty=-1.0), "rank_penalty=-1.0: must be >= 0"),
    (dict(rollout="greedy"), "config.rl.rollout='greedy': must be one of"),
    (dict(mode="direct", policy_item_head=True), r"policy_item_head=True needs config.eval.item_head_weight > 0 \(got 0.0\)"),
    (dict(mode="reasoning", policy_item_head=True), "policy_item_head=True needs config.rl.mode='direct'"),
])
def test_config_rejects_impossible_rollouts(edit, message):
    config = base_config()
    for k, v in edit.items():
        config.rl[k] = v
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
