"""Item embeddings fed to the quantiser: text (MiniLM), collaborative, their fusion, or Qwen.

`config.index.embedding` picks the source:
- `text`: the Flax MiniLM sentence encoder over each item's fused text.
- `collaborative`: training-interaction item vectors (see collaborative.py).
- `text+collaborative`: each part L2-normalised, scaled by its weight
  (`text_weight`, `collab_weight`) and concatenated, so neither dominates by scale alone.
- `qwen`: mean-pooled last hidden states of the backbone checkpoint (`config.model.checkpoint`)
  over the fused text, through `gream_jax.model.api.forward(..., return_hidden=True)`, as the
  reference release does (it averages title and description embeddings; we embed the fused text).
  An item with empty text gets a zero vector (MiniLM instead embeds "[CLS][SEP]", like
  sentence-transformers does).
Text embeddings are cached in `WORKDIR/index/text_embeddings.npz`, keyed by a hash of the texts
and the encoder, so trying several quantiser settings does not re-encode.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from gream_jax.index import collaborative, encoder as encoder_lib
from gream_jax.utils import io
from gream_jax.utils.logging import Progress

SOURCES = ("text", "collaborative", "text+collaborative", "qwen")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def _cache_key(texts: list[str], what: str) -> str:
    h = hashlib.sha256(what.encode())
    for t in texts:
        h.update(b"\x1e" + t.encode())
    return h.hexdigest()


def cached(path: str | None, key: str, compute) -> np.ndarray:
    if path and os.path.exists(path):
        with np.load(path) as f:
            if str(f["key"]) == key:
                return f["embeddings"]
    out = compute()
    if path:
        io.save_npz(path, embeddings=out, key=np.asarray(key))
    return out


def text_embeddings(texts: list[str], index_cfg, cache_path: str | None = None) -> np.ndarray:
    model_dir = index_cfg.encoder_dir or encoder_lib.default_encoder_dir()
    key = _cache_key(texts, f"minilm|{os.path.abspath(model_dir)}|{index_cfg.encoder_max_tokens}")

    def compute():
        enc = encoder_lib.SentenceEncoder(model_dir, index_cfg.encoder_max_tokens, index_cfg.encoder_batch_size)
        return enc.encode(texts, progress_name="index/text-encoder")

    return cached(cache_path, key, compute)


def qwen_embeddings(texts: list[str], config, mesh, rules, cache_path: str | None = None) -> np.ndarray:
    """Masked mean of the backbone's last hidden states `[n, hidden]` (right-padded batches)."""
    import jax
    import jax.numpy as jnp

    from gream_jax.model import api
    from gream_jax.model.hf_loader import load_hf_checkpoint
    from gream_jax.model.tokenizer import Tokenizer

    ckpt = config.model.checkpoint
    if not ckpt:
        raise ValueError("config.index.embedding='qwen' needs config.model.checkpoint (a HF directory); "
                         "a from-scratch backbone has random weights")
    key = _cache_key(texts, f"qwen|{os.path.abspath(ckpt)}|{config.index.encoder_max_tokens}")

    def compute():
        model_cfg, params = load_hf_checkpoint(ckpt, mesh, rules)
        tok = Tokenizer.load(ckpt)
        ids = [x[:config.index.encoder_max_tokens] for x in tok.encode_batch(texts)]
        empty = np.asarray([not x for x in ids])
        ids = [x or [tok.pad_id] for x in ids]          # shape filler; the row is zeroed below
        bs = config.index.encoder_batch_size
        fwd = jax.jit(lambda p, t, m: api.forward(p, model_cfg, t, m, return_hidden=True))

        def pooled(p, t, m):
            h = fwd(p, t, m)
            mf = m.astype(jnp.float32)[..., None]
            return jnp.sum(h * mf, 1) / jnp.maximum(jnp.sum(mf, 1), 1.0)

        pool = jax.jit(pooled)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.zeros((len(texts), model_cfg.hidden_size), np.float32)
        progress = Progress("index/qwen-encoder", total=len(texts), unit="texts")
        for start in range(0, len(texts), bs):
            rows = order[start:start + bs]
            longest = max(len(ids[r]) for r in rows)
            s = -(-longest // encoder_lib.LENGTH_BUCKET) * encoder_lib.LENGTH_BUCKET
            t = np.full((bs, s), tok.pad_id, np.int32)
            m = np.zeros((bs, s), np.int32)
            for j, r in enumerate(rows):
                t[j, :len(ids[r])] = ids[r]
                m[j, :len(ids[r])] = 1
            out[rows] = np.asarray(pool(params, t, m))[:len(rows)]
            progress.update(len(rows))
        progress.close()
        out[empty] = 0.0                                 # no text: no text vector (fusion keeps it 0)
        return out

    return cached(cache_path, key, compute)


def item_embeddings(source: str, texts: list[str], train: list[np.ndarray], n_items: int, config,
                    mesh=None, rules=None, cache_dir: str | None = None) -> np.ndarray:
    """`[n_items, d]` float32 vectors for the quantiser, from `config.index`."""
    c = config.index
    if source not in SOURCES:
        raise ValueError(f"config.index.embedding={source!r}: must be one of {SOURCES}")
    parts = []
    if source in ("text", "text+collaborative"):
        cache = os.path.join(cache_dir, "text_embeddings.npz") if cache_dir else None
        parts.append(c.text_weight * l2_normalize(text_embeddings(texts, c, cache)))
    if source in ("collaborative", "text+collaborative"):
        vecs = collaborative.collaborative_vectors(train, n_items, c.collab_dim, c.collab_method,
                                                   c.collab_window, seed=config.seed)
        parts.append(c.collab_weight * vecs)
    if source == "qwen":
        cache = os.path.join(cache_dir, "qwen_embeddings.npz") if cache_dir else None
        parts.append(l2_normalize(qwen_embeddings(texts, config, mesh, rules, cache)))
    return np.concatenate(parts, axis=1).astype(np.float32)
