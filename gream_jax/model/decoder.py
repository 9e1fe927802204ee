"""The full decoder: embedding -> scanned DecoderLayers -> final RMSNorm -> LM head.

Layers are always stored stacked (a leading `layers` axis on every layer weight) and run
with `nn.scan`; `scan_layers=False` unrolls that same scan, so the parameter layout (and
every checkpoint) is identical either way. `remat` wraps each layer in `nn.remat` with the
chosen policy. Masks and rotary tables are built once here and broadcast into the scan.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gream_jax.model.config import ModelConfig
from gream_jax.model.cpu_grads import head_logits
from gream_jax.model.layers import DecoderLayer, RMSNorm, rope_cos_sin
from gream_jax.model.sharding import constrain

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def positions_from_mask(attention_mask, segment_ids=None):
    """[b, s] -> [b, s] int32 rotary positions: count of real tokens before each token
    (in its own segment when segment_ids is given), so left padding starts at 0."""
    mask = attention_mask.astype(jnp.int32)
    if segment_ids is None:
        return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
    s = mask.shape[-1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]             # [b, s, s]
    lower = jnp.tril(jnp.ones((s, s), bool))[None]
    counts = jnp.sum(same & lower & (mask[:, None, :] > 0), axis=-1)
    return jnp.maximum(counts - 1, 0).astype(jnp.int32)


def full_sequence_mask(attention_mask, segment_ids=None):
    """[b, s] -> [b, 1, s, s] bool: causal, key not padding, same segment (if packed)."""
    s = attention_mask.shape[-1]
    causal = jnp.tril(jnp.ones((s, s), bool))[None, None]
    mask = causal & (attention_mask[:, None, None, :] > 0)
    if segment_ids is not None:
        mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return mask


def shared_prefix_layout(prefix_mask, response_mask):
    """One prompt followed by G responses that each continue it, as one row (RL groups).

    prefix_mask [b, W] (LEFT-padded prompt), response_mask [b, G, R] (each response RIGHT-padded)
    -> (positions [b, W + G R] int32, mask [b, 1, S, S] bool). The prompt attends causally to
    itself; a response token attends to the prompt and causally to its own response, never to
    another response, and its rotary position continues the prompt's. So every response is scored
    exactly as in its own row `prompt ++ response`, while the prompt is run once, not G times."""
    b, w = prefix_mask.shape
    _, g, r = response_mask.shape
    prefix_mask = prefix_mask.astype(jnp.int32)
    response_mask = response_mask.astype(jnp.int32)
    n_prefix = jnp.sum(prefix_mask, axis=-1)                                          # [b]
    resp_pos = n_prefix[:, None] + positions_from_mask(response_mask.reshape(b * g, r)).reshape(b, g * r)
    positions = jnp.concatenate([positions_from_mask(prefix_mask), resp_pos], axis=1)
    s = w + g * r
    group = jnp.concatenate([jnp.full((w,), -1), jnp.repeat(jnp.arange(g), r)])        # [S], -1 = prompt
    same_or_prompt = (group[:, None] == group[None, :]) | (group[None, :] < 0)
    allowed = jnp.tril(jnp.ones((s, s), bool)) & same_or_prompt                          # [S, S]
    valid = jnp.concatenate([prefix_mask, response_mask.reshape(b, g * r)], axis=1) > 0   # [b, S]
    return positions.astype(jnp.int32), allowed[None, None] & valid[:, None, None, :]


def cache_mask(slot_valid, write_index, s):
    """slot_valid [b, T] bool (after writing the new tokens) -> [b, 1, s, T]: query i sits in
    slot write_index + i and sees valid slots up to its own."""
    T = slot_valid.shape[-1]
    q_slot = write_index + jnp.arange(s)
    causal = jnp.arange(T)[None, :] <= q_slot[:, None]                    # [s, T]
    return causal[None, None] & slot_valid[:, None, None, :]


class Decoder(nn.Module):
    """tokens [b, s] -> logits [b, s|1, V] float32, or final normed hidden [b, s, d].

    mask: [b, 1, s, t] bool, or None for plain causal attention over unpadded, unpacked rows (no
    mask array at all: the fused kernels' causal path). cache_kv: None or (k, v) [L, b, K, T, hd],
    carried through the layer scan and updated in place at write_index.

    dropout_rate > 0 (training only, a regulariser for small from-scratch models; Qwen itself has
    none): dropout on the token embeddings and on each attention / MLP output before its residual
    add, as in SASRec. It needs a "dropout" RNG in `apply(..., rngs=...)`; 0 (inference, RL,
    every pretrained backbone) builds exactly the dropout-free graph."""
    cfg: ModelConfig
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, tokens, positions, mask, cache_kv=None, write_index=None, head="all"):
        cfg = self.cfg
        embedding = self.param(
            "embed_tokens", nn.with_logical_partitioning(
                nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")),
            (cfg.vocab_size, cfg.hidden_size), cfg.jnp_param_dtype)
        # Ids must lie in [0, V); "clip" keeps stray ids at padded positions from turning into
        # NaN rows (jnp.take's default fill) that masked attention would still multiply by zero.
        x = jnp.take(embedding, tokens, axis=0, mode="clip").astype(cfg.jnp_dtype)
        if self.dropout_rate > 0:
            x = nn.Dropout(self.dropout_rate, deterministic=False, name="embed_dropout")(x)
        x = constrain(x, ("batch", "length", "embed"), cfg.rules)
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)

        layer = DecoderLayer
        if cfg.remat != "none":
            layer = nn.remat(layer, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)
        stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                        in_axes=(0, nn.broadcast), length=cfg.num_layers,
                        unroll=1 if cfg.scan_layers else cfg.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
        layer_index = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        (x, new_cache), _ = stack(cfg, self.dropout_rate, name="layers")(
            (x, cache_kv), layer_index, (cos, sin, mask, write_index))
        x = RMSNorm(cfg.rms_norm_eps, cfg.jnp_dtype, cfg.jnp_param_dtype, name="norm")(x)

        if head == "none":
            return x.astype(jnp.float32), new_cache
        if head == "last":
            x = x[:, -1:]
        if cfg.tie_word_embeddings:
            logits = head_logits(x, embedding.astype(cfg.jnp_dtype))
        else:
            kernel = self.param("lm_head", nn.with_logical_partitioning(
                nn.initializers.normal(cfg.initializer_range), ("embed", "vocab")),
                (cfg.hidden_size, cfg.vocab_size), cfg.jnp_param_dtype)
            logits = jnp.einsum("bsd,dv->bsv", x, kernel.astype(cfg.jnp_dtype),
                                preferred_element_type=jnp.float32)
        logits = constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"), cfg.rules)
        return logits, new_cache
