"""Export to a Hugging Face directory loadable by `transformers.AutoModelForCausalLM`.

Writes config.json, generation_config.json, safetensors shards (+ index when more than one)
and the tokenizer files, all inside a temporary directory renamed into place. LoRA adapters
are merged first. The weight layout comes from the same `hf_names.tensor_rules` table the
loader uses. Only process 0 writes (every process takes part in gathering the weights).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import safetensors.numpy

from gream_jax.model.config import ModelConfig
from gream_jax.model.files import atomic_directory, to_host
from gream_jax.model.hf_config import hf_config_from_model_config
from gream_jax.model.hf_names import get_path, tensor_rules
from gream_jax.model.lora import merge_lora

DEFAULT_MAX_SHARD_BYTES = 2 * 1024 ** 3


def hf_state_dict(params: dict, model_cfg: ModelConfig, dtype: str | None = None):
    """Yields (hf_name, numpy tensor) for every weight, layer by layer (LoRA must be merged)."""
    if model_cfg.lora_rank:
        raise ValueError("hf_state_dict: merge LoRA adapters first (lora.merge_lora)")
    np_dtype = np.dtype(jax.numpy.dtype(dtype or model_cfg.param_dtype))
    for rule in tensor_rules(model_cfg):
        weight = to_host(get_path(params, rule.param_path))
        if weight.shape != ((model_cfg.num_layers,) if rule.per_layer else ()) + rule.param_shape:
            raise ValueError(f"param {'/'.join(rule.param_path)} has shape {weight.shape}, expected "
                             f"{rule.param_shape} per layer for {rule.hf_name}")
        for i, name in enumerate(rule.names(model_cfg.num_layers)):
            w = weight[i] if rule.per_layer else weight
            yield name, rule.to_hf(w).astype(np_dtype)


def export_hf(params: dict, model_cfg: ModelConfig, tokenizer, out_dir: str, dtype: str | None = None,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> str:
    """Writes a transformers-loadable directory at `out_dir` (replacing it atomically)."""
    params, model_cfg = merge_lora(params, model_cfg)
    if tokenizer is not None and tokenizer.vocab_size > model_cfg.vocab_size:
        raise ValueError(f"export_hf: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{model_cfg.vocab_size} embedding rows; call resize_vocab first")
    tensors = list(hf_state_dict(params, model_cfg, dtype))
    shards, current, size = [], {}, 0
    for name, t in tensors:
        if current and size + t.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.nbytes
    shards.append(current)
    hf_config = hf_config_from_model_config(model_cfg)
    if dtype:
        hf_config["torch_dtype"] = hf_config["dtype"] = dtype
    if tokenizer is not None:
        hf_config["eos_token_id"] = tokenizer.eos_id
        hf_config["pad_token_id"] = tokenizer.pad_id
    with atomic_directory(out_dir) as tmp:
        if jax.process_index() == 0:
            _write_files(tmp, shards, tensors, hf_config, tokenizer)
    return out_dir


def _write_files(tmp: str, shards, tensors, hf_config, tokenizer) -> None:
    """safetensors shards (+ index when several), config files and tokenizer into `tmp`."""
    if len(shards) == 1:
        safetensors.numpy.save_file(shards[0], os.path.join(tmp, "model.safetensors"),
                                    metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            safetensors.numpy.save_file(shard, os.path.join(tmp, file), metadata={"format": "pt"})
            weight_map.update({name: file for name in shard})
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": sum(t.nbytes for _, t in tensors)},
                       "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2)
    with open(os.path.join(tmp, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": hf_config["eos_token_id"],
                   "pad_token_id": hf_config["pad_token_id"]}, f, indent=2)
    if tokenizer is not None:
        tokenizer.save(tmp)
