"""SID token embeddings initialised from the index's item vectors (`config.model.sid_embedding_init`).

Why: the SID tokens are new vocabulary. By default (GREAM) their rows start as the mean of the
existing rows plus noise (a pretrained backbone) or at random (from scratch), so the model must
learn from interactions alone that two items are alike. On sparse data (Amazon Beauty: ~16
interactions per item) that is the weak part, and the index already holds a vector per item
that says it: the text + collaborative embedding the RQ-KMeans quantised. "index" puts that
knowledge into the rows: the item vectors are projected onto their top `hidden_size` principal
directions; an item-unique token gets its item's projection, a code token the mean projection
of the items that carry it at that level; every row set is then scaled to the per-dimension
mean and spread of the backbone's own (non-SID) rows, so logits keep their usual scale. Entries the
vectors carry no information for (an unused code; dimensions past their rank) keep the default
initialisation.

Pure numpy (`sid_rows`) plus one edge function that writes the rows into sharded parameters.
"""

from __future__ import annotations

import os

import jax
import numpy as np

INIT_MODES = ("default", "index")


def principal_projection(vectors: np.ndarray, width: int) -> np.ndarray:
    """[n, D] -> [n, width]: centred vectors on their top `width` principal directions (zero
    columns past min(n, D)). Signs follow the SVD; only the geometry matters here."""
    x = np.asarray(vectors, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(width, s.shape[0])
    out = np.zeros((x.shape[0], width), np.float64)
    out[:, :k] = u[:, :k] * s[:k]
    return out


def sid_rows(vectors: np.ndarray, codes: np.ndarray, lengths: np.ndarray, level_sizes, width: int,
             mean: np.ndarray, std: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Embedding rows per SID level from item vectors [n, D]: (rows [level_size, width], informed
    [level_size, width] bool) each.

    codes [n, L] / lengths [n]: the SID table. mean / std [width]: the per-dimension mean and
    spread the rows should have (the backbone's own rows). Entries the vectors say nothing about
    (a code no item carries, a dimension past the vectors' rank or constant over the level) are
    not informed: the caller keeps its default initialisation there.
    """
    vectors = np.asarray(vectors)
    codes, lengths = np.asarray(codes), np.asarray(lengths)
    if vectors.ndim != 2 or vectors.shape[0] != codes.shape[0]:
        raise ValueError(f"sid_rows: item vectors of shape {vectors.shape} for an SID table of "
                         f"{codes.shape[0]} items")
    z = principal_projection(vectors, width)                              # [n, width]
    out = []
    for level, size in enumerate(int(s) for s in level_sizes):
        carried = lengths > level
        sums = np.zeros((size, width))
        counts = np.zeros(size)
        np.add.at(sums, codes[carried, level], z[carried])
        np.add.at(counts, codes[carried, level], 1.0)
        group_means = sums / np.maximum(counts, 1.0)[:, None]             # [size, width]
        used = counts > 0
        centred = group_means - group_means[used].mean(axis=0, keepdims=True)
        spread = centred[used].std(axis=0)
        varies = spread > 1e-6 * max(float(spread.max(initial=0.0)), 1e-30)
        scaled = centred / np.where(varies, spread, 1.0)
        informed = used[:, None] & varies[None, :]
        rows = np.where(informed, mean[None, :] + scaled * std[None, :], 0.0)
        out.append((rows.astype(np.float32), informed))
    return out


def load_item_vectors(index_dir: str, n_items: int) -> np.ndarray:
    """WORKDIR/index/embeddings.npy [n_items, D], checked against the item count."""
    path = os.path.join(index_dir, "embeddings.npy")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: config.model.sid_embedding_init='index' needs the index stage's "
                                f"item vectors; run --config.stage=index first")
    vectors = np.load(path)
    if vectors.ndim != 2 or vectors.shape[0] != n_items:
        raise ValueError(f"{path}: shape {vectors.shape}, expected [{n_items}, dim] (one vector per item); "
                         f"the index does not match the prepared data")
    return vectors


def init_sid_embeddings(params: dict, tie_word_embeddings: bool, token_table: np.ndarray,
                        vectors: np.ndarray, semantic_ids) -> dict:
    """Writes `sid_rows` into the embedding (and the untied LM head) at the SID token ids.

    token_table [levels, max_codes]: token id of (level, code) (`tokenizer.sid_token_table`).
    Shardings are kept: each updated matrix is put back on its original sharding."""
    embed = params["embed_tokens"]
    sid_ids = np.concatenate([token_table[l, :int(s)] for l, s in enumerate(semantic_ids.level_sizes)])
    if (sid_ids < 0).any() or sid_ids.max() >= embed.shape[0]:
        raise ValueError(f"init_sid_embeddings: SID token ids outside the vocabulary of {embed.shape[0]} rows")
    host = np.array(jax.device_get(embed), np.float32)                   # a writable copy
    others = np.setdiff1d(np.arange(host.shape[0]), sid_ids)
    ref = host[others] if others.size else host
    levels = sid_rows(vectors, semantic_ids.codes, semantic_ids.lengths, semantic_ids.level_sizes,
                      host.shape[1], ref.mean(axis=0), ref.std(axis=0))
    values, informed = (np.concatenate(parts) for parts in zip(*levels))  # [n_sid_tokens, d]
    host[sid_ids] = np.where(informed, values, host[sid_ids])
    out = dict(params)
    out["embed_tokens"] = jax.device_put(host.astype(embed.dtype), embed.sharding)
    if not tie_word_embeddings and "lm_head" in params:
        head = params["lm_head"]                                          # [d, V]
        head_host = np.array(jax.device_get(head), np.float32)
        ref_head = head_host[:, others] if others.size else head_host
        levels = sid_rows(vectors, semantic_ids.codes, semantic_ids.lengths, semantic_ids.level_sizes,
                          head_host.shape[0], ref_head.mean(axis=1), ref_head.std(axis=1))
        values, informed = (np.concatenate(parts) for parts in zip(*levels))
        head_host[:, sid_ids] = np.where(informed, values, head_host[:, sid_ids].T).T
        out["lm_head"] = jax.device_put(head_host.astype(head.dtype), head.sharding)
    return out
