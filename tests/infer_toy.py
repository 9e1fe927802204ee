"""A hand-made tiny recurrent 'language model' and SID set for the inference tests.

The model's next-token distribution depends on the whole prefix (a tanh RNN), so a beam search
that reorders its cache wrongly, or scores a token against the wrong parent, gives a different
answer from brute-force teacher forcing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

N_SPECIAL = 6  # token ids 0..5 are "text" tokens; SID tokens follow


def toy_sids(n_items=40, level_sizes=(3, 4, 3), seed=0):
    """Random codes with a rank suffix for collisions: SIDs of length 3 or 4 (prefix-free)."""
    rng = np.random.default_rng(seed)
    base = np.stack([rng.integers(0, k, n_items) for k in level_sizes], 1)
    groups = {}
    for i, row in enumerate(map(tuple, base)):
        groups.setdefault(row, []).append(i)
    max_len = len(level_sizes) + 1
    codes = np.full((n_items, max_len), -1, np.int32)
    lengths = np.zeros(n_items, np.int32)
    for row, members in groups.items():
        for rank, i in enumerate(members):
            codes[i, :len(row)] = row
            if len(members) > 1:
                codes[i, len(row)] = rank
                lengths[i] = len(row) + 1
            else:
                lengths[i] = len(row)
    suffix = max(1, int(codes[:, -1].max()) + 1)
    return codes, lengths, tuple(level_sizes) + (suffix,)


def token_table(level_sizes):
    """[levels, max_codes] vocab id of (level, code): ids after the text tokens, -1 = none."""
    table = np.full((len(level_sizes), max(level_sizes)), -1, np.int32)
    nxt = N_SPECIAL
    for lvl, k in enumerate(level_sizes):
        table[lvl, :k] = np.arange(nxt, nxt + k)
        nxt += k
    return table, nxt + 3   # a few unused tokens at the end of the vocabulary


def init_params(vocab, dim=8, seed=1):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"emb": jax.random.normal(k[0], (vocab, dim)),
            "w": jax.random.normal(k[1], (dim, dim)) * 0.5,
            "out": jax.random.normal(k[2], (dim, vocab)) * 1.5,
            "prompt": jax.random.normal(k[3], (vocab, dim))}


def prefill(params, prompt):
    """prompt [b, s] -> (first logits [b, V], cache {'h': [b, d]})."""
    h = jnp.tanh(params["prompt"][prompt].sum(1))
    return h @ params["out"], {"h": h}


def step_fn(params, tokens, cache):
    h = jnp.tanh(cache["h"] @ params["w"] + params["emb"][tokens])
    return h @ params["out"], {"h": h}


def reorder_fn(cache, indices):
    return jax.tree_util.tree_map(lambda x: x[indices], cache)


def tiny_qwen(n_items=24, level_sizes=(3, 3)):
    """A tiny random Qwen3 (scaled up for peaky distributions) over toy SIDs on one device: dict with
    cfg, params, mesh, codes, lengths, sizes, table (vocab id of each (level, code)), vocab."""
    from gream_jax import mesh as mesh_lib
    from gream_jax.model import api
    from gream_jax.model.config import ModelConfig
    codes, lengths, sizes = toy_sids(n_items=n_items, level_sizes=level_sizes)
    table, vocab = token_table(sizes)
    cfg = ModelConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8)
    mesh = mesh_lib.make_mesh({"data": 1}, jax.devices()[:1])
    params = api.init_params(cfg, jax.random.PRNGKey(0), mesh)
    params = jax.tree.map(lambda p: p * 30.0 if p.ndim == 2 else p, params)  # peaky distributions
    return dict(cfg=cfg, params=params, mesh=mesh, codes=codes, lengths=lengths, sizes=sizes, table=table,
                vocab=vocab)


def tiny_policy(num_layers=1, seed=0):
    """(mesh over all 8 fake devices, config, params) of a random 64-token Qwen, the RL update tests' model."""
    from gream_jax import mesh as mesh_lib
    from gream_jax.model import api
    from gream_jax.model.config import ModelConfig
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=num_layers, num_heads=2,
                      num_kv_heads=1, head_dim=16, max_position_embeddings=64)
    return mesh, cfg, api.init_params(cfg, jax.random.PRNGKey(seed), mesh)
