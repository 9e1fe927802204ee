"""LoRA adapters on the decoder's projections: add, mask for training, merge for export.

Adapters live inside the params pytree next to the frozen kernel they adapt
(`.../q_proj/{kernel, lora_a, lora_b}`), so the same `forward` serves both; the trainer
freezes everything else with `trainable_mask(params)` (e.g. `optax.masked` or
`optax.multi_transform`). B starts at zero, so adding adapters never changes the model.
Merging folds `scale * A @ B` into the kernel and returns a plain (rank-0) model config,
which is what export and inference of a finished model use.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from gream_jax.model.config import ModelConfig

LORA_LEAVES = ("lora_a", "lora_b")


def _path_names(path) -> tuple[str, ...]:
    return tuple(getattr(k, "key", str(k)) for k in path)


def trainable_mask(params) -> Any:
    """Pytree of bools: True for LoRA leaves (the only trainable weights in LoRA fine-tuning)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _path_names(p)[-1] in LORA_LEAVES, params)


def init_lora_leaves(params: dict, shapes, shardings, rng: jax.Array) -> None:
    """Fills every lora_a (normal, std 1/sqrt(fan_in)) / lora_b (zeros) leaf of `shapes` into
    `params` in place, each created directly in its sharding."""
    leaves = [(p, s) for p, s in jax.tree_util.tree_flatten_with_path(shapes)[0]
              if _path_names(p)[-1] in LORA_LEAVES]
    for i, (path, shape) in enumerate(leaves):
        names = _path_names(path)
        sharding = shardings
        for k in names:
            sharding = sharding[k]
        if names[-1] == "lora_b":
            make = lambda shape=shape: jnp.zeros(shape.shape, shape.dtype)
        else:
            fan_in = math.prod(shape.shape[1:-1])   # [layers, *in, r]
            key = jax.random.fold_in(rng, i)
            make = lambda shape=shape, key=key, fan_in=fan_in: (
                jax.random.normal(key, shape.shape, jnp.float32) / math.sqrt(fan_in)).astype(shape.dtype)
        node = params
        for k in names[:-1]:
            node = node.setdefault(k, {})
        node[names[-1]] = jax.jit(make, out_shardings=sharding)()


def add_lora(params: dict, model_cfg: ModelConfig, rng: jax.Array, mesh, rank: int, alpha: float,
             targets: tuple[str, ...], rules=None) -> tuple[dict, ModelConfig]:
    """Returns (params with fresh adapters on `targets`, config with lora fields set)."""
    from gream_jax.model import api
    if model_cfg.lora_rank:
        raise ValueError("model already has LoRA adapters; merge_lora first")
    cfg = model_cfg.replace(lora_rank=rank, lora_alpha=alpha, lora_targets=tuple(targets))
    out = jax.tree.map(lambda x: x, params)
    init_lora_leaves(out, api.param_shapes(cfg), api.param_shardings(cfg, mesh, rules), rng)
    return out, cfg


def _merge_projection(node: dict, scale: float) -> dict:
    kernel, a, b = node["kernel"], node["lora_a"], node["lora_b"]
    L, r = a.shape[0], a.shape[-1]
    delta = jnp.einsum("lir,lro->lio", a.reshape(L, -1, r).astype(jnp.float32),
                       b.reshape(L, r, -1).astype(jnp.float32)).reshape(kernel.shape)
    merged = {k: v for k, v in node.items() if k not in LORA_LEAVES}
    merged["kernel"] = (kernel.astype(jnp.float32) + scale * delta).astype(kernel.dtype)
    return merged


def _merge_tree(node, scale: float):
    if isinstance(node, dict):
        if "lora_a" in node:
            return _merge_projection(node, scale)
        return {k: _merge_tree(v, scale) for k, v in node.items()}
    return node


def _without_lora(node):
    if isinstance(node, dict):
        return {k: _without_lora(v) for k, v in node.items() if k not in LORA_LEAVES}
    return node


def merge_lora(params: dict, model_cfg: ModelConfig) -> tuple[dict, ModelConfig]:
    """Folds adapters into kernels: kernel + (alpha / r) * A @ B (one jitted call); every merged
    weight keeps the sharding of the kernel it replaces."""
    if not model_cfg.lora_rank:
        return params, model_cfg
    shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), _without_lora(params))
    merged = jax.jit(_merge_tree, static_argnums=1, out_shardings=shardings)(params, model_cfg.lora_scale)
    return merged, model_cfg.replace(lora_rank=0)
