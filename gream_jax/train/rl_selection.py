"""Which RL step the rl stage exports: the validation rule, as pure functions over per-user ranks.

The rl stage validates the SFT model (step 0) and then every `config.rl.eval_every` steps on the
same users, and exports the best. Two guards decide whether a step replaces the best so far:
  * `select_min_gain`: its figure must beat the best by more than this margin;
  * `select_min_z`: its paired gain over the SFT model, on the same users, must be at least this
    many standard errors (`paired_gain`). Why: the rl stage picks the best of ~15 validations of
    one set of users, so a step can beat the SFT model by chance; a paired z of 2 makes such a pick
    unlikely (less so than for one look: the ~15 looks are correlated, not independent). On ML-100k
    every margin-free pick, each under 1 s.e., lost on test (docs/results.md, "Session 21").

Ranks are 0-based target ranks per user, -1 when the target is not in the list (`eval.metrics`).
"""

from __future__ import annotations

import math

import numpy as np

from gream_jax.eval.metrics import gains_at_k


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """`recall@K` / `ndcg@K` of each user from its target rank. ranks [users] -> [users] float64."""
    name, _, k = metric.partition("@")
    if name not in ("recall", "ndcg") or not k.isdigit():
        raise ValueError(f"metric {metric!r}: expected recall@K or ndcg@K")
    hit, ndcg = gains_at_k(np.asarray(ranks), int(k))
    return hit if name == "recall" else ndcg


def paired_gain(ranks: np.ndarray, base_ranks: np.ndarray, metric: str) -> tuple[float, float, float]:
    """(mean gain, its standard error, z = gain / s.e.) of `ranks` over `base_ranks` for the same
    users [users]. z is 0 for no difference and +-inf for a constant non-zero one (s.e. 0)."""
    ranks, base_ranks = np.asarray(ranks), np.asarray(base_ranks)
    if ranks.shape != base_ranks.shape or ranks.ndim != 1 or not ranks.size:
        raise ValueError(f"paired_gain: need two equal, non-empty [users] rank arrays, got {ranks.shape} "
                         f"and {base_ranks.shape} (were both validations on the same users?)")
    d = per_user_metric(ranks, metric) - per_user_metric(base_ranks, metric)
    gain = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    if se > 0:
        return gain, se, gain / se
    return gain, 0.0, (0.0 if gain == 0 else math.copysign(math.inf, gain))


def improves(value: float, best: float | None, min_gain: float = 0.0, z: float | None = None,
             min_z: float = 0.0) -> bool:
    """Whether a validation figure replaces the best so far. The first validation (the SFT model,
    `best` None) always sets the bar; a later one must beat `best` by more than `min_gain` and, when
    `min_z` > 0, have a paired z over the SFT model (`paired_gain`) of at least `min_z`."""
    if best is None:
        return True
    if not value > best + min_gain:
        return False
    if min_z > 0:
        if z is None:
            raise ValueError("improves: min_z > 0 needs the paired z over the SFT model")
        return z >= min_z
    return True


def replay_selection(steps, values, zs, min_gain: float = 0.0, min_z: float = 0.0) -> int:
    """The step the rl stage would export from a run's validations in order (step 0 first): what
    `eval.rl_trace` uses to show what each rule would have shipped."""
    best, best_step = None, None
    for step, value, z in zip(steps, values, zs):
        if improves(value, best, min_gain, z, min_z):
            best, best_step = value, step
    if best_step is None:
        raise ValueError("replay_selection: no validations")
    return int(best_step)
