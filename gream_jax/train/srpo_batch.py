"""Host side of SRPO rollouts: the prompt pool, dynamic sampling, and the update batch.

Prompts come from the TRAINING part of each user's sequence only (target = item i of `train[u]`,
history = the up to `max_history` items before it, i >= 1), so the validation and test targets
never become rewards. The pool is a seeded permutation walked in order (epochs reshuffle); its
cursor is saved in checkpoints so a resumed run draws the same prompts.

Dynamic sampling (GREAM / DAPO): a group whose rewards are all equal has zero advantage and
teaches nothing, so it is dropped and further prompts are drawn (at most `max_resample_rounds`
extra rounds) until the batch holds `batch_prompts` groups. If the rounds run out, the batch is
completed with weight-0 copies of kept groups so every update keeps one static shape.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from gream_jax.infer.batching import left_pad, prompt_width


class PromptPool:
    """(user, position) pairs of the training parts, drawn in a seeded, reshuffled-per-epoch order."""

    def __init__(self, train_sequences, seed: int, last_positions: int = 0):
        """last_positions > 0 (`config.rl.prompt_positions`): only each user's last that many
        training targets (the transitions closest in time to the held-out ones); 0 = all."""
        first = lambda n: 1 if last_positions <= 0 else max(1, n - int(last_positions))   # noqa: E731
        pairs = [(u, i) for u, seq in enumerate(train_sequences) for i in range(first(len(seq)), len(seq))]
        if not pairs:
            raise ValueError("SRPO prompt pool is empty: no user has two or more training items")
        self.pairs = np.asarray(pairs, np.int64)            # [n, 2]
        self.seed = int(seed)
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0x5390, epoch]).permutation(len(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def draw(self, n: int) -> np.ndarray:
        """Next `n` (user, position) pairs `[n, 2]`."""
        out = []
        while n > 0:
            take = min(n, len(self._order) - self.cursor)
            out.append(self.pairs[self._order[self.cursor:self.cursor + take]])
            self.cursor += take
            n -= take
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
        return np.concatenate(out, 0)

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def set_state(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)


def history_and_target(train_sequences, pair, max_history: int) -> tuple[np.ndarray, int]:
    u, i = int(pair[0]), int(pair[1])
    seq = train_sequences[u]
    return np.asarray(seq[max(0, i - max_history):i]), int(seq[i])


def future_window(train_sequences, pair, window: int, discount: float) -> tuple[np.ndarray, np.ndarray]:
    """The target and the next `window - 1` items of the user's training part, `[window]` item ids
    (-1 past its end), and their reward weights `[window]` (discount ** w, 0 for a padding slot).
    Only training items: the validation and test targets follow the training part."""
    u, i = int(pair[0]), int(pair[1])
    items = np.asarray(train_sequences[u][i:i + window], np.int64)
    ids = np.full(window, -1, np.int64)
    ids[:len(items)] = items
    weights = np.where(ids >= 0, float(discount) ** np.arange(window), 0.0).astype(np.float32)
    return ids, weights


def collect_groups(draw: Callable[[int], dict], batch_prompts: int, dynamic: bool,
                   max_rounds: int, oversample: float) -> tuple[dict, dict]:
    """Runs rollout rounds until `batch_prompts` informative groups are kept.

    draw(n) -> dict of arrays with leading axis >= n (prompts), including `rewards [n', G]`.
    Returns (batch dict with leading axis batch_prompts plus `group_weight [P]`, stats).
    """
    kept: list[dict] = []
    n_kept = drawn = dropped = rounds = 0
    while n_kept < batch_prompts and rounds <= max_rounds:
        need = batch_prompts - n_kept
        n = need if rounds == 0 else max(need, int(math.ceil(need * oversample)))
        groups = draw(n)                          # may return more than n (a whole decode chunk)
        rewards = np.asarray(groups["rewards"])
        informative = ~np.all(rewards == rewards[:, :1], axis=1)
        drawn += len(rewards)
        dropped += int((~informative).sum())
        if dynamic:
            groups = {k: np.asarray(v)[informative] for k, v in groups.items()}
        take = min(len(groups["rewards"]), need)
        if take:
            kept.append({k: np.asarray(v)[:take] for k, v in groups.items()})
            n_kept += take
        rounds += 1
        if not dynamic:
            break
    stats = {"rounds": rounds, "prompts_drawn": drawn, "zero_variance_dropped": dropped,
             "zero_variance_share": dropped / max(drawn, 1), "groups_kept": n_kept}
    if n_kept == 0:
        return {}, stats
    batch = {k: np.concatenate([g[k] for g in kept], 0) for k in kept[0]}
    weight = np.ones(n_kept, np.float32)
    if n_kept < batch_prompts:                    # static shape: weight-0 copies fill the batch
        fill = np.arange(batch_prompts - n_kept) % n_kept
        batch = {k: np.concatenate([v, v[fill]], 0) for k, v in batch.items()}
        weight = np.concatenate([weight, np.zeros(len(fill), np.float32)])
    batch["group_weight"] = weight
    return batch, stats


def update_batches(batch: dict, advantages: np.ndarray, mini_batch_prompts: int, micro_sequences: int,
                   rng: np.random.Generator, pad_id: int, width_bucket: int = 32) -> list[dict]:
    """Splits a kept batch into shuffled mini-batches shaped `[n_micro, micro, ...]` for the update.

    batch: prompt_ids [P] (token lists), response_tokens/response_mask [P, G, R], group_weight [P];
    advantages [P, G] (one per sequence) or [P, G, R] (one per response token). Sequences =
    prompt (LEFT-padded to the batch's longest, rounded up to `width_bucket`) ++ response.
    """
    p, g, r = batch["response_tokens"].shape
    all_prompt, all_pmask = _padded_prompts(batch, pad_id, width_bucket)
    order = rng.permutation(p)
    out = []
    for start in range(0, p, mini_batch_prompts):
        idx = order[start:start + mini_batch_prompts]
        prompt = np.repeat(all_prompt[idx], g, axis=0)                        # [m*G, Lp]
        pmask = np.repeat(all_pmask[idx], g, axis=0)
        resp = batch["response_tokens"][idx].reshape(-1, r)
        rmask = batch["response_mask"][idx].reshape(-1, r)
        weight = np.repeat(batch["group_weight"][idx], g)
        n = len(resp)
        if n % micro_sequences:
            raise ValueError(f"mini-batch of {n} sequences is not a multiple of the micro-batch "
                             f"{micro_sequences} (config.rl.mini_batch_prompts x group_size)")
        shape = lambda x: x.reshape((n // micro_sequences, micro_sequences) + x.shape[1:])
        out.append({
            "tokens": shape(np.concatenate([prompt, resp], 1).astype(np.int32)),
            "attention_mask": shape(np.concatenate([pmask, rmask], 1).astype(np.int32)),
            "response_mask": shape((rmask * weight[:, None]).astype(np.float32)),
            "advantages": shape(advantages[idx].reshape((-1,) + advantages.shape[2:]).astype(np.float32)),
            "index": idx})
    return out


def _padded_prompts(batch: dict, pad_id: int, width_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch's prompts LEFT-padded to its longest, rounded up to `width_bucket`: `[P, W]` x2."""
    prompts = list(batch["prompt_ids"])
    return left_pad(prompts, prompt_width(prompts, width_bucket), len(prompts), pad_id)


def shared_prefix_batches(batch: dict, advantages: np.ndarray, mini_batch_prompts: int, micro_groups: int,
                          rng: np.random.Generator, pad_id: int, width_bucket: int = 32) -> list[dict]:
    """`update_batches` with ONE row per group, `prompt ++ response_1 ++ ... ++ response_G`, the
    layout of `srpo.shared_prefix_logprobs`: the prompt is stored (and run) once, not G times.

    Shapes `[n_micro, micro_groups, ...]`: tokens / attention_mask `W + G R`, response_mask and
    advantages `G R` (a sequence advantage is repeated over its response's tokens). A mini-batch
    that does not fill its last micro-batch is completed with copies of its first group whose
    response_mask is 0: they add no loss and count no tokens. Mini-batches are drawn with the same
    `rng` calls as `update_batches`, so both layouts hold the same groups in the same order.
    """
    p, g, r = batch["response_tokens"].shape
    all_prompt, all_pmask = _padded_prompts(batch, pad_id, width_bucket)
    per_token = advantages if advantages.ndim == 3 else np.repeat(advantages[..., None], r, axis=2)
    order = rng.permutation(p)
    out = []
    for start in range(0, p, mini_batch_prompts):
        idx = order[start:start + mini_batch_prompts]
        n_micro = -(-len(idx) // micro_groups)
        rows = np.concatenate([idx, np.full(n_micro * micro_groups - len(idx), idx[0])])
        live = (np.arange(len(rows)) < len(idx)).astype(np.float32)               # 0: a filler copy
        weight = batch["group_weight"][rows] * live                               # [m]
        resp = batch["response_tokens"][rows].reshape(len(rows), g * r)
        rmask = batch["response_mask"][rows].reshape(len(rows), g * r)
        shape = lambda x: x.reshape((n_micro, micro_groups) + x.shape[1:])
        out.append({
            "tokens": shape(np.concatenate([all_prompt[rows], resp], 1).astype(np.int32)),
            "attention_mask": shape(np.concatenate([all_pmask[rows], rmask], 1).astype(np.int32)),
            "response_mask": shape((rmask * weight[:, None]).astype(np.float32)),
            "advantages": shape(per_token[rows].reshape(len(rows), g * r).astype(np.float32)),
            "index": idx})
    return out
