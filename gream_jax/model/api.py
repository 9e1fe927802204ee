"""Functional model API used by every stage (see docs/DESIGN.md, "model").

Parameters are a plain nested dict of `jax.Array`s; every function here is pure, so callers
`jax.jit` them with `static_argnames=("model_cfg",)` (and `donate_argnames=("cache",)` for
`prefill`/`decode_step`). Activation sharding constraints apply when the jitted call runs
under `jax.set_mesh(mesh)`; weights are placed by `param_shardings`.

KV cache (left-padded prompts): one write slot shared by the whole batch (`index`), a per-row
slot-validity mask and a per-row next rotary position, so padded rows simply keep padding
slots masked. `reorder_cache` gathers rows for beam search.

Shapes: b batch, s sequence, T cache length, L layers, K kv heads, hd head_dim, V vocab.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from gream_jax.model.config import ModelConfig
from gream_jax.model.decoder import (Decoder, cache_mask, full_sequence_mask,
                                     positions_from_mask)
from gream_jax.model.sharding import named_sharding

Params = dict[str, Any]


@flax.struct.dataclass
class KVCache:
    # Keys/values in the layout the attention einsums contract directly ((b, K) batch dims, hd
    # contracted): a decode step writes one slot per layer in place and never transposes the cache.
    k: jax.Array          # [L, b, K, T, hd]
    v: jax.Array          # [L, b, K, T, hd]
    mask: jax.Array       # [b, T] bool: slot holds a real token
    index: jax.Array      # [] int32: next slot to write (same for every row)
    positions: jax.Array  # [b] int32: rotary position of the row's next token


def _dummy_inputs():
    tokens = jnp.zeros((1, 1), jnp.int32)
    return tokens, tokens, full_sequence_mask(jnp.ones((1, 1), jnp.int32))


def _abstract_boxed_params(model_cfg: ModelConfig):
    return jax.eval_shape(
        lambda rng: Decoder(model_cfg).init(rng, *_dummy_inputs())["params"],
        jax.random.PRNGKey(0))


def param_logical_axes(model_cfg: ModelConfig) -> Params:
    """Pytree (same structure as params) of tuples of logical axis names per weight."""
    specs = nn.get_partition_spec(_abstract_boxed_params(model_cfg))
    return jax.tree.map(lambda spec: tuple(spec), specs,
                        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def param_shapes(model_cfg: ModelConfig) -> Params:
    """Pytree of jax.ShapeDtypeStruct for every weight."""
    return nn.meta.unbox(_abstract_boxed_params(model_cfg))


def param_shardings(model_cfg: ModelConfig, mesh: Mesh, rules=None) -> Params:
    """Pytree of NamedSharding per weight: logical axes -> mesh rules (`rules` or the config's)."""
    rules = rules or model_cfg.rules
    return jax.tree.map(lambda axes, shape: named_sharding(mesh, axes, shape.shape, rules),
                        param_logical_axes(model_cfg), param_shapes(model_cfg),
                        is_leaf=lambda x: isinstance(x, tuple))


def init_params(model_cfg: ModelConfig, rng: jax.Array, mesh: Mesh, rules=None) -> Params:
    """Random weights (normal(initializer_range), norms 1, LoRA B 0), created sharded."""
    shardings = param_shardings(model_cfg, mesh, rules)
    init = lambda r: nn.meta.unbox(Decoder(model_cfg).init(r, *_dummy_inputs())["params"])
    return jax.jit(init, out_shardings=shardings)(rng)


def forward(params: Params, model_cfg: ModelConfig, tokens, attention_mask=None, positions=None,
            segment_ids=None, return_hidden: bool = False, dropout_rate: float = 0.0,
            dropout_rng: jax.Array | None = None, mask=None):
    """tokens/attention_mask [b, s] -> logits [b, s, V] float32 (or hidden [b, s, d] float32).

    positions default to the count of real tokens before each token (left or right padding);
    with segment_ids (packing) attention never crosses segments and positions restart.
    attention_mask=None and segment_ids=None declare unpadded rows of one sequence each: attention
    is then plain causal with no mask array (cuDNN's causal fast path on GPU) and positions
    default to 0..s-1.
    dropout_rate > 0 (training): embedding and residual-branch dropout drawn from `dropout_rng`
    (required then); 0 is the exact inference graph.
    mask: an explicit attention mask [b, 1, s, s] bool (True = may attend), e.g.
    `decoder.shared_prefix_layout`'s; it replaces attention_mask / segment_ids and needs positions.
    """
    if dropout_rate > 0 and dropout_rng is None:
        raise ValueError(f"forward(dropout_rate={dropout_rate}) needs a dropout_rng")
    if mask is not None:
        if positions is None or attention_mask is not None or segment_ids is not None:
            raise ValueError("forward(mask=...) takes explicit positions and no attention_mask / segment_ids")
    elif attention_mask is None and segment_ids is None:
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    else:
        if attention_mask is None:
            attention_mask = jnp.ones(tokens.shape, jnp.int32)
        attention_mask = attention_mask.astype(jnp.int32)
        if positions is None:
            positions = positions_from_mask(attention_mask, segment_ids)
        mask = full_sequence_mask(attention_mask, segment_ids)
    rngs = {"dropout": dropout_rng} if dropout_rate > 0 else None
    out, _ = Decoder(model_cfg, float(dropout_rate)).apply(
        {"params": params}, tokens, positions, mask, head="none" if return_hidden else "all", rngs=rngs)
    return out


def lm_head_rows(params: Params, model_cfg: ModelConfig):
    """The LM head as rows [V, d]: the tied embedding, or the untied `lm_head` transposed (for the
    chunked vocabulary loss, `gream_jax.train.losses.chunked_masked_nll`)."""
    if model_cfg.tie_word_embeddings:
        return params["embed_tokens"]
    return params["lm_head"].T


def init_cache(model_cfg: ModelConfig, batch: int, max_len: int) -> KVCache:
    shape = (model_cfg.num_layers, batch, model_cfg.num_kv_heads, max_len, model_cfg.head_dim)
    return KVCache(k=jnp.zeros(shape, model_cfg.jnp_dtype), v=jnp.zeros(shape, model_cfg.jnp_dtype),
                   mask=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32),
                   positions=jnp.zeros((batch,), jnp.int32))


def cache_shardings(model_cfg: ModelConfig, mesh: Mesh, batch: int, max_len: int,
                    rules=None) -> KVCache:
    """KVCache of NamedShardings (batch over data axes, kv heads over tensor) for jit out_shardings."""
    rules = rules or model_cfg.rules
    kv_shape = (model_cfg.num_layers, batch, model_cfg.num_kv_heads, max_len, model_cfg.head_dim)
    kv = named_sharding(mesh, ("layers", "batch", "kv_heads", "cache_length", "head_dim"),
                        kv_shape, rules)
    return KVCache(k=kv, v=kv,
                   mask=named_sharding(mesh, ("batch", "cache_length"), (batch, max_len), rules),
                   index=named_sharding(mesh, (), (), rules),
                   positions=named_sharding(mesh, ("batch",), (batch,), rules))


def _extend(params, model_cfg, tokens, attention_mask, cache: KVCache, attend_len: int | None = None):
    """Writes s new tokens at cache.index for every row; returns last-token logits [b, V].

    attend_len (static): attention reads only the cache's first attend_len slots (the attention
    mask is that wide, and `layers.Attention` slices the cache to the mask). The caller
    guarantees cache.index + s <= attend_len, so no valid slot is left out and the result is the
    full-cache result; `gream_jax.infer.windows` runs decode loops that way."""
    s = tokens.shape[1]
    attention_mask = attention_mask.astype(jnp.int32)
    positions = cache.positions[:, None] + jnp.maximum(jnp.cumsum(attention_mask, -1) - 1, 0)
    slot_valid = jax.lax.dynamic_update_slice(cache.mask, attention_mask > 0, (0, cache.index))
    seen = slot_valid if attend_len is None or attend_len >= slot_valid.shape[1] else slot_valid[:, :attend_len]
    mask = cache_mask(seen, cache.index, s)
    logits, (k, v) = Decoder(model_cfg).apply(
        {"params": params}, tokens, positions, mask, cache_kv=(cache.k, cache.v),
        write_index=cache.index, head="last")
    new_cache = KVCache(k=k, v=v, mask=slot_valid, index=cache.index + s,
                        positions=cache.positions + jnp.sum(attention_mask, -1))
    return logits[:, 0], new_cache


def prefill(params: Params, model_cfg: ModelConfig, tokens, attention_mask, cache: KVCache):
    """tokens [b, s] LEFT-padded prompts -> (logits of each row's last token [b, V], cache).

    Appends at cache.index, so a fresh cache gets the prompt in slots [0, s); calling it again
    appends a further chunk (chunked prefill)."""
    return _extend(params, model_cfg, tokens, attention_mask, cache)


def decode_step(params: Params, model_cfg: ModelConfig, tokens, cache: KVCache, attend_len: int | None = None):
    """tokens [b] (one new token per row) -> (next-token logits [b, V], cache).

    attend_len (static, optional): read only the cache's first attend_len slots; needs
    cache.index < attend_len (see `_extend`). A step's cost grows with the slots it reads, so
    decode loops that know how far they have written pass the smallest window that covers it."""
    return _extend(params, model_cfg, tokens[:, None], jnp.ones((tokens.shape[0], 1), jnp.int32),
                   cache, attend_len)


def reorder_cache(cache: KVCache, indices) -> KVCache:
    """Row b of the result is row indices[b] of `cache` (beam search parent selection)."""
    return KVCache(k=jnp.take(cache.k, indices, axis=1), v=jnp.take(cache.v, indices, axis=1),
                   mask=jnp.take(cache.mask, indices, axis=0), index=cache.index,
                   positions=jnp.take(cache.positions, indices, axis=0))
