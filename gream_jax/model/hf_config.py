"""Hugging Face `config.json` <-> ModelConfig for Qwen2 / Qwen2.5 / Qwen3 dense decoders.

Anything the JAX model does not implement is refused with the offending field named
(scaled or multimodal RoPE, sliding-window attention, mixture-of-experts, quantised weights,
non-SiLU activations), rather than loaded into a model that would compute something else.
"""

from __future__ import annotations

from typing import Any

from gream_jax.model.config import ModelConfig, ModelConfigError

_ARCH_CLASS = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


class UnsupportedCheckpointError(ModelConfigError):
    """A config.json describing a model this implementation would compute incorrectly."""


def _first_id(value) -> int:
    if value is None:
        return -1
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else -1
    return int(value)


def _rope_theta(hf: dict[str, Any], where: str) -> float:
    params = hf.get("rope_parameters")
    scaling = hf.get("rope_scaling")
    for field, block in (("rope_parameters", params), ("rope_scaling", scaling)):
        if block:
            kind = block.get("rope_type", block.get("type", "default"))
            if kind != "default":
                raise UnsupportedCheckpointError(
                    f"{where}: {field}.rope_type={kind!r} is not supported (only plain RoPE)")
            if block.get("mrope_section"):
                raise UnsupportedCheckpointError(f"{where}: {field}.mrope_section (multimodal RoPE) "
                                                 "is not supported")
    if params and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(hf.get("rope_theta", 10000.0))


def model_config_from_hf(hf: dict[str, Any], where: str = "config.json", **overrides) -> ModelConfig:
    """Maps a parsed config.json to ModelConfig; `overrides` set numerics/LoRA/etc. fields."""
    model_type = hf.get("model_type")
    if model_type not in _ARCH_CLASS:
        raise UnsupportedCheckpointError(
            f"{where}: model_type={model_type!r} is not supported; expected one of {sorted(_ARCH_CLASS)}")
    refusals = [
        ("use_sliding_window", bool(hf.get("use_sliding_window")), "sliding-window attention"),
        ("num_experts", bool(hf.get("num_experts")), "mixture-of-experts"),
        ("num_local_experts", bool(hf.get("num_local_experts")), "mixture-of-experts"),
        ("quantization_config", bool(hf.get("quantization_config")), "quantised weights"),
        ("use_mrope", bool(hf.get("use_mrope")), "multimodal RoPE"),
        ("hidden_act", hf.get("hidden_act", "silu") != "silu", "activations other than silu"),
        ("attention_bias", model_type == "qwen3" and bool(hf.get("attention_bias")),
         "Qwen3 attention biases"),
    ]
    for field, refused, what in refusals:
        if refused:
            raise UnsupportedCheckpointError(f"{where}: {field}={hf.get(field)!r}: {what} is not supported")
    layer_types = hf.get("layer_types") or []
    odd = sorted({t for t in layer_types if t != "full_attention"})
    if odd:
        raise UnsupportedCheckpointError(f"{where}: layer_types contains {odd}; only full_attention "
                                         "layers are supported")
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads"):
        if field not in hf:
            raise UnsupportedCheckpointError(f"{where}: required field {field} is missing")
    heads = int(hf["num_attention_heads"])
    head_dim = hf.get("head_dim") or int(hf["hidden_size"]) // heads
    fields = dict(
        vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]), num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(head_dim), rope_theta=_rope_theta(hf, where),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=model_type == "qwen3", qkv_bias=model_type == "qwen2",
        max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
        architecture=model_type, initializer_range=float(hf.get("initializer_range", 0.02)),
        bos_token_id=_first_id(hf.get("bos_token_id")), eos_token_id=_first_id(hf.get("eos_token_id")),
        pad_token_id=_first_id(hf.get("pad_token_id")),
        resized_from_vocab_size=int(hf.get("gream_resized_from_vocab_size", 0)),
    )
    fields.update(overrides)
    try:
        return ModelConfig(**fields)
    except ModelConfigError as e:
        raise ModelConfigError(f"{where}: {e}") from None


def hf_config_from_model_config(cfg: ModelConfig) -> dict[str, Any]:
    """config.json for transformers' Qwen2ForCausalLM / Qwen3ForCausalLM (LoRA already merged)."""
    out = {
        "architectures": [_ARCH_CLASS[cfg.architecture]],
        "model_type": cfg.architecture,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "torch_dtype": cfg.param_dtype,
        "dtype": cfg.param_dtype,
        "gream_resized_from_vocab_size": cfg.resized_from_vocab_size,
    }
    if cfg.architecture == "qwen3":
        out["attention_bias"] = False
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(cfg, name)
        out[name] = None if value < 0 else value
    return out
