"""Tokenizer (Hugging Face `tokenizers`), SID/task special tokens, vocabulary resizing.

A checkpoint's `tokenizer.json` is loaded as is; GREAM then adds one special token per
semantic-ID (level, code) (`semantic_ids.token(level, code)`, e.g. `<a_12>`), the reasoning
tags `<think> </think> <answer> </answer>` and, when absent, the chat markers
`<|im_start|> <|im_end|>`. Special tokens are never split or merged by the BPE model, so an
SID is always exactly its tokens. The embedding and LM head grow with `resize_vocab`.

The from-scratch default trains a small byte-level BPE on the dataset's item text
(`train_small_tokenizer`), offline and deterministic.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import AddedToken, Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from gream_jax.model.config import ModelConfig
from gream_jax.utils import io

TASK_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
ENDOFTEXT = "<|endoftext|>"
META_FILE = "gream_tokenizer.json"


class TokenizerError(ValueError):
    """A tokenizer directory or token request that cannot be honoured (names the file/token)."""


class Tokenizer:
    """Thin wrapper: ids without implicit BOS/EOS, explicit pad/eos tokens, added-token bookkeeping."""

    def __init__(self, tokenizer: HFTokenizer, pad_token: str, eos_token: str):
        self.hf = tokenizer
        self.pad_token, self.eos_token = pad_token, eos_token
        for name, tok in (("pad_token", pad_token), ("eos_token", eos_token)):
            if tok is None or tokenizer.token_to_id(tok) is None:
                raise TokenizerError(f"tokenizer: {name}={tok!r} is not in the vocabulary")

    # ---- encoding --------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of token ids in use (the model's embedding may have more, padded rows)."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int:
        i = self.hf.token_to_id(token)
        if i is None:
            raise TokenizerError(f"tokenizer: token {token!r} is not in the vocabulary")
        return i

    def has_token(self, token: str) -> bool:
        return self.hf.token_to_id(token) is not None

    def id_to_token(self, i: int) -> str | None:
        return self.hf.id_to_token(int(i))

    @property
    def pad_id(self) -> int:
        return self.token_to_id(self.pad_token)

    @property
    def eos_id(self) -> int:
        return self.token_to_id(self.eos_token)

    def added_tokens(self) -> list[str]:
        return [t.content for _, t in sorted(self.hf.get_added_tokens_decoder().items())]

    def add_tokens(self, tokens: Sequence[str], special: bool = True) -> int:
        """Adds the tokens not yet present (in order); returns how many were new."""
        new = [t for t in dict.fromkeys(tokens) if self.hf.token_to_id(t) is None]
        if not new:
            return 0
        added = [AddedToken(t, special=special, normalized=False, single_word=False) for t in new]
        return self.hf.add_special_tokens(added) if special else self.hf.add_tokens(added)

    # ---- persistence -----------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Writes tokenizer.json, tokenizer_config.json (transformers-loadable) and our meta."""
        os.makedirs(directory, exist_ok=True)
        io.write_text(os.path.join(directory, "tokenizer.json"), self.hf.to_str(pretty=False))
        added = {str(i): {"content": t.content, "special": t.special, "normalized": t.normalized,
                          "lstrip": t.lstrip, "rstrip": t.rstrip, "single_word": t.single_word}
                 for i, t in sorted(self.hf.get_added_tokens_decoder().items())}
        io.write_json(os.path.join(directory, "tokenizer_config.json"), {
            "tokenizer_class": "PreTrainedTokenizerFast", "added_tokens_decoder": added,
            "eos_token": self.eos_token, "pad_token": self.pad_token, "bos_token": None,
            "unk_token": None, "clean_up_tokenization_spaces": False, "model_max_length": 131072,
            "split_special_tokens": False})
        io.write_json(os.path.join(directory, "special_tokens_map.json"),
                      {"eos_token": self.eos_token, "pad_token": self.pad_token})
        io.write_json(os.path.join(directory, META_FILE),
                      {"pad_token": self.pad_token, "eos_token": self.eos_token})

    @classmethod
    def load(cls, directory: str) -> "Tokenizer":
        path = os.path.join(directory, "tokenizer.json")
        if not os.path.exists(path):
            raise TokenizerError(f"{path}: not found (a tokenizer directory needs tokenizer.json)")
        try:
            hf = HFTokenizer.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise TokenizerError(f"{path}: cannot be parsed: {e}") from None
        pad, eos = _special_tokens(directory, hf)
        return cls(hf, pad_token=pad, eos_token=eos)


def _token_str(value):
    return value.get("content") if isinstance(value, dict) else value


def _special_tokens(directory: str, hf: HFTokenizer) -> tuple[str, str]:
    """pad/eos from our meta, else tokenizer_config.json, else <|endoftext|> (Qwen's choice)."""
    for name in (META_FILE, "tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
            eos, pad = _token_str(meta.get("eos_token")), _token_str(meta.get("pad_token"))
            if eos:
                return pad or eos, eos
    if hf.token_to_id(ENDOFTEXT) is not None:
        return ENDOFTEXT, ENDOFTEXT
    raise TokenizerError(f"{directory}: no eos_token in tokenizer_config.json and no {ENDOFTEXT!r} token")


def train_small_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE trained on `texts` (offline, deterministic), with <|endoftext|> as pad/eos
    and the chat markers as special tokens. Any string is encodable (byte fallback)."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=[ENDOFTEXT, *CHAT_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(list(texts), trainer=trainer)
    return Tokenizer(hf, pad_token=ENDOFTEXT, eos_token=ENDOFTEXT)


def sid_tokens(semantic_ids) -> list[str]:
    """Every (level, code) SID token in a fixed order (level-major)."""
    return [semantic_ids.token(level, code) for level, n in enumerate(semantic_ids.level_sizes)
            for code in range(int(n))]


def sid_token_table(tokenizer: Tokenizer, semantic_ids) -> np.ndarray:
    """[levels, max_codes] int32: token id of (level, code), -1 where the level has fewer codes."""
    sizes = [int(n) for n in semantic_ids.level_sizes]
    table = np.full((len(sizes), max(sizes)), -1, np.int32)
    for level, n in enumerate(sizes):
        for code in range(n):
            table[level, code] = tokenizer.token_to_id(semantic_ids.token(level, code))
    return table


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _grow_rows(matrix, n_new: int, axis: int, noise: float, key):
    """Appends n_new rows along `axis`: mean of existing rows + noise * per-dim std * N(0, 1)."""
    m32 = matrix.astype(jnp.float32)
    mean = jnp.mean(m32, axis=axis, keepdims=True)
    std = jnp.std(m32, axis=axis, keepdims=True)
    shape = list(matrix.shape)
    shape[axis] = n_new
    rows = mean + noise * std * jax.random.normal(key, shape, jnp.float32)
    return jnp.concatenate([m32, rows], axis=axis).astype(matrix.dtype)


def resize_vocab(params: dict, model_cfg: ModelConfig, new_vocab_size: int, rng: jax.Array,
                 noise: float = 0.02, mesh=None, rules=None) -> tuple[dict, ModelConfig]:
    """Grows the embedding (and untied LM head) to `new_vocab_size` rows; new rows start at the
    mean of the existing rows plus small noise, so new tokens begin as 'average' tokens.
    The original size is recorded in `resized_from_vocab_size` (kept across repeated resizes)."""
    from gream_jax.model import api
    old = model_cfg.vocab_size
    if new_vocab_size < old:
        raise ValueError(f"resize_vocab: new_vocab_size={new_vocab_size} < current {old}; shrinking "
                         "would drop trained rows")
    if new_vocab_size == old:
        return params, model_cfg
    cfg = model_cfg.replace(vocab_size=new_vocab_size,
                            resized_from_vocab_size=model_cfg.resized_from_vocab_size or old)
    mesh = mesh or params["embed_tokens"].sharding.mesh
    shardings = api.param_shardings(cfg, mesh, rules)
    k_embed, k_head = jax.random.split(rng)
    out = dict(params)
    out["embed_tokens"] = jax.jit(_grow_rows, static_argnums=(1, 2, 3),
                                  out_shardings=shardings["embed_tokens"])(
        params["embed_tokens"], new_vocab_size - old, 0, noise, k_embed)
    if "lm_head" in params:
        out["lm_head"] = jax.jit(_grow_rows, static_argnums=(1, 2, 3),
                                 out_shardings=shardings["lm_head"])(
            params["lm_head"], new_vocab_size - old, 1, noise, k_head)
    return out, cfg
