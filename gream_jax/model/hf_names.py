"""Declarative map between Hugging Face tensor names and JAX parameter paths.

Each `TensorRule` says: HF tensor `hf_name` (with `{layer}` for per-layer tensors), viewed as
`view` (HF dims split into groups, e.g. q_proj.weight [H*hd, d] -> ((H, hd), (d,))), then
permuted by `perm` gives the JAX weight (q kernel [d, H, hd] = view dims (2, 0, 1)).
Per-layer weights are stacked on a leading `layers` axis. `pad_dim` marks the view dim that
may be longer in JAX than in the file (vocabulary padding; extra rows are zeros on load and
kept on export). Loading and export both walk this one table, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gream_jax.model.config import ModelConfig

IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorRule:
    hf_name: str                                  # "model.layers.{layer}.self_attn.q_proj.weight"
    param_path: tuple[str, ...]                   # ("layers", "self_attn", "q_proj", "kernel")
    view: tuple[tuple[int, ...], ...]             # HF dims -> groups of view dims
    perm: tuple[int, ...]                         # param dim i = view dim perm[i]
    per_layer: bool = False
    pad_dim: int | None = None                    # view dim allowed to be padded (vocab)

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return tuple(math.prod(g) for g in self.view)

    @property
    def view_shape(self) -> tuple[int, ...]:
        return tuple(d for g in self.view for d in g)

    @property
    def param_shape(self) -> tuple[int, ...]:
        v = self.view_shape
        return tuple(v[p] for p in self.perm)

    def names(self, num_layers: int) -> list[str]:
        if not self.per_layer:
            return [self.hf_name]
        return [self.hf_name.format(layer=i) for i in range(num_layers)]

    def to_hf(self, weight: np.ndarray, hf_rows: int | None = None) -> np.ndarray:
        """One layer's JAX weight -> HF tensor (inverse permutation, then merge groups)."""
        hf = np.transpose(weight, np.argsort(self.perm)).reshape(self.hf_shape)
        if hf_rows is not None and self.pad_dim is not None:
            hf = np.take(hf, np.arange(hf_rows), axis=self.pad_dim)
        return np.ascontiguousarray(hf)


def tensor_rules(cfg: ModelConfig) -> list[TensorRule]:
    d, f, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    H, K, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layer = "model.layers.{layer}."
    rules = [TensorRule("model.embed_tokens.weight", ("embed_tokens",), ((V,), (d,)), (0, 1),
                        pad_dim=0),
             TensorRule("model.norm.weight", ("norm", "scale"), ((d,),), (0,))]
    if not cfg.tie_word_embeddings:
        rules.append(TensorRule("lm_head.weight", ("lm_head",), ((V,), (d,)), (1, 0), pad_dim=0))

    def per_layer(name, path, view, perm):
        rules.append(TensorRule(layer + name, ("layers",) + path, view, perm, per_layer=True))

    per_layer("input_layernorm.weight", ("input_layernorm", "scale"), ((d,),), (0,))
    per_layer("post_attention_layernorm.weight", ("post_attention_layernorm", "scale"), ((d,),), (0,))
    for proj, n in (("q_proj", H), ("k_proj", K), ("v_proj", K)):
        # [n*hd, d] -> view (n, hd, d) -> kernel [d, n, hd]
        per_layer(f"self_attn.{proj}.weight", ("self_attn", proj, "kernel"), ((n, hd), (d,)), (2, 0, 1))
        if cfg.qkv_bias:
            per_layer(f"self_attn.{proj}.bias", ("self_attn", proj, "bias"), ((n, hd),), (0, 1))
    # o_proj [d, H*hd] -> view (d, H, hd) -> kernel [H, hd, d]
    per_layer("self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"), ((d,), (H, hd)), (1, 2, 0))
    if cfg.qk_norm:
        per_layer("self_attn.q_norm.weight", ("self_attn", "q_norm", "scale"), ((hd,),), (0,))
        per_layer("self_attn.k_norm.weight", ("self_attn", "k_norm", "scale"), ((hd,),), (0,))
    per_layer("mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), ((f,), (d,)), (1, 0))
    per_layer("mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), ((f,), (d,)), (1, 0))
    per_layer("mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), ((d,), (f,)), (1, 0))
    return rules


def get_path(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: dict, path, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
