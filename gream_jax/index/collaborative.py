"""Collaborative item vectors from TRAINING interactions only.

Why: GREAM's first component is collaborative-semantic alignment, and text alone cannot tell
which items users consume together. Two factorisations, both fed only `Split.train` (the per-user
training prefixes), so no validation or test target can influence an item's code:
- `svd`: truncated SVD of the user x item matrix (binary, each item column scaled by
  1/sqrt(popularity) so popular items do not own every direction); item vector = V * sqrt(S).
- `ppmi`: truncated SVD of the positive PMI matrix of item co-occurrence inside a sliding window
  of each training sequence (a sequence-aware neighbourhood; SVD of PPMI ~ word2vec).
Items absent from training get a zero vector (the fusion then leaves them to text). Vectors are
L2-normalised. Deterministic for a seed (randomized SVD with a fixed random_state).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

METHODS = ("svd", "ppmi")


def user_item_matrix(train: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary `[n_users, n_items]` matrix of training interactions."""
    rows = np.concatenate([np.full(len(s), u, np.int64) for u, s in enumerate(train)] or [np.zeros(0, np.int64)])
    cols = np.concatenate([np.asarray(s, np.int64) for s in train] or [np.zeros(0, np.int64)])
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(train), n_items))
    m.data[:] = 1.0
    return m


def cooccurrence_ppmi(train: list[np.ndarray], n_items: int, window: int) -> sp.csr_matrix:
    """Positive PMI of items co-occurring within `window` positions in a training sequence."""
    left, right = [], []
    for seq in train:
        seq = np.asarray(seq, np.int64)
        for off in range(1, window + 1):
            if len(seq) > off:
                left.append(seq[:-off])
                right.append(seq[off:])
    if not left:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    a, b = np.concatenate(left), np.concatenate(right)
    c = sp.coo_matrix((np.ones(len(a), np.float64), (a, b)), shape=(n_items, n_items)).tocsr()
    c = c + c.T
    total = c.sum()
    marg = np.asarray(c.sum(axis=1)).reshape(-1)
    c = c.tocoo()
    pmi = np.log(c.data * total / (marg[c.row] * marg[c.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep].astype(np.float32), (c.row[keep], c.col[keep])), shape=(n_items, n_items))


def _l2_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def collaborative_vectors(train: list[np.ndarray], n_items: int, dim: int, method: str = "svd",
                          window: int = 3, seed: int = 0) -> np.ndarray:
    """`[n_items, dim]` unit-norm item vectors (zero rows for items never seen in training)."""
    if method not in METHODS:
        raise ValueError(f"config.index.collab_method={method!r}: must be one of {METHODS}")
    from sklearn.utils.extmath import randomized_svd
    if method == "svd":
        m = user_item_matrix(train, n_items).tocsc()
        pop = np.asarray(m.sum(axis=0)).reshape(-1)
        m = m @ sp.diags(np.where(pop > 0, 1.0 / np.sqrt(np.maximum(pop, 1)), 0.0).astype(np.float32))
    else:
        m = cooccurrence_ppmi(train, n_items, window)
    rank = int(min(dim, min(m.shape) - 1))
    if rank < 1 or m.nnz == 0:
        raise ValueError(f"collaborative vectors: training matrix {m.shape} with {m.nnz} entries cannot give "
                         f"a rank-{dim} factorisation (config.index.collab_dim)")
    _, s, vt = randomized_svd(m, n_components=rank, n_iter=7, random_state=seed)
    vecs = vt.T * np.sqrt(s)[None, :]
    if rank < dim:
        vecs = np.pad(vecs, ((0, 0), (0, dim - rank)))
    seen = np.zeros(n_items, bool)
    for seq in train:
        seen[np.asarray(seq, np.int64)] = True
    vecs[~seen] = 0.0
    return _l2_rows(vecs)
