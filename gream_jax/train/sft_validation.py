"""Periodic validation during SFT: Direct-mode Recall/NDCG through the trie-constrained beam.

Uses the inference package's decoder core (`gream_jax.infer.beam.constrained_beam_search`) on the
model's KV cache (`prefill` + `decode_step`), with the prompts of `gream_jax.tasks.prompts`, so the
figures are those the eval stage reports for the same parameters (full ranking over every item,
nothing excluded, one target per user: Recall@K = Hit@K, NDCG@K = 1 / log2(rank + 1)).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax.index.trie import build_trie
from gream_jax.infer.beam import constrained_beam_search
from gream_jax.model import api
from gream_jax.tasks.prompts import direct_prompt_ids


def sid_token_table(tokenizer, semantic_ids) -> np.ndarray:
    """[levels, max_codes] token id per (level, code), -1 where the level has no such code."""
    sizes = tuple(int(k) for k in semantic_ids.level_sizes)
    table = np.full((len(sizes), max(sizes)), -1, np.int32)
    for level, k in enumerate(sizes):
        for code in range(k):
            tid = tokenizer.token_to_id(semantic_ids.token(level, code))
            table[level, code] = -1 if tid is None else int(tid)
    return table


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


class DirectValidator:
    """Top-K items for every user of a split, jitted once per (batch, prompt length)."""

    def __init__(self, model_cfg, tokenizer, semantic_ids, config, mesh):
        self.model_cfg, self.tokenizer, self.sids, self.config = model_cfg, tokenizer, semantic_ids, config
        self.mesh = mesh
        self.trie = build_trie(semantic_ids).to_device(sid_token_table(tokenizer, semantic_ids))
        self.beam, self.topk = int(config.train.eval_beam), int(config.train.eval_topk)
        self.batch = int(config.train.eval_batch)
        self.pad = int(tokenizer.pad_id)
        self._fn = jax.jit(functools.partial(self._search, model_cfg=model_cfg, beam=self.beam, topk=self.topk),
                           static_argnames=("max_len",))

    @staticmethod
    def _search(params, tokens, mask, trie, *, model_cfg, beam, topk, max_len):
        cache = api.init_cache(model_cfg, tokens.shape[0], max_len)
        logits, cache = api.prefill(params, model_cfg, tokens, mask, cache)
        step = lambda p, t, c: api.decode_step(p, model_cfg, t, c)
        return constrained_beam_search(step, api.reorder_cache, params, logits, cache, trie, beam, topk).items

    def prompts(self, split, which: str, users: np.ndarray) -> list[list[int]]:
        return [direct_prompt_ids(self.tokenizer, self.sids, split.history(which, int(u)), self.config)
                for u in users]

    def recommend(self, params, prompts: list[list[int]]) -> np.ndarray:
        """[n_users, topk] item ids; prompts left-padded to one length so one compile serves all."""
        width = max(len(p) for p in prompts)
        max_len = width + self.trie.max_depth + 1
        out = []
        for start in range(0, len(prompts), self.batch):
            chunk = prompts[start:start + self.batch]
            n = len(chunk)
            rows = self.batch if len(prompts) > self.batch else n
            tokens = np.full((rows, width), self.pad, np.int32)
            mask = np.zeros((rows, width), np.int32)
            for r, p in enumerate(chunk):
                tokens[r, width - len(p):] = p
                mask[r, width - len(p):] = 1
            if n < rows:  # pad the last chunk with copies of its first row (results dropped)
                tokens[n:], mask[n:] = tokens[0], mask[0]
            with jax.set_mesh(self.mesh):
                items = self._fn(params, jnp.asarray(tokens), jnp.asarray(mask), self.trie, max_len=max_len)
            out.append(np.asarray(items)[:n])
        return np.concatenate(out, 0)

    def evaluate(self, params, split, which: str, users: np.ndarray | None = None) -> dict[str, float]:
        users = np.arange(split.n_users) if users is None else np.asarray(users)
        ranked = self.recommend(params, self.prompts(split, which, users))
        return rank_metrics(ranked, np.asarray(split.targets(which))[users])
