"""Direct-mode SRPO rollouts drawn the way Direct mode recommends: each prompt's G best items.

`config.rl.rollout="beam"` (the default `"sample"` draws G SIDs through the trie at a temperature,
`srpo_rollouts.RolloutRunner`). Why a beam: what Direct mode is scored on is the order of its top
K, and what pushes a target out of the top K is the handful of wrong items ranked above it. Sampled
rollouts of the SFT model spread over many items, repeat the popular ones, and at T = 1 put the
target in a group of 10 about 1% of the time on ML-100k (docs/results.md); the G items the eval's
own decoder ranks first are distinct, and they are exactly the hard negatives that occupy the top
of the list. The recommender RL literature (ReRe, MiniOneRec, 2025) uses the same constrained
beam as the rollout and adds a rank-aware penalty on the negatives, as `rewards.rank_penalised`
does here (`config.rl.rank_penalty`).

The group is `decoder.direct_search` with beam `config.rl.beam_size` (>= G), re-ranked by the
next-item head at `config.eval.item_head_weight` when the eval uses it, and cut to its first G
items; the response of each is its SID's tokens (`semantic_ids` -> vocabulary ids). Deterministic:
no random key is used. The policy-gradient update is unchanged (a beam item's tokens are scored by
the same `srpo.response_logprobs`); the importance ratio is taken against the policy that ran the
beam, as for sampled rollouts.
"""

from __future__ import annotations

import jax
import numpy as np

from gream_jax.index.trie import DeviceTrie


def item_response_tokens(sid_token_table: np.ndarray, codes: np.ndarray, lengths: np.ndarray,
                         pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Every item's SID as vocabulary ids: (tokens [n_items, L] int32, pad after the SID's length;
    mask [n_items, L] int32). sid_token_table [L, codes] (level, code) -> token id."""
    codes = np.asarray(codes)
    n, big_l = codes.shape
    level = np.broadcast_to(np.arange(big_l), (n, big_l))
    mask = (level < np.asarray(lengths)[:, None]) & (codes >= 0)
    ids = np.asarray(sid_token_table)[level, np.maximum(codes, 0)]
    if np.any(mask & (ids < 0)):
        bad = int(np.argwhere(mask & (ids < 0))[0, 0])
        raise ValueError(f"item {bad}: a SID code has no vocabulary token (the tokenizer does not match the SIDs)")
    return np.where(mask, ids, pad_id).astype(np.int32), mask.astype(np.int32)


class BeamRolloutRunner:
    """`RolloutRunner`'s interface (`chunk`, `credit_table`, `run`) over beam-search groups."""

    def __init__(self, model_cfg, trie: DeviceTrie, sid_token_table: np.ndarray, semantic_ids, mesh, rules,
                 group_size: int, beam_size: int, chunk_prompts: int, reward_fn, credit_table: np.ndarray,
                 pad_id: int, item_tokens=None, head_weight: float = 0.0, width_bucket: int = 32):
        import jax.numpy as jnp

        from gream_jax import mesh as mesh_lib
        if beam_size < group_size:
            raise ValueError(f"config.rl.beam_size={beam_size} must be >= config.rl.group_size={group_size}: "
                             "the group is the beam's best G items")
        if head_weight > 0 and item_tokens is None:
            raise ValueError("a next-item head weight > 0 needs the item tokens (recommender.item_head_tokens)")
        self.model_cfg, self.trie, self.mesh, self.g = model_cfg, trie, mesh, int(group_size)
        self.beam_size, self.head_weight = int(beam_size), float(head_weight)
        self.item_tokens = item_tokens
        self.codes = np.asarray(semantic_ids.codes)
        self.tokens, self.mask = item_response_tokens(sid_token_table, self.codes, semantic_ids.lengths, pad_id)
        self.pad_id = int(pad_id)
        dp = mesh_lib.data_parallel_size(mesh, rules)
        self.chunk = int(-(-max(int(chunk_prompts), 1) // dp) * dp)     # prompts per decode, dp divides it
        self.row_sharding = mesh_lib.batch_sharding(mesh, 2, rules)
        self.bucket = int(width_bucket)
        self.credit_table = jnp.asarray(credit_table)
        self._reward = jax.jit(reward_fn)

    def top_items(self, params, prompts: list[list[int]]) -> np.ndarray:
        """The G best items of each prompt in the eval's order: `[n, G]` int (-1: fewer than G exist)."""
        from gream_jax.infer import decoder
        from gream_jax.infer.batching import prompt_width
        from gream_jax.train.srpo_rollouts import padded_chunks
        n = len(prompts)
        width = prompt_width(prompts, self.bucket)
        cache_len = decoder.direct_cache_len(width, self.trie)
        out = []
        for tokens, mask in padded_chunks(prompts, self.chunk, width, self.pad_id, self.row_sharding):
            with jax.set_mesh(self.mesh):
                res = decoder.direct_search(params, tokens, mask, self.trie, self.item_tokens,
                                            model_cfg=self.model_cfg, beam_size=self.beam_size, top_k=self.g,
                                            cache_len=cache_len, item_head_weight=self.head_weight)
            out.append(np.asarray(res.items))
        return np.concatenate(out, 0)[:n]

    def run(self, params, prompts: list[list[int]], target_codes: np.ndarray, rng=None) -> dict:
        """prompts: n token lists; target_codes [n, L]. Same outputs as `RolloutRunner.run`."""
        del rng                                        # the beam is deterministic
        from gream_jax.train.srpo_rollouts import scored_groups
        items = self.top_items(params, prompts)                                   # [n, G]
        well = items >= 0
        safe = np.maximum(items, 0)
        codes = np.where(well[..., None], self.codes[safe], -1).astype(np.int32)     # [n, G, L]
        resp = np.where(well[..., None], self.tokens[safe], self.pad_id).astype(np.int32)
        rmask = np.where(well[..., None], self.mask[safe], 0).astype(np.int32)
        return scored_groups(self._reward, self.credit_table, prompts, resp, rmask, codes, well, target_codes)
