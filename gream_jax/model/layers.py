"""Building blocks of the Qwen2/Qwen3 decoder layer (Flax Linen).

Why Linen rather than NNX: the rest of gream_jax treats parameters as a plain pytree of
`jax.Array`s handed to pure functions (`optax` updates them, `orbax` saves them, `jax.jit`
donates them, the Hugging Face loader builds them leaf by leaf straight into their
shardings). Linen's `module.apply({"params": params}, ...)` is exactly that contract, with
no object state to split or merge, and `nn.scan` / `nn.remat` / `nn.with_logical_partitioning`
give stacked layers, rematerialisation and logical axis names with one line each.

Shapes: b = batch, s = query length, t = key length, d = hidden, H = heads, K = kv heads,
hd = head_dim, F = intermediate size. Every weight is created with its logical axis names;
activations are constrained through `sharding.constrain` (mesh rules decide placement).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gream_jax.model.config import ModelConfig
from gream_jax.model.cpu_grads import project
from gream_jax.model.sharding import constrain

_NEG_INF = float(jnp.finfo(jnp.float32).min)


class RMSNorm(nn.Module):
    """Qwen RMSNorm: normalise in float32, cast back, then scale (same order as PyTorch)."""
    eps: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * y.astype(self.dtype)


class Projection(nn.Module):
    """y = x . kernel (+ bias) (+ LoRA: scale * (x . A) . B), contracting x's last len(in_shape) dims.

    kernel [*in_shape, *out_shape]; lora_a [*in_shape, r]; lora_b [r, *out_shape] (zero-init,
    so a freshly wrapped model computes exactly the base model).
    """
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    cfg: ModelConfig
    use_bias: bool = False
    use_lora: bool = False

    @nn.compact
    def __call__(self, x):
        cfg, n = self.cfg, len(self.in_shape)
        dtype, pdtype = cfg.jnp_dtype, cfg.jnp_param_dtype
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(
                nn.initializers.normal(cfg.initializer_range), self.in_axes + self.out_axes),
            self.in_shape + self.out_shape, pdtype)
        y = project(x.astype(dtype), kernel.astype(dtype), n)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.out_axes),
                              self.out_shape, pdtype)
            y = y + bias.astype(dtype)
        if self.use_lora:
            r = cfg.lora_rank
            fan_in = math.prod(self.in_shape)
            a = self.param("lora_a", nn.with_logical_partitioning(
                nn.initializers.normal(1.0 / math.sqrt(fan_in)), self.in_axes + ("lora_rank",)),
                self.in_shape + (r,), pdtype)
            b = self.param("lora_b", nn.with_logical_partitioning(
                nn.initializers.zeros, ("lora_rank",) + self.out_axes), (r,) + self.out_shape, pdtype)
            low = jnp.tensordot(x.astype(dtype), a.astype(dtype), axes=n)
            y = y + cfg.lora_scale * jnp.tensordot(low, b.astype(dtype), axes=1)
        return y


def rope_cos_sin(positions, head_dim: int, theta: float):
    """positions [b, s] -> cos, sin [b, s, 1, hd] (float32, HF 'rotate_half' layout)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq          # [b, s, hd/2]
    # cos/sin of each frequency once, then duplicated (== cos of the duplicated angles, bit for
    # bit); the barrier keeps XLA:CPU from evaluating them inside a strided relayout (measured
    # at ~0.4 s per step on the medium preset).
    cos, sin = jax.lax.optimization_barrier((jnp.cos(freqs), jnp.sin(freqs)))
    dup = lambda t: jnp.concatenate([t, t], axis=-1)[:, :, None, :]       # [b, s, 1, hd]
    return dup(cos), dup(sin)


def apply_rope(x, cos, sin):
    """x [b, s, n, hd]: x * cos + rotate_half(x) * sin, computed in x's dtype like PyTorch."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)


def attend(q, k, v, mask, cfg: ModelConfig):
    """q [b,s,H,hd], k/v [b,t,K,hd], mask [b,1,s,t] bool (True = may attend) -> [b,s,H,hd].

    mask=None means plain causal attention over unpadded rows (s == t): no mask array is built,
    so `jax.nn.dot_product_attention(is_causal=True)` can take cuDNN's causal kernel instead of
    the masked (biased) one."""
    scale = 1.0 / math.sqrt(cfg.head_dim)
    if cfg.attention in ("xla", "cudnn"):
        # One-token decode steps gain nothing from the fused kernel: use XLA there.
        impl = "xla" if q.shape[1] == 1 else cfg.attention
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=mask is None,
                                            implementation=impl)
    if mask is None:
        s, t = q.shape[1], k.shape[1]
        mask = jnp.tril(jnp.ones((s, t), bool))[None, None]
    return _grouped_attention(q, k, v, mask, scale, "btkh")


def _grouped_attention(q, k, v, mask, scale, kv_layout: str):
    """Grouped-query attention by einsum, with k/v in `kv_layout`: "btkh" ([b,t,K,hd], the
    projections' layout) or "bkth" ([b,K,T,hd], the KV cache's), contracted where they lie."""
    b, s, H, hd = q.shape
    K = k.shape[kv_layout.index("k")]
    qg = q.reshape(b, s, K, H // K, hd)
    scores = jnp.einsum(f"bskgh,{kv_layout}->bkgst", qg, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask[:, :, None], scores, _NEG_INF)                # mask [b,1,1,s,t]
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum(f"bkgst,{kv_layout}->bskgh", probs, v)
    return out.reshape(b, s, H, hd)


def attend_cached(q, k, v, mask, cfg: ModelConfig):
    """q [b,s,H,hd], cache k/v [b,K,T,hd] (the KV cache's own layout), mask [b,1,s,T] -> [b,s,H,hd].

    The einsums contract the cache in its stored layout ((b, K) batch dims, hd contracted, T kept),
    so a decode step reads each layer's cache without transposing or copying it. Multi-token
    prefill with cuDNN transposes once to the fused kernel's [b, T, K, hd] layout instead."""
    if cfg.attention == "cudnn" and q.shape[1] > 1:
        return attend(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, cfg)
    return _grouped_attention(q, k, v, mask, 1.0 / math.sqrt(cfg.head_dim), "bkth")


class Attention(nn.Module):
    cfg: ModelConfig

    def _proj(self, name, in_shape, out_shape, in_axes, out_axes, bias):
        cfg = self.cfg
        return Projection(in_shape, out_shape, in_axes, out_axes, cfg, use_bias=bias,
                          use_lora=cfg.lora_rank > 0 and name in cfg.lora_targets, name=name)

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache, layer_index, write_index):
        """cache: None, or the whole stack (k, v), each [L, b, K, T, hd]; this layer writes its new
        keys/values at (layer_index, :, :, write_index) in place and attends over its slice."""
        cfg = self.cfg
        d, H, K, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = self._proj("q_proj", (d,), (H, hd), ("embed",), ("heads", "head_dim"), cfg.qkv_bias)(x)
        k = self._proj("k_proj", (d,), (K, hd), ("embed",), ("kv_heads", "head_dim"), cfg.qkv_bias)(x)
        v = self._proj("v_proj", (d,), (K, hd), ("embed",), ("kv_heads", "head_dim"), cfg.qkv_bias)(x)
        if cfg.qk_norm:
            norm = dict(eps=cfg.rms_norm_eps, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                        axis_name="head_dim")
            q = RMSNorm(**norm, name="q_norm")(q)
            k = RMSNorm(**norm, name="k_norm")(k)
        q = constrain(apply_rope(q, cos, sin), ("batch", "length", "heads", "head_dim"), cfg.rules)
        k = constrain(apply_rope(k, cos, sin), ("batch", "length", "kv_heads", "head_dim"), cfg.rules)
        v = constrain(v, ("batch", "length", "kv_heads", "head_dim"), cfg.rules)
        if cache is None:
            out = attend(q, k, v, mask, cfg)
        else:
            ck, cv = cache
            at = (layer_index, 0, 0, write_index, 0)
            ck = jax.lax.dynamic_update_slice(ck, k.transpose(0, 2, 1, 3)[None].astype(ck.dtype), at)
            cv = jax.lax.dynamic_update_slice(cv, v.transpose(0, 2, 1, 3)[None].astype(cv.dtype), at)
            cache = (ck, cv)
            layer_k = jax.lax.dynamic_index_in_dim(ck, layer_index, 0, keepdims=False)  # [b, K, T, hd]
            layer_v = jax.lax.dynamic_index_in_dim(cv, layer_index, 0, keepdims=False)
            seen = mask.shape[-1]   # a decode window (api._extend): attend over the first `seen` slots only
            if seen < layer_k.shape[2]:
                layer_k, layer_v = layer_k[:, :, :seen], layer_v[:, :, :seen]
            out = attend_cached(q, layer_k.astype(q.dtype), layer_v.astype(q.dtype), mask, cfg)
        out = constrain(out, ("batch", "length", "heads", "head_dim"), cfg.rules)
        y = self._proj("o_proj", (H, hd), (d,), ("heads", "head_dim"), ("embed",), False)(out)
        return y, cache


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        d, f = cfg.hidden_size, cfg.intermediate_size

        def proj(name, i, o, ia, oa):
            return Projection((i,), (o,), (ia,), (oa,), cfg,
                              use_lora=cfg.lora_rank > 0 and name in cfg.lora_targets, name=name)

        gate = proj("gate_proj", d, f, "embed", "mlp")(x)
        up = proj("up_proj", d, f, "embed", "mlp")(x)
        h = constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"), cfg.rules)
        return proj("down_proj", f, d, "mlp", "embed")(h)


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)); then + mlp(norm(.)). Scanned over layers.

    The carry is (x [b, s, d], cache): the KV cache travels through the layer scan as carry, not as
    a scanned input/output, so each step updates it in place instead of restacking all layers.
    dropout_rate > 0: dropout on the attention and MLP outputs before each residual add (training)."""
    cfg: ModelConfig
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, carry, layer_index, consts):
        cfg = self.cfg
        x, cache = carry
        cos, sin, mask, write_index = consts
        norm = dict(eps=cfg.rms_norm_eps, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
        h, cache = Attention(cfg, name="self_attn")(
            RMSNorm(**norm, name="input_layernorm")(x), cos, sin, mask, cache, layer_index, write_index)
        drop = ((lambda y, name: nn.Dropout(self.dropout_rate, deterministic=False, name=name)(y))
                if self.dropout_rate > 0 else (lambda y, name: y))
        x = constrain(x + drop(h, "attn_dropout"), ("batch", "length", "embed"), cfg.rules)
        h = MLP(cfg, name="mlp")(RMSNorm(**norm, name="post_attention_layernorm")(x))
        x = x + drop(h, "mlp_dropout")
        return (constrain(x, ("batch", "length", "embed"), cfg.rules), cache), None
