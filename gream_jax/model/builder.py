"""build_model: the backbone every training stage starts from.

Two paths, chosen by `config.model.checkpoint`:
* a Hugging Face Qwen2/Qwen3 directory: sharded load, then the tokenizer gains the SID tokens
  and task/chat special tokens, and the embedding/LM head grow to match (new rows = mean of
  existing rows + small noise). A checkpoint that already carries SID tokens (one exported by
  gream_jax) must carry exactly this index's SID tokens, otherwise it is refused.
* from scratch (the embedded default): a byte-level BPE trained on the item texts plus the task
  prompt wording, and a small randomly initialised Qwen3 sized by `config.model`.
`config.model.sid_embedding_init="index"` then sets the SID token rows from the index's item
vectors (`gream_jax/model/sid_init.py`). LoRA adapters are added when `config.model.lora_rank > 0`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import jax
from absl import logging

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.model.config import ModelConfig
from gream_jax.model.hf_loader import load_hf_checkpoint
from gream_jax.model.lora import add_lora
from gream_jax.model.tokenizer import (CHAT_TOKENS, TASK_TOKENS, Tokenizer, resize_vocab, round_up,
                                       sid_tokens, train_small_tokenizer)

# A semantic-ID token as SemanticIds.token writes it ("<a_12>"), or the reference's "<|a_12|>".
SID_TOKEN_PATTERN = re.compile(r"^<\|?[a-z]_\d+\|?>$")
_CHAT_WORDS = "system user assistant think answer recommend item history title description next"


class SidVocabularyMismatch(ValueError):
    """The checkpoint's SID tokens were made for another semantic-ID index."""


def item_text(item: Any) -> str:
    """One training string per item: its title, brand, categories and description."""
    if isinstance(item, str):
        return item
    parts = [getattr(item, f, "") for f in ("title", "brand", "categories", "description")]
    return " ".join(p for p in parts if p)


def prompt_texts() -> list[str]:
    """The task prompt templates' wording (format fields such as {title} removed) for tokenizer training."""
    from gream_jax.tasks import templates
    out = [_CHAT_WORDS]
    for name in dir(templates):
        value = getattr(templates, name)
        if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            out.extend(re.sub(r"\{[a-z_]+\}", " ", v) for v in value)
    return out


def _semantic_tokens(semantic_ids) -> list[str]:
    all_tokens = getattr(semantic_ids, "all_tokens", None)
    return list(all_tokens()) if callable(all_tokens) else sid_tokens(semantic_ids)


def add_sid_tokens(tokenizer: Tokenizer, semantic_ids, source: str) -> int:
    """Adds the index's SID tokens, or checks that a tokenizer that already has SID tokens has
    exactly these; returns the number added."""
    wanted = _semantic_tokens(semantic_ids)
    present = [t for t in tokenizer.added_tokens() if SID_TOKEN_PATTERN.match(t)]
    if present:
        missing = sorted(set(wanted) - set(present))
        extra = sorted(set(present) - set(wanted))
        if missing or extra:
            raise SidVocabularyMismatch(
                f"{source}: the tokenizer already has {len(present)} semantic-ID tokens that do not match "
                f"the semantic-ID table ({len(wanted)} tokens): missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}. "
                "Use the index this checkpoint was trained with, or start from its base model.")
        return 0
    return tokenizer.add_tokens(wanted)


def build_model(config, workdir: str, semantic_ids, item_texts: Sequence[Any], mesh, rules=None,
                extra_texts: Sequence[str] = ()) -> tuple[ModelConfig, dict, Tokenizer]:
    """-> (model_cfg, params sharded on `mesh`, tokenizer with SID + task tokens)."""
    m = config.model
    rules = tuple(rules) if rules is not None else mesh_lib.DEFAULT_RULES
    rules_field = () if rules == tuple(mesh_lib.DEFAULT_RULES) else rules
    k_init, k_resize, k_lora = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    numerics = dict(param_dtype=m.param_dtype, dtype=m.dtype, remat=m.remat,
                    scan_layers=m.scan_layers, attention=m.attention, sharding_rules=rules_field)
    if m.checkpoint:
        tokenizer = Tokenizer.load(m.checkpoint)
        n_sid = add_sid_tokens(tokenizer, semantic_ids, m.checkpoint)
        n_task = tokenizer.add_tokens(list(CHAT_TOKENS) + list(TASK_TOKENS))
        model_cfg, params = load_hf_checkpoint(m.checkpoint, mesh, rules, **numerics)
        new_vocab = round_up(tokenizer.vocab_size, m.vocab_pad_multiple)
        if new_vocab > model_cfg.vocab_size:
            params, model_cfg = resize_vocab(params, model_cfg, new_vocab, k_resize,
                                             noise=m.new_token_noise, mesh=mesh, rules=rules)
        logging.info("model: loaded %s (%d layers, hidden %d); +%d SID, +%d task tokens; vocab %d",
                     m.checkpoint, model_cfg.num_layers, model_cfg.hidden_size, n_sid, n_task,
                     model_cfg.vocab_size)
    else:
        texts = [item_text(t) for t in item_texts] + prompt_texts() + list(extra_texts)
        texts = [t for t in texts if t]
        if not texts:
            raise ValueError("build_model: no item texts to train the tokenizer on (config.model.checkpoint "
                             "is empty, so a tokenizer is trained from the items)")
        tokenizer = train_small_tokenizer(texts, m.tokenizer_vocab_size)
        tokenizer.add_tokens(list(CHAT_TOKENS) + list(TASK_TOKENS))
        add_sid_tokens(tokenizer, semantic_ids, "from-scratch tokenizer")
        model_cfg = ModelConfig(
            vocab_size=round_up(tokenizer.vocab_size, m.vocab_pad_multiple), hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
            num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, rope_theta=float(m.rope_theta),
            rms_norm_eps=float(m.rms_norm_eps), tie_word_embeddings=bool(m.tie_word_embeddings),
            max_position_embeddings=m.max_position_embeddings, architecture="qwen3", qk_norm=True,
            qkv_bias=False, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, **numerics)
        params = api.init_params(model_cfg, k_init, mesh, rules)
        logging.info("model: from-scratch qwen3 (%d layers, hidden %d), tokenizer %d tokens, vocab %d",
                     model_cfg.num_layers, model_cfg.hidden_size, tokenizer.vocab_size, model_cfg.vocab_size)
    if str(m.sid_embedding_init) == "index":
        if m.checkpoint and n_sid == 0:
            raise ValueError(f"config.model.sid_embedding_init='index': {m.checkpoint} already carries this index's "
                             f"SID tokens (a gream_jax export); their trained rows would be overwritten. Use "
                             f"sid_embedding_init='default' to continue from it, or start from its base model")
        from gream_jax.model import sid_init
        from gream_jax.model.tokenizer import sid_token_table
        vectors = sid_init.load_item_vectors(os.path.join(workdir, "index"), semantic_ids.n_items)
        params = sid_init.init_sid_embeddings(params, model_cfg.tie_word_embeddings,
                                              sid_token_table(tokenizer, semantic_ids), vectors, semantic_ids)
        logging.info("model: %d SID token rows initialised from the index's item vectors (%s)",
                     sum(int(s) for s in semantic_ids.level_sizes), os.path.join(workdir, "index", "embeddings.npy"))
    if m.lora_rank:
        params, model_cfg = add_lora(params, model_cfg, k_lora, mesh, int(m.lora_rank), float(m.lora_alpha),
                                     tuple(m.lora_targets), rules)
    return model_cfg, params, tokenizer
