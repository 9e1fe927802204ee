"""ModelConfig: the static description of a Qwen2/Qwen3 decoder.

Frozen and hashable (only ints, floats, bools, strings and tuples), so it can be passed
as a static argument to `jax.jit` (`static_argnames="model_cfg"`). It is saved next to
every checkpoint as `model_config.json` (`to_dict`/`from_dict`) and converted to and from
Hugging Face `config.json` in `gream_jax/model/hf_config.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ARCHITECTURES = ("qwen2", "qwen3")
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "einsum")
# Rematerialisation policies for each decoder layer (see layers.py):
# none = keep every activation; full = recompute the whole layer in the backward pass;
# dots = save matmul outputs only; dots_no_batch = save only weight matmuls (not attention).
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPES = ("float32", "bfloat16", "float16")


class ModelConfigError(ValueError):
    """A model configuration that cannot be built; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 512                 # rows of the embedding / columns of the LM head
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    qk_norm: bool = True                  # Qwen3: per-head RMSNorm on q and k before RoPE
    qkv_bias: bool = False                # Qwen2: biases on q, k and v projections
    max_position_embeddings: int = 4096
    architecture: str = "qwen3"           # "qwen2" | "qwen3" (what export writes as model_type)
    param_dtype: str = "float32"
    dtype: str = "float32"                # compute dtype; logits are always float32
    remat: str = "none"
    scan_layers: bool = True              # False = unrolled loop over the same stacked params
    attention: str = "xla"                # "xla" | "cudnn" (GPU, bf16/fp16) | "einsum" (reference)
    initializer_range: float = 0.02
    # LoRA: rank 0 disables adapters. Targets are projection names from PROJECTIONS.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # Logical-axis rules for activation constraints; () = gream_jax.mesh.DEFAULT_RULES.
    sharding_rules: tuple = ()
    # Token ids the checkpoint declares (HF config.json); -1 = unknown.
    bos_token_id: int = -1
    eos_token_id: int = -1
    pad_token_id: int = -1
    # Vocabulary resize record (tokenizer.resize_vocab): original rows, 0 = never resized.
    resized_from_vocab_size: int = 0

    def __post_init__(self):
        validate_model_config(self)

    # ---- derived -------------------------------------------------------------------
    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def jnp_param_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

    @property
    def rules(self):
        from gream_jax import mesh as mesh_lib
        return self.sharding_rules or mesh_lib.DEFAULT_RULES

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["sharding_rules"] = [[n, list(a) if isinstance(a, tuple) else a]
                               for n, a in self.sharding_rules]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelConfigError(f"model config: unknown fields {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "lora_targets" in d:
            d["lora_targets"] = tuple(d["lora_targets"])
        if "sharding_rules" in d:
            d["sharding_rules"] = tuple(
                (n, tuple(a) if isinstance(a, list) else a) for n, a in d["sharding_rules"])
        return cls(**d)


def validate_model_config(c: ModelConfig) -> None:
    def bad(field, why):
        raise ModelConfigError(f"model config field {field}={getattr(c, field)!r}: {why}")

    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "max_position_embeddings"):
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            bad(name, "must be a positive int")
    if c.num_heads % c.num_kv_heads:
        bad("num_kv_heads", f"must divide num_heads={c.num_heads} (grouped-query attention)")
    if c.head_dim % 2:
        bad("head_dim", "must be even (rotary embeddings rotate pairs)")
    if c.architecture not in ARCHITECTURES:
        bad("architecture", f"must be one of {ARCHITECTURES}")
    # The two architectures differ exactly here; keeping them coherent makes every
    # config exportable to the matching transformers class.
    if c.architecture == "qwen2" and (not c.qkv_bias or c.qk_norm):
        bad("architecture", "qwen2 has q/k/v biases and no q/k norm (qkv_bias=True, qk_norm=False)")
    if c.architecture == "qwen3" and (c.qkv_bias or not c.qk_norm):
        bad("architecture", "qwen3 has q/k norm and no q/k/v biases (qk_norm=True, qkv_bias=False)")
    for name in ("param_dtype", "dtype"):
        if getattr(c, name) not in DTYPES:
            bad(name, f"must be one of {DTYPES}")
    if c.remat not in REMAT_POLICIES:
        bad("remat", f"must be one of {REMAT_POLICIES}")
    if c.attention not in ATTENTION_IMPLEMENTATIONS:
        bad("attention", f"must be one of {ATTENTION_IMPLEMENTATIONS}")
    if c.attention == "cudnn" and c.dtype not in ("bfloat16", "float16"):
        bad("attention", f"cuDNN fused attention needs dtype bfloat16 or float16, not {c.dtype!r}")
    if c.rope_theta <= 0:
        bad("rope_theta", "must be positive")
    if c.rms_norm_eps <= 0:
        bad("rms_norm_eps", "must be positive")
    if not isinstance(c.lora_rank, int) or c.lora_rank < 0:
        bad("lora_rank", "must be a non-negative int")
    if not isinstance(c.lora_targets, tuple):
        bad("lora_targets", "must be a tuple of projection names")
    for t in c.lora_targets:
        if t not in PROJECTIONS:
            bad("lora_targets", f"unknown projection {t!r}; known: {PROJECTIONS}")
    if not isinstance(c.sharding_rules, tuple):
        bad("sharding_rules", "must be a tuple of (logical_axis, mesh_axes) pairs")
