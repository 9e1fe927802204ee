"""Turning task text and SIDs into token ids, shared by training and inference.

SID tokens are looked up directly (`token_to_id`), never left to the text tokenizer, so an SID is
always exactly its level tokens whatever the tokenizer's pre-tokenisation does with `<a_12>`.
"""

from __future__ import annotations

import re

import numpy as np

_SID_TOKEN = re.compile(r"(<\|?[a-z]_\d+\|?>)")


class SidTokenMismatch(ValueError):
    """The SID artifact names tokens the tokenizer does not have (built for another index)."""


def token_id_or_none(tokenizer, token: str):
    """Token id or None (tokenizers differ: some return None or -1, some raise)."""
    try:
        tid = tokenizer.token_to_id(token)
    except (KeyError, ValueError):
        return None
    return None if tid is None or tid < 0 else int(tid)


def bos_id(tokenizer) -> int:
    """Start-of-sequence id for dense windows and Direct prompts: the tokenizer's BOS, else EOS."""
    bos = getattr(tokenizer, "bos_id", None)
    return int(bos) if bos is not None and bos >= 0 else int(tokenizer.eos_id)


_TABLE_CACHE: dict = {}


def item_token_ids(tokenizer, semantic_ids) -> np.ndarray:
    """[n_items, max_len] int32 token ids of each item's SID, -1 beyond its length.

    Raises SidTokenMismatch naming the first missing token and how many are missing.
    """
    key = (id(tokenizer), id(semantic_ids), getattr(tokenizer, "vocab_size", 0))
    hit = _TABLE_CACHE.get(key)
    if hit is not None and hit[0] is tokenizer and hit[1] is semantic_ids:
        return hit[2]
    n_items, max_len = semantic_ids.codes.shape
    table = np.full((n_items, max_len), -1, np.int32)
    cache: dict[str, int | None] = {}
    missing: list[str] = []
    for item in range(n_items):
        for j, tok in enumerate(semantic_ids.item_tokens(item)):
            if tok not in cache:
                cache[tok] = token_id_or_none(tokenizer, tok)
                if cache[tok] is None:
                    missing.append(tok)
            if cache[tok] is not None:
                table[item, j] = cache[tok]
    if missing:
        raise SidTokenMismatch(
            f"SID artifact does not match the tokenizer: {len(missing)} SID tokens are not in its "
            f"vocabulary (first: {missing[0]!r}); rebuild the model/tokenizer from this index "
            f"(WORKDIR/index) or point at the matching index")
    if len(_TABLE_CACHE) > 8:
        _TABLE_CACHE.clear()
    _TABLE_CACHE[key] = (tokenizer, semantic_ids, table)
    return table


def sid_ids(table: np.ndarray, item: int) -> list[int]:
    row = table[item]
    return [int(t) for t in row if t >= 0]


def history_ids(table: np.ndarray, history) -> list[int]:
    """Consecutive SID tokens of `history` (padding -1 entries skipped)."""
    out: list[int] = []
    for item in history:
        if item >= 0:
            out.extend(sid_ids(table, int(item)))
    return out


def encode_text(tokenizer, text: str) -> list[int]:
    """Encodes text in which SID tokens (`<a_12>` or `<|a_12|>`) are written inline."""
    out: list[int] = []
    for piece in _SID_TOKEN.split(text):
        if not piece:
            continue
        if _SID_TOKEN.fullmatch(piece):
            tid = token_id_or_none(tokenizer, piece)
            if tid is not None:
                out.append(tid)
                continue
        out.extend(int(t) for t in tokenizer.encode(piece))
    return out
