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

import importlib.util
import os

CONFIGS_DIR = os.path.dirname(os.path.abspath(__file__))

# The fields of Qwen/Qwen3-0.6B's config.json that fix the architecture.
HF_SHAPE = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_layers=28,
                num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0,
                rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=40960)
MESH = dict(data=1, fsdp=-1, tensor=1)
# Global SFT batch / gradient accumulation for this size (per-device batch = rows / devices / accum).
TRAIN = dict(batch_size=256, grad_accum=4)
DATASETS = ("beauty", "industrial", "office", "ml100k")

# FSDP x tensor rules, written out so they can be edited per run (`--config.mesh.rules=...`):
# weights' `embed` dimension over fsdp, heads/MLP/vocabulary over tensor, batch over data+fsdp.
MESH_RULES = (
    ("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("vocab", "tensor"),
    ("mlp", "tensor"), ("heads", "tensor"), ("kv_heads", "tensor"), ("head_dim", None),
    ("layers", None), ("norm", None), ("items", ("data", "fsdp")), ("features", None),
    ("codes", None), ("cache_length", None), ("lora_rank", None),
)


def load_config_module(name: str):
    """Imports configs/<name>.py (config files are loaded by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(f"gream_configs_{name}",
                                                  os.path.join(CONFIGS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def qwen3_config(size_name: str, hf_shape: dict, mesh: dict, train: dict, arg: str | None):
    """The dataset's experiment config with a Qwen3 backbone of `hf_shape` and its mesh."""
    dataset = arg or "beauty"
    if dataset not in DATASETS:
        raise ValueError(f"configs/qwen3_{size_name}.py: unknown dataset {dataset!r}; use one of {DATASETS}")
    config = load_config_module(dataset).get_config(None)
    config.name = f"{dataset}_qwen3_{size_name}"
    m = config.model
    m.checkpoint = ""   # --config.model.checkpoint=/path/to/Qwen3-<size> (HF directory)
    for field in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
                  "max_position_embeddings"):
        m[field] = hf_shape[field]
    m.param_dtype = "float32"     # master weights
    m.dtype = "bfloat16"          # compute
    m.remat = "dots_no_batch"     # keep weight matmul outputs, recompute attention/elementwise
    m.scan_layers = True
    m.attention = "xla"           # GPU: --config.model.attention=cudnn (fused flash attention)
    m.vocab_pad_multiple = 128
    for axis, size in mesh.items():
        config.mesh[axis] = size
    config.mesh.rules = MESH_RULES
    t = config.train
    t.compute_dtype = "bfloat16"
    t.lr = 5e-5
    t.end_lr_factor = 0.0
    t.seq_len = 2560
    t.batch_size = train["batch_size"]
    t.grad_accum = train["grad_accum"]
    t.steps = 2000
    t.warmup_steps = t.steps // 10
    return config


def get_config(arg: str | None = None):
    return qwen3_config("0p6b", HF_SHAPE, MESH, TRAIN, arg)
