"""Prompt builders shared by training (the examples) and inference (Direct / Reasoning modes).

Training and decoding must see identical prefixes, so both call these functions.
- Direct, `config.tasks.direct_prompt == "dense"` (from-scratch models): BOS + the history's SIDs
  back to back, exactly the prefix of a dense seqrec window; the next SID follows directly.
- Direct, `"chat"` (pretrained backbones): the first seqrec chat template, then the assistant turn;
  the SID follows directly.
- Reasoning: a reasoning chat template; the model writes `<think>…</think>`, the denoised
  history, `<answer>`, the SID, `</answer>`.
"""

from __future__ import annotations

import numpy as np

from gream_jax.tasks import templates
from gream_jax.tasks.example import chat_prompt
from gream_jax.tasks.tokens import bos_id, encode_text, history_ids, item_token_ids


def _history(history, config) -> list[int]:
    items = [int(i) for i in np.asarray(history).reshape(-1) if int(i) >= 0]
    return items[-int(config.data.max_history):]


def history_string(semantic_ids, history) -> str:
    return ", ".join(semantic_ids.item_string(int(i)) for i in history)


def direct_prompt_ids(tokenizer, semantic_ids, history, config) -> list[int]:
    """Token ids after which the next item's SID is decoded (Direct mode). history: item indices."""
    items = _history(history, config)
    if config.tasks.direct_prompt == "dense":
        return [bos_id(tokenizer)] + history_ids(item_token_ids(tokenizer, semantic_ids), items)
    text = chat_prompt(templates.SEQREC[0].format(history=history_string(semantic_ids, items)))
    return encode_text(tokenizer, text)


def reasoning_prompt_text(semantic_ids, history, template: int = 0) -> str:
    return chat_prompt(templates.REASONING[template].format(history=history_string(semantic_ids, history)))


def reasoning_prompt_ids(tokenizer, semantic_ids, history, config) -> list[int]:
    """Token ids after which the model writes its `<think>` chain (Reasoning mode)."""
    return encode_text(tokenizer, reasoning_prompt_text(semantic_ids, _history(history, config)))
