"""Qwen3-0.6B backbone for GREAM (shapes of its published config.json), FSDP over all devices.

    python -m gream_jax.main --config=configs/qwen3_0p6b.py:beauty --workdir=WORKDIR \
        --config.model.checkpoint=/path/to/Qwen3-0.6B
(`:beauty` | `:industrial` | `:office` | `:ml100k` picks the dataset; default beauty.)

Architecture (Qwen/Qwen3-0.6B config.json): 28 layers, hidden 1024, 16 query / 8 KV heads of 128,
SwiGLU 3072, vocabulary 151,936, tied embeddings, rope_theta 1e6, RMSNorm eps 1e-6, q/k norm.
With `--config.model.checkpoint` the loader reads these from config.json (and refuses a
mismatch); without it the same shapes are trained from random weights (throughput tests).
Mesh: pure FSDP (ZeRO-3): weights and optimizer state sharded over `fsdp` = every device, batch
split over all devices. 0.6B x 16 bytes (float32 weights + AdamW moments + grads) ~ 10 GB, so it
also fits one 80 GB GPU. SFT settings are the reference's (GREAM.md): lr 5e-5 cosine with 10%
warm-up, global batch 256, rows of 2,560 tokens; see launch/README.md for per-slice batch sizes.
"""

import os

from gream_jax.config_defaults import recipes

CONFIGS_DIR = os.path.dirname(os.path.abspath(__file__))

# The fields of Qwen/Qwen3-0.6B's config.json that fix the architecture.
HF_SHAPE = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_layers=28,
                num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0,
                rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=40960)
MESH = dict(data=1, fsdp=-1, tensor=1)
# Global SFT batch / gradient accumulation for this size (per-device batch = rows / devices / accum).
TRAIN = dict(batch_size=256, grad_accum=4)


def get_config(arg: str | None = None):
    return recipes.qwen3_config(CONFIGS_DIR, "0p6b", HF_SHAPE, MESH, TRAIN, arg)
