"""Qwen3-1.7B backbone for GREAM (shapes of its published config.json), FSDP over all devices.

    python -m gream_jax.main --config=configs/qwen3_1p7b.py:beauty --workdir=WORKDIR \
        --config.model.checkpoint=/path/to/Qwen3-1.7B

Architecture (Qwen/Qwen3-1.7B config.json): 28 layers, hidden 2048, 16 query / 8 KV heads of 128,
SwiGLU 6144, vocabulary 151,936, tied embeddings, rope_theta 1e6, RMSNorm eps 1e-6.
Mesh: pure FSDP; 1.7B x 16 bytes ~ 28 GB of weights + optimizer state, sharded over every device
(8 chips: 3.5 GB each). Shared settings and the dataset argument: see configs/qwen3_0p6b.py.
"""

import os

from gream_jax.config_defaults import recipes

HF_SHAPE = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_layers=28,
                num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0,
                rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=40960)
MESH = dict(data=1, fsdp=-1, tensor=1)
TRAIN = dict(batch_size=256, grad_accum=8)


def get_config(arg: str | None = None):
    return recipes.qwen3_config(os.path.dirname(os.path.abspath(__file__)), "1p7b", HF_SHAPE, MESH,
                                TRAIN, arg)
