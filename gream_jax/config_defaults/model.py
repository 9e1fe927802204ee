"""Config section `config.model`: which backbone (HF checkpoint or small from-scratch Qwen3),
its size, numerics, LoRA, and how the vocabulary is extended with SID/task tokens.

Consumed by `gream_jax/model/builder.py`. The from-scratch defaults are sized for the
ML-100k run on 2 CPU cores; HF checkpoints take their architecture from config.json and
ignore the size fields.
"""

import ml_collections

from gream_jax.model import config as model_config


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Hugging Face directory (config.json, tokenizer.json, *.safetensors); "" = from scratch.
    c.checkpoint = ""
    # From-scratch Qwen3 architecture (ignored when checkpoint is set).
    c.num_layers = 2
    c.hidden_size = 128
    c.num_heads = 4
    c.num_kv_heads = 2
    c.head_dim = 32
    c.intermediate_size = 384
    c.rope_theta = 10000.0
    c.rms_norm_eps = 1e-6
    c.tie_word_embeddings = True
    c.max_position_embeddings = 2048
    # From-scratch tokenizer: byte-level BPE trained on the item texts + task prompt words.
    c.tokenizer_vocab_size = 2000
    # Numerics and execution (both backbones).
    c.param_dtype = "float32"
    c.dtype = "float32"
    c.remat = "none"              # one of gream_jax.model.config.REMAT_POLICIES
    c.scan_layers = True
    c.attention = "xla"           # "xla" | "cudnn" (GPU, bf16) | "einsum"
    # Vocabulary extension: rows are padded to a multiple of this (tensor-parallel friendly),
    # new rows = mean of existing rows + new_token_noise * (per-dim std of existing rows) * N(0,1).
    c.vocab_pad_multiple = 64
    c.new_token_noise = 0.02
    # How the SID token rows start: "default" (GREAM: mean of the backbone's rows + noise for a
    # checkpoint, random from scratch) or "index" (gream_jax/model/sid_init.py): the index's item
    # vectors (WORKDIR/index/embeddings.npy, what the RQ-KMeans quantised) on their top principal
    # directions, item tokens per item and code tokens as their items' mean, scaled to the
    # backbone rows' per-dimension mean and spread.
    c.sid_embedding_init = "default"
    # The output distribution over SID tokens (gream_jax/model/trie_softmax.py). "vocab": one
    # softmax over the whole vocabulary at every position (the reference). "trie": inside an SID a
    # token competes with its trie siblings only, elsewhere with the non-SID vocabulary plus the
    # first-level codes; a proper distribution over items whose training never multiplies by the
    # whole vocabulary (with an item-unique last level, one row per item). "level": the same,
    # except that in training an SID token competes with every token of its own level (the
    # item-unique level: every item, SASRec's dense all-items objective) at about a third of the
    # vocabulary softmax's cost on 3-token SIDs. Decoding, validation and SRPO normalise over the
    # trie children in both; the exported model records the mode and the eval and rl stages
    # refuse a config that disagrees.
    c.sid_softmax = "vocab"
    # LoRA (rank 0 = full fine-tuning). Targets from gream_jax.model.config.PROJECTIONS.
    c.lora_rank = 0
    c.lora_alpha = 16.0
    c.lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    return c


def validate(config) -> None:
    import os

    from gream_jax.config_defaults.base import ConfigError
    m = config.model
    if m.sid_softmax not in ("vocab", "trie", "level"):
        raise ConfigError(f"config.model.sid_softmax={m.sid_softmax!r}: must be 'vocab', 'trie' or 'level'")
    from gream_jax.model.sid_init import INIT_MODES
    if m.sid_embedding_init not in INIT_MODES:
        raise ConfigError(f"config.model.sid_embedding_init={m.sid_embedding_init!r}: must be one of {INIT_MODES}")
    if m.checkpoint and not os.path.isdir(m.checkpoint):
        raise ConfigError(f"config.model.checkpoint={m.checkpoint!r}: not a directory")
    if m.checkpoint and not os.path.exists(os.path.join(m.checkpoint, "config.json")):
        raise ConfigError(f"config.model.checkpoint={m.checkpoint!r}: has no config.json")
    for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                 "intermediate_size", "max_position_embeddings", "tokenizer_vocab_size",
                 "vocab_pad_multiple"):
        if int(m[name]) <= 0:
            raise ConfigError(f"config.model.{name}={m[name]!r}: must be positive")
    if m.num_heads % m.num_kv_heads:
        raise ConfigError(f"config.model.num_kv_heads={m.num_kv_heads}: must divide "
                          f"config.model.num_heads={m.num_heads}")
    if m.head_dim % 2:
        raise ConfigError(f"config.model.head_dim={m.head_dim}: must be even")
    for name, allowed in (("param_dtype", model_config.DTYPES), ("dtype", model_config.DTYPES),
                          ("remat", model_config.REMAT_POLICIES),
                          ("attention", model_config.ATTENTION_IMPLEMENTATIONS)):
        if m[name] not in allowed:
            raise ConfigError(f"config.model.{name}={m[name]!r}: must be one of {allowed}")
    if m.attention == "cudnn" and m.dtype not in ("bfloat16", "float16"):
        raise ConfigError(f"config.model.attention='cudnn' needs config.model.dtype bfloat16 or float16, "
                          f"not {m.dtype!r}")
    if m.lora_rank < 0:
        raise ConfigError(f"config.model.lora_rank={m.lora_rank}: must be >= 0")
    for t in m.lora_targets:
        if t not in model_config.PROJECTIONS:
            raise ConfigError(f"config.model.lora_targets: unknown projection {t!r}; "
                              f"known: {model_config.PROJECTIONS}")
    if m.new_token_noise < 0:
        raise ConfigError(f"config.model.new_token_noise={m.new_token_noise}: must be >= 0")
