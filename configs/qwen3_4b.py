"""Qwen3-4B backbone for GREAM (the paper's backbone size; shapes of its published config.json),
FSDP x tensor parallelism.

    python -m gream_jax.main --config=configs/qwen3_4b.py:beauty --workdir=WORKDIR \
        --config.model.checkpoint=/path/to/Qwen3-4B

Architecture (Qwen/Qwen3-4B config.json): 36 layers, hidden 2560, 32 query / 8 KV heads of 128,
SwiGLU 9728, vocabulary 151,936, tied embeddings, rope_theta 1e6, RMSNorm eps 1e-6.
Mesh: tensor=2 (heads, KV heads, MLP and vocabulary split in two: 8 KV heads divide evenly) x
fsdp = the remaining devices (weights' embed dimension and optimizer state). 4B x 16 bytes ~ 64 GB
of state: 8 devices hold ~8 GB each. tests/test_aot_compile.py compiles this sharded train step on
8 fake CPU devices without weights and prints its per-device memory estimate.
"""

import os

from gream_jax.config_defaults import recipes

HF_SHAPE = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_layers=36,
                num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0,
                rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=40960)
MESH = dict(data=1, fsdp=-1, tensor=2)
TRAIN = dict(batch_size=256, grad_accum=16)


def get_config(arg: str | None = None):
    return recipes.qwen3_config(os.path.dirname(os.path.abspath(__file__)), "4b", HF_SHAPE, MESH,
                                TRAIN, arg)
