"""Periodic validation during SFT and RL: Recall/NDCG through the inference package.

Calls `gream_jax.infer.recommender.recommend_direct` (trie-constrained beam with the beam size and
K of `config.eval`, prompts from `gream_jax.tasks.prompts`), so the figures are exactly those the
eval stage reports for the same parameters: full ranking over every item, nothing excluded, one
target per user (Recall@K = Hit@K, NDCG@K = 1 / log2(rank + 1)).
"""

from __future__ import annotations

import numpy as np

from gream_jax.eval.metrics import target_rank
from gream_jax.index.trie import build_trie


def rank_metrics(ranked: np.ndarray, targets: np.ndarray, ks=(5, 10)) -> dict[str, float]:
    """ranked [n, K] item ids best first, targets [n] -> recall@k / ndcg@k averaged over users."""
    hit = ranked == targets[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), ranked.shape[1])
    out = {}
    for k in ks:
        inside = rank < k
        out[f"recall@{k}"] = float(inside.mean())
        out[f"ndcg@{k}"] = float(np.where(inside, 1.0 / np.log2(rank + 2.0), 0.0).mean())
    return out


def seeded_users(config, n_users: int, n: int) -> np.ndarray | None:
    """A fixed, seeded subset of n of the n_users users, sorted (None = all): the users SFT and RL
    validate on when config.train.eval_users / config.rl.eval_users ask for fewer than all."""
    if n <= 0 or n >= n_users:
        return None
    return np.sort(np.random.default_rng([int(config.seed), 0xE7A1]).choice(n_users, n, replace=False))


class DirectValidator:
    """Top-K items for the users of a split with the current parameters."""

    def __init__(self, model_cfg, tokenizer, semantic_ids, config, mesh):
        self.model_cfg, self.tokenizer, self.sids, self.config = model_cfg, tokenizer, semantic_ids, config
        self.mesh = mesh
        self.trie = build_trie(semantic_ids)
        self.ks = tuple(k for k in (5, 10) if k <= int(config.eval.top_k))

    def ranked(self, params, histories):
        """The recommender's result (`Ranked`: items and scores, [n, K]) for these histories."""
        from gream_jax.infer.recommender import recommend_direct
        return recommend_direct(params, self.model_cfg, self.tokenizer, self.sids, self.trie, histories,
                                self.config, self.mesh, name="sft-valid")

    def evaluate(self, params, split, which: str, users: np.ndarray | None = None,
                 per_user_path: str | None = None, data=None) -> dict[str, float]:
        """Recall / NDCG@5,10 of `which`'s targets; with `per_user_path` (and the prepared `data`, for
        raw ids and titles) also the eval stage's per-user rows, so `eval.paired` can compare this
        evaluation with another without running the model again."""
        return self.evaluate_ranks(params, split, which, users, per_user_path, data)[0]

    def evaluate_ranks(self, params, split, which: str, users: np.ndarray | None = None,
                       per_user_path: str | None = None, data=None) -> tuple[dict[str, float], np.ndarray]:
        """`evaluate`'s figures and each user's 0-based target rank ([users], -1 = not in the top K),
        which the rl stage pairs with the SFT model's (`rl_selection.paired_gain`)."""
        users = np.arange(split.n_users) if users is None else np.asarray(users)
        histories = [split.history(which, int(u)) for u in users]
        ranked = self.ranked(params, histories)
        targets = np.asarray(split.targets(which))[users]
        if per_user_path is not None:
            from gream_jax.eval.report import ranked_rows
            from gream_jax.utils.io import write_jsonl
            if data is None:
                raise ValueError(f"{per_user_path}: per-user rows need the prepared data (ids and titles)")
            write_jsonl(per_user_path, ranked_rows(users, histories, targets, ranked, data))
        items = np.asarray(ranked.items)
        return rank_metrics(items, targets, self.ks), target_rank(items, targets)


class ReasoningValidator(DirectValidator):
    """Reasoning-mode top-K (a sampled `<think>` chain, then the constrained beam) for RL's selection
    when the policy is trained in Reasoning mode (`config.rl.select_mode="reasoning"`).

    The chains are sampled with config.eval's temperature, top-p, budget and samples per user, from
    the same key at every validation (`recommend_reasoning` seeds with config.seed), so two steps
    are compared on common random numbers. Noisy on few users: on ML-100k the best of 200 users'
    validations (R@10 .040 -> .085) was worse than the SFT model on all 943 (docs/results.md).
    """

    def ranked(self, params, histories):
        from gream_jax.infer.recommender import recommend_reasoning
        return recommend_reasoning(params, self.model_cfg, self.tokenizer, self.sids, self.trie, histories,
                                   self.config, self.mesh, name="rl-valid-reasoning")


VALIDATORS = {"direct": DirectValidator, "reasoning": ReasoningValidator}
