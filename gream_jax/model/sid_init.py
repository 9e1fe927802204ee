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

Pure numpy (`sid_rows`) plus one edge function that writes the rows into the sharded parameters on
device.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
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


@functools.partial(jax.jit, static_argnames="rows_axis")
def _row_stats(matrix, keep, rows_axis: int):
    """Per-dimension mean and spread of the rows `keep` [V] marks; matrix [V, d] (rows_axis 0) or
    [d, V] (1). Computed on device, so a matrix sharded over several hosts never leaves them."""
    m = (matrix if rows_axis == 0 else matrix.T).astype(jnp.float32)
    w = keep.astype(jnp.float32)[:, None]
    mean = (m * w).sum(0) / w.sum()
    return mean, jnp.sqrt((jnp.square(m - mean) * w).sum(0) / w.sum())


def _set_rows(matrix, ids, values, informed, rows_axis: int):
    m = matrix if rows_axis == 0 else matrix.T
    new = jnp.where(informed, values.astype(m.dtype), m[ids])
    m = m.at[ids].set(new)
    return m if rows_axis == 0 else m.T


def init_sid_embeddings(params: dict, tie_word_embeddings: bool, token_table: np.ndarray,
                        vectors: np.ndarray, semantic_ids) -> dict:
    """Writes `sid_rows` into the embedding (and the untied LM head) at the SID token ids.

    token_table [levels, max_codes]: token id of (level, code) (`tokenizer.sid_token_table`).
    The statistics and the write run as jitted functions on the sharded matrices (each result
    keeps its input's sharding), so this works unchanged when the matrices span several hosts;
    the host side only computes the rows from the item vectors, identically on every process."""
    sid_ids = np.concatenate([token_table[l, :int(s)] for l, s in enumerate(semantic_ids.level_sizes)])
    out = dict(params)
    names = [("embed_tokens", 0)] + ([("lm_head", 1)] if not tie_word_embeddings and "lm_head" in params else [])
    for name, rows_axis in names:
        matrix = params[name]
        vocab = matrix.shape[rows_axis]
        if (sid_ids < 0).any() or sid_ids.max() >= vocab:
            raise ValueError(f"init_sid_embeddings: SID token ids outside the {vocab}-row vocabulary of {name}")
        keep = np.ones(vocab, bool)
        keep[sid_ids] = False
        mean, std = (np.asarray(a, np.float64) for a in jax.device_get(_row_stats(matrix, keep, rows_axis)))
        levels = sid_rows(vectors, semantic_ids.codes, semantic_ids.lengths, semantic_ids.level_sizes,
                          matrix.shape[1 - rows_axis], mean, std)
        values, informed = (np.concatenate(parts) for parts in zip(*levels))   # [n_sid_tokens, d]
        write = jax.jit(_set_rows, static_argnames="rows_axis", out_shardings=matrix.sharding)
        out[name] = write(matrix, sid_ids, values, informed, rows_axis=rows_axis)
    return out
