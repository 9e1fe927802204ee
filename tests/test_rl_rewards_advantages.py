"""Pure RL math against hand-computed values: rewards, z-scores, the pass@k bonus, the registry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax.train import advantages as adv_lib
from gream_jax.train import rewards as rw


def test_credit_table_matches_gream_four_levels():
    table = rw.credit_table(max_len=5, n_levels=4)
    np.testing.assert_allclose(table, [0.0, 0.5, 0.70710677, 0.8660254, 0.95, 0.95], rtol=1e-6)


def test_credit_table_three_levels_and_explicit_credits():
    np.testing.assert_allclose(rw.credit_table(4, 3), [0, math.sqrt(1 / 3), math.sqrt(2 / 3), 0.95, 0.95],
                               rtol=1e-6)
    np.testing.assert_allclose(rw.credit_table(3, 3, credits=(0.1, 0.2)), [0, 0.1, 0.2, 0.2])
    with pytest.raises(ValueError, match="n_levels"):
        rw.credit_table(4, 0)


def test_residual_reward_by_leading_codes():
    target = jnp.array([[1, 2, 3, 4, -1]], jnp.int32)                       # [P=1, L=5]
    pred = jnp.array([[[1, 2, 3, 4, -1],     # exact
                       [1, 2, 3, 4, 0],      # all 4 codes, spurious suffix -> not exact
                       [1, 2, 3, 9, -1],     # 3 leading
                       [1, 9, 3, 4, -1],     # 1 leading (later matches do not count)
                       [9, 2, 3, 4, -1],     # 0 leading
                       [1, 2, 3, 4, -1]]],   # exact codes but malformed completion
                     jnp.int32)
    well = jnp.array([[True, True, True, True, True, False]])
    table = rw.credit_table(5, 4)
    r = jax.jit(rw.residual_reward)(pred, well, target, table)
    np.testing.assert_allclose(np.asarray(r), [[1.0, 0.95, 0.8660254, 0.5, 0.0, 0.0]], rtol=1e-6)
    e = rw.exact_reward(pred, well, target)
    np.testing.assert_array_equal(np.asarray(e), [[1, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(rw.leading_matches(pred, target)), [[4, 4, 3, 1, 0, 4]])


def test_group_zscore_unbiased_std():
    r = jnp.array([[0.0, 1.0, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]])
    a = np.asarray(adv_lib.group_zscore(r))
    std = np.std([0.0, 1.0, 0.5, 0.5], ddof=1)
    np.testing.assert_allclose(a[0], (np.array([0.0, 1.0, 0.5, 0.5]) - 0.5) / (std + 1e-6), rtol=1e-5)
    np.testing.assert_array_equal(a[1], 0.0)                   # sigma = 0 -> zero, not NaN
    np.testing.assert_array_equal(np.asarray(adv_lib.group_zscore(jnp.ones((2, 1)))), 0.0)


def _bonus(hits_row, k=4):
    return np.asarray(adv_lib.pass_at_k_bonus(jnp.asarray([hits_row]), k))[0]


def test_pass_at_k_bonus_hand_computed_n10_c1():
    hits = [True] + [False] * 9
    b = _bonus(hits)
    # rho = 1 - C(9,4)/C(10,4) = 1 - 126/210 = 0.4; sigma = sqrt(0.24)
    sigma = math.sqrt(0.24)
    hit = 0.6 / (sigma + 1e-6)
    # miss: 1 - 0.4 - C(8,3)/C(9,3) = 0.6 - 56/84
    miss = (0.6 - 56 / 84) / (sigma + 1e-6)
    np.testing.assert_allclose(b, [hit] + [miss] * 9, rtol=1e-5)


def test_pass_at_k_bonus_n10_c3():
    hits = [True, False, True, False, False, True, False, False, False, False]
    b = _bonus(hits)
    rho = 1 - math.comb(7, 4) / math.comb(10, 4)          # 1 - 35/210
    sigma = math.sqrt(rho * (1 - rho))
    miss = (1 - rho - math.comb(6, 3) / math.comb(9, 3)) / (sigma + 1e-6)
    expect = [(1 - rho) / (sigma + 1e-6) if h else miss for h in hits]
    np.testing.assert_allclose(b, expect, rtol=1e-5)


def test_pass_at_k_bonus_edge_cases():
    np.testing.assert_array_equal(_bonus([False] * 10), 0.0)   # c = 0: rho = 0, sigma = 0
    np.testing.assert_array_equal(_bonus([True] * 10), 0.0)    # c = n: rho = 1, sigma = 0
    # c = 7 of 10: every draw of 4 contains a hit (C(3,4) = 0) -> rho = 1, sigma = 0.
    np.testing.assert_array_equal(_bonus([True] * 7 + [False] * 3), 0.0)
    # n < k: k is clamped to n, so the bonus vanishes and nothing is NaN.
    b = _bonus([True, False, False], k=4)
    assert np.all(np.isfinite(b)) and np.all(b == 0.0)


def test_srpo_advantage_adds_bonus_and_registry():
    rewards = jnp.array([[1.0, 0.5, 0.0, 0.0, 0.866, 0.0, 0.0, 0.0, 0.0, 0.0]])
    hits = rewards == 1.0
    a_bonus = np.asarray(jax.jit(adv_lib.srpo_advantage, static_argnums=(2, 3))(rewards, hits, 4, True))
    a_plain = np.asarray(adv_lib.srpo_advantage(rewards, hits, 4, False))
    np.testing.assert_allclose((a_bonus - a_plain)[0], _bonus(list(np.asarray(hits[0]))), rtol=1e-5, atol=1e-6)
    assert adv_lib.get_objective("grpo") == adv_lib.Objective("grpo", "exact", False)
    assert adv_lib.get_objective("srpo_no_residual").bonus and adv_lib.get_objective("srpo_no_bonus").reward == "residual"
    with pytest.raises(KeyError, match="unknown RL objective"):
        adv_lib.get_objective("ppo")


def test_popularity_weights_by_hand():
    live = np.array([True, True, True, False])              # the last group is a weight-0 filler
    got = adv_lib.popularity_weights(np.array([1, 4, 2, 9]), 0.5, live)
    raw = np.array([1, 0.5, 2 ** -0.5, 1 / 3])
    np.testing.assert_allclose(got, raw / raw[:3].mean(), rtol=1e-6)
    assert got[:3].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(adv_lib.popularity_weights(np.array([3, 7]), 0.0, np.array([True, True])), [1, 1])
    with pytest.raises(ValueError, match="target counts must be >= 1"):
        adv_lib.popularity_weights(np.array([0, 2]), 1.0, np.array([True, True]))


def test_zero_variance_groups():
    r = jnp.array([[0.5, 0.5, 0.5], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(adv_lib.zero_variance_groups(r)), [True, False, True])


def test_history_repeats_are_found_and_their_reward_replaced():
    from gream_jax.train.rewards import penalise_repeats, repeats_history
    # 1 prompt x 3 answers over 3-code SIDs; history holds items (1, 2, 7) and (4, 5, 9) plus a padding row
    pred = jnp.asarray([[[1, 2, 7], [1, 2, 8], [4, 5, 9]]], jnp.int32)
    hist = jnp.asarray([[[1, 2, 7], [4, 5, 9], [-1, -1, -1]]], jnp.int32)
    rep = repeats_history(pred, hist)
    np.testing.assert_array_equal(np.asarray(rep), [[True, False, True]])
    # a malformed answer (all -1) never matches the padding row
    assert not bool(repeats_history(jnp.full((1, 1, 3), -1, jnp.int32), hist)[0, 0])
    out = penalise_repeats(jnp.asarray([[0.816, 0.816, 1.0]]), rep, -0.5)
    np.testing.assert_allclose(np.asarray(out), [[-0.5, 0.816, -0.5]], rtol=1e-6)


def test_window_reward_pays_the_best_discounted_item_of_the_window():
    # 2 prompts x 3 answers over 3-code SIDs (the last code item-unique: 3 semantic levels).
    # Prompt 0's window: target (1, 2, 7), then (4, 5, 9), then (1, 2, 8); weights 1, .8, .64.
    # Prompt 1's window: target (3, 3, 3) and a padding slot (-1 codes, weight 0).
    window = jnp.asarray([[[1, 2, 7], [4, 5, 9], [1, 2, 8]],
                          [[3, 3, 3], [-1, -1, -1], [-1, -1, -1]]], jnp.int32)       # [P, W, L]
    weights = jnp.asarray([[1.0, 0.8, 0.64], [1.0, 0.0, 0.0]])
    pred = jnp.asarray([[[4, 5, 9], [1, 2, 8], [1, 2, 6]],
                        [[3, 3, 4], [-1, -1, -1], [3, 3, 3]]], jnp.int32)
    well = jnp.asarray([[True, True, True], [True, True, True]])
    table = rw.credit_table(3, 3)                             # 0, .577, .816, .95
    r, hits = jax.jit(lambda *a: rw.window_reward(rw.residual_reward, *a))(pred, well, window, weights, table)
    # (4,5,9): exact second item -> .8; (1,2,8): exact third (.64) beats the target's prefix (.816)
    # -> .816; (1,2,6): two codes of the target -> .816. Prompt 1: (3,3,4) two codes -> .816; an
    # all -1 answer matches no padding slot -> 0; exact target -> 1.
    np.testing.assert_allclose(np.asarray(r), [[0.8, 0.8164966, 0.8164966], [0.8164966, 0.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(hits), [[True, True, False], [False, False, True]])
    # W = 1 with weight 1 is the plain reward.
    r1, h1 = rw.window_reward(rw.exact_reward, pred, well, window[:, :1], weights[:, :1], table)
    np.testing.assert_array_equal(np.asarray(r1), np.asarray(rw.exact_reward(pred, well, window[:, 0])))
    np.testing.assert_array_equal(np.asarray(h1), np.asarray(rw.exact_hits(pred, well, window[:, 0])))
    # The exact reward over the window: a later item pays its discount.
    r2, _ = rw.window_reward(rw.exact_reward, pred, well, window, weights, table)
    np.testing.assert_allclose(np.asarray(r2), [[0.8, 0.64, 0.0], [0.0, 0.0, 1.0]], rtol=1e-6)


def test_future_window_config_is_checked():
    from gream_jax.config_defaults import base_config
    from gream_jax.config_defaults.base import ConfigError, validate_config
    for field, value, message in (("future_window", 0, "future_window=0"),
                                  ("future_discount", 0.0, "future_discount=0.0"),
                                  ("future_discount", 1.5, "future_discount=1.5")):
        config = base_config()
        config.rl[field] = value
        with pytest.raises(ConfigError, match=message):
            validate_config(config)
    config = base_config()
    config.rl.mode, config.rl.credit_assignment, config.rl.future_window = "direct", "level", 3
    with pytest.raises(ConfigError, match="future_window=3 needs"):
        validate_config(config)


def test_target_popularity_power_config_is_checked():
    from gream_jax.config_defaults import base_config
    from gream_jax.config_defaults.base import ConfigError, validate_config
    config = base_config()
    config.rl.target_popularity_power = -0.5
    with pytest.raises(ConfigError, match="target_popularity_power=-0.5"):
        validate_config(config)


def test_repeat_penalty_config_is_checked():
    from gream_jax.config_defaults import base_config
    from gream_jax.config_defaults.base import ConfigError, validate_config
    config = base_config()
    config.rl.penalise_repeats = True
    config.rl.repeat_reward = -2.0
    with pytest.raises(ConfigError, match="repeat_reward"):
        validate_config(config)


def test_level_returns_credit_each_sid_token_its_reward_to_go():
    # Beauty/ML-100k shape: 2 semantic levels + an item token; credits 0, sqrt(1/2), 0.95 (cap).
    credit = jnp.asarray([0.0, 0.70710677, 0.95, 0.95])
    # exact hit, right prefix + wrong item, right first code only, nothing right
    rewards = jnp.asarray([[1.0, 0.95, 0.70710677, 0.0]])
    matches = jnp.asarray([[3, 2, 1, 0]])
    got = np.asarray(adv_lib.level_returns(rewards, matches, credit))
    np.testing.assert_allclose(got[0], [[1.0, 1.0 - 0.70710677, 0.05],
                                        [0.95, 0.95 - 0.70710677, 0.0],
                                        [0.70710677, 0.0, 0.0],
                                        [0.0, 0.0, 0.0]], atol=1e-6)
    # The exact reward (all partial credits 0): every token gets the whole reward.
    got = np.asarray(adv_lib.level_returns(jnp.asarray([[1.0, 0.0]]), jnp.asarray([[3, 2]]),
                                              jnp.zeros(4)))
    np.testing.assert_allclose(got[0], [[1.0] * 3, [0.0] * 3])


def test_level_advantage_zscores_per_level_and_adds_the_bonus():
    credit = jnp.asarray([0.0, 0.5, 0.8, 0.8])
    rewards = jnp.asarray([[1.0, 0.8, 0.5, 0.0, 0.8]])
    matches = jnp.asarray([[3, 2, 1, 0, 2]])
    hits = jnp.asarray([[True, False, False, False, False]])
    returns = np.array([[1.0, 0.5, 0.2], [0.8, 0.3, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.8, 0.3, 0.0]])
    want = (returns - returns.mean(0)) / (returns.std(0, ddof=1) + adv_lib.EPS)
    got = np.asarray(adv_lib.level_advantage(rewards, matches, hits, credit, k=2, use_bonus=False))
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    # The wrong items under a right prefix (rows 1 and 4) are pushed DOWN at the item token,
    # while the sequence-level advantage pushes every token of theirs up.
    assert got[0, 1, 2] < 0 and got[0, 4, 2] < 0
    assert np.asarray(adv_lib.srpo_advantage(rewards, hits, 2, use_bonus=False))[0, 1] > 0
    bonus = np.asarray(adv_lib.pass_at_k_bonus(hits, 2))[0]
    got_b = np.asarray(adv_lib.level_advantage(rewards, matches, hits, credit, k=2, use_bonus=True))
    np.testing.assert_allclose(got_b[0], want + bonus[:, None], rtol=1e-5, atol=1e-6)
    # A level where every return is equal contributes no advantage (here: nobody hits the item).
    flat = np.asarray(adv_lib.level_advantage(jnp.asarray([[0.8, 0.5]]), jnp.asarray([[2, 1]]),
                                                 jnp.zeros((1, 2), bool), credit, use_bonus=True))
    np.testing.assert_allclose(flat[0, :, 2], [0.0, 0.0])


def test_level_credit_needs_direct_mode():
    from gream_jax.config_defaults import base_config, validate_config
    from gream_jax.config_defaults.base import ConfigError
    config = base_config()
    config.rl.credit_assignment = "level"
    config.rl.mode = "reasoning"
    with pytest.raises(ConfigError, match="credit_assignment='level' needs config.rl.mode='direct'"):
        validate_config(config)
    config.rl.credit_assignment = "tokens"
    config.rl.mode = "direct"
    with pytest.raises(ConfigError, match="credit_assignment"):
        validate_config(config)
