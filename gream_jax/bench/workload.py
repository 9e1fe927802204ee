"""Deterministic inputs shared by both frameworks: tokens, prompts, and a random SID catalogue.

Pure numpy, seeded, so the JAX and PyTorch workers (separate processes) build identical
inputs. Token ids 0, 1, 2 are reserved (bos, eos, pad) and never sampled. The SID catalogue
gives `n_items` distinct random code tuples over `sid_levels`, written with the LAST
sum(sid_levels) ids of the vocabulary (level l, code c -> one token), the way GREAM appends
SID tokens to a backbone's vocabulary.
"""

from __future__ import annotations

import math

import numpy as np

FIRST_ORDINARY_TOKEN = 3


def train_tokens(preset, seed: int) -> np.ndarray:
    """[batch, seq] int64 token ids for the train step (targets = the same tokens shifted)."""
    rng = np.random.default_rng(seed)
    return rng.integers(FIRST_ORDINARY_TOKEN, preset.shape.vocab_size,
                        size=(preset.batch, preset.seq), dtype=np.int64)


def prompt_tokens(batch: int, length: int, high: int, seed: int) -> np.ndarray:
    """[batch, length] int64 prompt ids in [FIRST_ORDINARY_TOKEN, high)."""
    if high <= FIRST_ORDINARY_TOKEN:
        raise ValueError(f"vocabulary too small for prompts: high={high}")
    rng = np.random.default_rng(seed)
    return rng.integers(FIRST_ORDINARY_TOKEN, high, size=(batch, length), dtype=np.int64)


def sid_token_table(preset) -> np.ndarray:
    """[levels, max_codes] int32 token id of (level, code); -1 where a level has fewer codes."""
    levels = preset.sid_levels
    total = sum(levels)
    if total + FIRST_ORDINARY_TOKEN + 1 > preset.shape.vocab_size:
        raise ValueError(f"sid_levels={levels} need {total} tokens; vocabulary is {preset.shape.vocab_size}")
    table = np.full((len(levels), max(levels)), -1, np.int32)
    start = preset.shape.vocab_size - total
    for level, size in enumerate(levels):
        table[level, :size] = start + np.arange(size)
        start += size
    return table


def sid_codes(preset, seed: int) -> np.ndarray:
    """[n_items, levels] int32 distinct random code tuples (every item has every level)."""
    capacity = math.prod(preset.sid_levels)
    if preset.n_items > capacity:
        raise ValueError(f"n_items={preset.n_items} exceeds the {capacity} codes of {preset.sid_levels}")
    rng = np.random.default_rng(seed)
    flat = rng.choice(capacity, size=preset.n_items, replace=False)
    codes = np.stack(np.unravel_index(flat, preset.sid_levels), axis=1)
    return codes.astype(np.int32)


def prefix_allowed_table(codes: np.ndarray, token_table: np.ndarray) -> dict[tuple, list[int]]:
    """Trie as a dict: prefix of SID token ids -> sorted list of allowed next token ids."""
    children: dict[tuple, set[int]] = {}
    for row in codes:
        tokens = [int(token_table[level, c]) for level, c in enumerate(row)]
        for depth in range(len(tokens)):
            children.setdefault(tuple(tokens[:depth]), set()).add(tokens[depth])
    return {prefix: sorted(nxt) for prefix, nxt in children.items()}


def tokens_to_items(tokens: np.ndarray, codes: np.ndarray, token_table: np.ndarray) -> np.ndarray:
    """[..., levels] SID token ids -> [...] item index, -1 where the tokens name no item."""
    lookup = {tuple(int(token_table[level, c]) for level, c in enumerate(row)): i
              for i, row in enumerate(codes)}
    flat = tokens.reshape(-1, tokens.shape[-1])
    items = np.array([lookup.get(tuple(int(t) for t in row), -1) for row in flat], np.int64)
    return items.reshape(tokens.shape[:-1])
