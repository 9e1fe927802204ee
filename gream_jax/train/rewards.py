"""Verifiable rewards for RL post-training, vectorised over `[prompts, G]` rollout groups.

Why vectorised: the reference release scores each completion in a Python loop; here one jittable
call scores the whole batch, so rewards live on device beside the rollouts that produced them.

Inputs shared by every reward:
  pred_codes   [P, G, L] int32  SID codes the model answered, -1 beyond the answer's length
  well_formed  [P, G]    bool   the completion had the required tags and an answer of a valid SID length
  target_codes [P, L]    int32  the target item's SID codes, -1 beyond its length

Residual-sensitive credit (GREAM): an answer earns credit by the number `l` of *leading* codes it
shares with the target (the RQ-KMeans levels are coarse-to-fine, so a longer matching prefix means
a semantically closer item). GREAM's 4-level table is 1 -> 0.5, 2 -> 0.707, 3 -> 0.866,
4 -> 0.95, exact item -> 1.0, i.e. `sqrt(l / 4)` capped at 0.95. We generalise it as
`credit(l) = min(sqrt(l / n_levels), cap)` for a non-exact answer and 1.0 for the exact item, where
`n_levels` is the number of quantised (semantic) levels, not counting a collision rank suffix:
  * 4 levels + rank suffix (GREAM): 0.5, 0.707, 0.866, 0.95 (4 codes, wrong suffix), exact 1.0.
  * 3 levels + rank suffix: 0.577, 0.816, 0.95, exact 1.0.
  * levels ending in an item-unique token (n_levels counts it): all codes matched is the exact
    item (1.0); a shorter prefix earns sqrt(l / n_levels), e.g. 2 + item token: 0.577, 0.816, 1.0.
An explicit table (`credit_table(..., credits=(...))`) overrides the formula.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_CAP = 0.95


def credit_table(max_len: int, n_levels: int, cap: float = DEFAULT_CAP,
                 credits: Sequence[float] | None = None) -> np.ndarray:
    """Credit for `l` leading codes matched by a non-exact answer, `l = 0..max_len`: `[max_len + 1]`.

    `credits` (optional) gives the values for l = 1, 2, ...; lengths past its end reuse its last value.
    """
    if max_len < 1 or n_levels < 1:
        raise ValueError(f"credit_table: max_len={max_len} and n_levels={n_levels} must be >= 1")
    table = np.zeros(max_len + 1, np.float32)
    for l in range(1, max_len + 1):
        if credits:
            table[l] = float(credits[min(l, len(credits)) - 1])
        else:
            table[l] = min(math.sqrt(min(l, n_levels) / n_levels), cap)
    if np.any(table < 0) or np.any(table > 1):
        raise ValueError(f"credit_table: credits must lie in [0, 1], got {table.tolist()}")
    return table


def leading_matches(pred_codes: jax.Array, target_codes: jax.Array) -> jax.Array:
    """Number of leading positions where the answer equals the target: `[P, G]` int32.

    Positions where the target has no code (-1) never count as a match.
    """
    target = target_codes[:, None, :]
    same = (pred_codes == target) & (target >= 0)
    return jnp.sum(jnp.cumprod(same.astype(jnp.int32), axis=-1), axis=-1)


def exact_hits(pred_codes: jax.Array, well_formed: jax.Array, target_codes: jax.Array) -> jax.Array:
    """The answer names exactly the target item (same codes, same length): `[P, G]` bool."""
    return well_formed & jnp.all(pred_codes == target_codes[:, None, :], axis=-1)


def residual_reward(pred_codes, well_formed, target_codes, table) -> jax.Array:
    """GREAM's residual-sensitive reward: `[P, G]` float32 in [0, 1] (see module docstring)."""
    table = jnp.asarray(table, jnp.float32)
    matched = jnp.minimum(leading_matches(pred_codes, target_codes), table.shape[0] - 1)
    partial = table[matched]
    exact = exact_hits(pred_codes, well_formed, target_codes)
    return jnp.where(exact, 1.0, jnp.where(well_formed, partial, 0.0)).astype(jnp.float32)


def exact_reward(pred_codes, well_formed, target_codes, table=None) -> jax.Array:
    """Binary verifiable reward (the plain GRPO / no-residual ablation): 1 for the exact item."""
    del table
    return exact_hits(pred_codes, well_formed, target_codes).astype(jnp.float32)


def repeats_history(pred_codes: jax.Array, history_codes: jax.Array) -> jax.Array:
    """The answer names an item of the prompt's own history: `[P, G]` bool.

    history_codes `[P, H, L]`: SID codes of each prompt's history items (-1 beyond a SID's length;
    a padding row of all -1 never matches a well-formed answer). Why: in leave-one-out data where
    users never return to an item (MovieLens, Amazon 5-core) such an answer is always wrong, yet
    the residual reward still pays it partial credit for sharing the target's prefix, and the SFT
    model spends a quarter of its top 10 on them (docs/results.md)."""
    same = jnp.all(pred_codes[:, :, None, :] == history_codes[:, None, :, :], axis=-1)      # [P, G, H]
    return jnp.any(same & jnp.any(history_codes >= 0, axis=-1)[:, None, :], axis=-1)


def penalise_repeats(rewards: jax.Array, is_repeat: jax.Array, value: float) -> jax.Array:
    """`rewards` with every history-repeating answer's reward replaced by `value`: `[P, G]`."""
    return jnp.where(is_repeat, jnp.float32(value), rewards).astype(jnp.float32)


def rank_penalised(rewards: jax.Array, hits: jax.Array, weight: float) -> jax.Array:
    """Beam-ordered groups (`config.rl.rollout="beam"`, answer g is the list's item at rank g):
    every answer that is not the exact item loses `weight / log2(g + 2)`, the share of NDCG its
    slot would give the target: `[P, G]` float32.

    Why: a binary or prefix reward treats a wrong item at rank 1 like one at rank 10, but the
    first pushes the target further down the list the eval scores. The discount ranks the
    negatives by how much they cost (ReRe / MiniOneRec's ranking reward, with NDCG's discount).
    """
    g = rewards.shape[-1]
    discount = 1.0 / jnp.log2(jnp.arange(g, dtype=jnp.float32) + 2.0)                  # [G]
    return jnp.where(hits, rewards, rewards - weight * discount).astype(jnp.float32)


def window_reward(reward_fn: Callable, pred_codes, well_formed, window_codes, window_weights,
                  table) -> tuple[jax.Array, jax.Array]:
    """Reward against a window of the user's next items (`config.rl.future_window`): `[P, G]`
    rewards and `[P, G]` exact hits.

    window_codes   [P, W, L] int32  SID codes of the target (w = 0) and the next W - 1 items of the
                                    user's training sequence (-1 rows past its end)
    window_weights [P, W]    float  discount of each window slot (gamma ** w; 0 for a padding row)

    An answer earns the best discounted reward over the window, `max_w weight_w * reward(item_w)`,
    and is a hit when it is exactly one of the window's items. Why: in MovieLens a user rates a
    session's films in no meaningful order (many share a timestamp), so which of them comes next is
    mostly chance, and a reward that pays only that one item calls a film the user rates two steps
    later a miss. Caser trains on the next three items for the same reason. Every window item is
    from the training part, so no validation or test target becomes a reward. W = 1 with weight 1
    is the plain reward.
    """
    def one(codes_w):                                            # [P, L] -> [P, G]
        return reward_fn(pred_codes, well_formed, codes_w, table), exact_hits(pred_codes, well_formed, codes_w)
    per_slot, hit_slot = jax.vmap(one, in_axes=1, out_axes=0)(window_codes)        # [W, P, G]
    weights = jnp.asarray(window_weights, jnp.float32).T[:, :, None]                # [W, P, 1]
    rewards = jnp.max(per_slot * weights, axis=0)
    hits = jnp.any(hit_slot & (weights > 0), axis=0)
    return rewards.astype(jnp.float32), hits


REWARDS: dict[str, Callable] = {"residual": residual_reward, "exact": exact_reward}


def get_reward(name: str) -> Callable:
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r}; known: {sorted(REWARDS)}")
    return REWARDS[name]
