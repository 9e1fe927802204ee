"""Group-relative advantages over `[prompts, G]` arrays, and the RL objective registry.

GRPO z-score: within each prompt's group of G rollouts, `(r - mean) / (std + eps)` with the
unbiased (ddof = 1) standard deviation, as in GREAM's release.

SRPO bonus-calibrated advantage (GREAM): adds a pass@k bonus for the exact hits. With n = G
rollouts and c exact hits, the unbiased pass@k estimate is rho = 1 - C(n-c, k) / C(n, k); with
sigma = sqrt(rho (1 - rho)):
    hit:  + (1 - rho) / (sigma + eps)
    miss: + (1 - rho - C(n-c-1, k-1) / C(n-1, k-1)) / (sigma + eps)
and the bonus is zero where sigma = 0 (c = 0 or every draw of k contains a hit). The second ratio
is the chance that a draw of k containing one given miss has no hit, so a miss is pushed down
exactly when the group's pass@k depends on it.

n < k: pass@k is undefined with fewer than k samples; we clamp k to n. Then rho is 0 (no hit) or
1 (some hit), sigma = 0 and the bonus vanishes, so the objective degrades to the plain z-score.

Per-token credit (`config.rl.credit_assignment = "level"`, Direct mode; ours, not GREAM's): the
sequence-level advantage credits every token of an answer with the whole reward, so under the
residual reward an answer with the right prefix and the WRONG item pushes up that wrong item
token (on a 2-level + item-token SID, matching the prefix earns 0.95 of the exact hit's 1.0).
`level_advantage` gives SID token l its reward-to-go instead, the reward minus the credit its
first l tokens had already earned (`level_returns`), z-scored over the group per level: the
prefix tokens keep the sequence's signal, the item token is credited only by exact hits.

Target-popularity weights (`config.rl.target_popularity_power`, ours): an expected-reward
gradient on the residual reward moves ranking credit toward prompts whose target the model already
favours, the popular items (docs/results.md, session 22). `popularity_weights` scales each group's
advantages by its target's training count to the power -a, normalised to mean 1 over the batch's
live groups, an inverse-propensity weighting (a = 1) or a partial one (0 < a < 1); a = 0 is GREAM.

Binomial coefficients come from an exact Pascal table built on the host (n is the static group
size), so no log-gamma rounding enters the ratios; C(a, b) = 0 outside 0 <= b <= a.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-6


def group_zscore(rewards: jax.Array, eps: float = EPS) -> jax.Array:
    """GRPO advantage: `[P, G]` -> `[P, G]`; zero for groups of one or of equal rewards."""
    g = rewards.shape[-1]
    mean = jnp.mean(rewards, axis=-1, keepdims=True)
    if g < 2:
        return jnp.zeros_like(rewards)
    std = jnp.sqrt(jnp.sum((rewards - mean) ** 2, axis=-1, keepdims=True) / (g - 1))
    return (rewards - mean) / (std + eps)


def binomial_table(n: int) -> np.ndarray:
    """Exact C(a, b) for 0 <= a, b <= n as float64 `[n + 1, n + 1]` (0 where b > a)."""
    table = np.zeros((n + 1, n + 1), np.float64)
    for a in range(n + 1):
        for b in range(a + 1):
            table[a, b] = math.comb(a, b)
    return table


def _comb(table: jax.Array, a: jax.Array, b: int) -> jax.Array:
    """C(a, b) looked up elementwise; 0 when a < 0, b < 0 or b > a."""
    n = table.shape[0] - 1
    ok = (a >= 0) & (a <= n) & (b >= 0) & (b <= n)
    value = table[jnp.clip(a, 0, n), min(max(b, 0), n)]
    return jnp.where(ok, value, 0.0)


def pass_at_k_bonus(hits: jax.Array, k: int, eps: float = EPS) -> jax.Array:
    """SRPO's pass@k bonus: `hits [P, G]` bool -> `[P, G]` float32 (see module docstring)."""
    n = hits.shape[-1]
    k = min(int(k), n)
    if k < 1:
        raise ValueError(f"pass_at_k_bonus: k={k} must be >= 1")
    table = jnp.asarray(binomial_table(n), jnp.float32)
    c = jnp.sum(hits.astype(jnp.int32), axis=-1, keepdims=True)           # [P, 1]
    rho = 1.0 - _comb(table, n - c, k) / table[n, k]
    sigma = jnp.sqrt(jnp.clip(rho * (1.0 - rho), 0.0, None))
    miss_all = _comb(table, n - c - 1, k - 1) / table[n - 1, k - 1] if n > 1 else jnp.zeros_like(rho)
    hit_bonus = (1.0 - rho) / (sigma + eps)
    miss_bonus = (1.0 - rho - miss_all) / (sigma + eps)
    bonus = jnp.where(hits, hit_bonus, miss_bonus)
    return jnp.where(sigma > 0, bonus, 0.0).astype(jnp.float32)


def srpo_advantage(rewards: jax.Array, hits: jax.Array, k: int = 4, use_bonus: bool = True,
                   eps: float = EPS) -> jax.Array:
    """z-score of the rewards plus (optionally) the pass@k bonus of the exact hits: `[P, G]`."""
    adv = group_zscore(rewards, eps)
    if use_bonus:
        adv = adv + pass_at_k_bonus(hits, k, eps)
    return adv


def level_returns(rewards: jax.Array, matches: jax.Array, credit: jax.Array) -> jax.Array:
    """Reward-to-go of each SID token: `[P, G]` rewards and leading-code matches -> `[P, G, L]`.

    credit `[L + 1]`: the partial credit of l leading codes (0 for l = 0; all zeros for the exact
    reward). Token l (0-based) follows a prefix of l tokens that had earned credit[min(m, l)], so
    it is credited `reward - credit[min(m, l)]`; token 0 gets the whole reward.
    """
    n_levels = credit.shape[0] - 1
    earned = jnp.asarray(credit, jnp.float32)[jnp.minimum(matches[..., None], jnp.arange(n_levels))]
    return rewards[..., None].astype(jnp.float32) - earned


def level_advantage(rewards: jax.Array, matches: jax.Array, hits: jax.Array, credit: jax.Array,
                    k: int = 4, use_bonus: bool = True, eps: float = EPS) -> jax.Array:
    """Per-SID-token advantage `[P, G, L]`: the group z-score of each level's reward-to-go, plus
    (optionally) the pass@k bonus of the exact hits on every token."""
    returns = level_returns(rewards, matches, credit)                          # [P, G, L]
    adv = jnp.moveaxis(group_zscore(jnp.moveaxis(returns, -1, 1), eps), 1, -1)
    if use_bonus:
        adv = adv + pass_at_k_bonus(hits, k, eps)[..., None]
    return adv


def popularity_weights(target_counts: np.ndarray, power: float, live: np.ndarray) -> np.ndarray:
    """Per-group advantage weights `[P]`: target_counts `[P]` (>= 1: a training target occurs in
    training) ** -power, scaled so the `live [P]` groups (weight > 0 in the batch) average 1."""
    counts = np.asarray(target_counts, np.float64)
    if counts.size and counts.min() < 1:
        raise ValueError(f"popularity_weights: target counts must be >= 1 (got min {counts.min()})")
    raw = counts ** -float(power)
    live = np.asarray(live, bool)
    if not live.any():
        return np.ones_like(raw, np.float32)
    return (raw / raw[live].mean()).astype(np.float32)


def zero_variance_groups(rewards: jax.Array) -> jax.Array:
    """`[P]` bool: groups whose rewards are all equal carry no learning signal (dynamic sampling)."""
    return jnp.all(rewards == rewards[..., :1], axis=-1)


@dataclasses.dataclass(frozen=True)
class Objective:
    """An RL objective = which reward scores rollouts and whether the pass@k bonus is added."""
    name: str
    reward: str          # key of gream_jax.train.rewards.REWARDS
    bonus: bool


OBJECTIVES: dict[str, Objective] = {
    "grpo": Objective("grpo", reward="exact", bonus=False),
    "srpo": Objective("srpo", reward="residual", bonus=True),
    "srpo_no_bonus": Objective("srpo_no_bonus", reward="residual", bonus=False),
    "srpo_no_residual": Objective("srpo_no_residual", reward="exact", bonus=True),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f"unknown RL objective {name!r}; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]
