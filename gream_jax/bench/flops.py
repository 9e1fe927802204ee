"""Model FLOPs and MFU, with the formula of shared/reference/baselines.md.

FLOPs per trained token = 6 x matmul parameters (attention projections, MLP, LM head;
embeddings gathered, norms ignored) + 6 x layers x seq x heads x head_dim (causal attention
counted once: QK^T and PV are 2 x 2 x s x h x d multiply-adds per token, halved by causality,
x3 for forward + backward). For Qwen3-0.6B at seq 2,048 this is 4.28 GFLOP per token.
"""

from __future__ import annotations

# Dense bf16 peak per device (FLOP/s) by a substring of `jax.devices()[0].device_kind`.
PEAK_FLOPS = {
    "H100": 989.5e12,   # SXM, dense bf16 (baselines.md)
    "H200": 989.5e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6": 918e12,
}


def matmul_params(shape) -> int:
    """Parameters that take part in a matmul per token: [hidden] -> ... -> [vocab]."""
    d, h, kv, hd, f = (shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.head_dim,
                       shape.intermediate_size)
    attention = d * h * hd + 2 * d * kv * hd + h * hd * d
    mlp = 3 * d * f
    lm_head = d * shape.vocab_size
    return shape.num_layers * (attention + mlp) + lm_head


def train_flops_per_token(shape, seq: int) -> float:
    return 6.0 * matmul_params(shape) + 6.0 * shape.num_layers * seq * shape.num_heads * shape.head_dim


def peak_flops(device_kind: str, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s for one device, or None when unknown (then MFU is not reported)."""
    if override_tflops:
        return override_tflops * 1e12
    for key, value in PEAK_FLOPS.items():
        if key.lower() in device_kind.lower():
            return value
    return None


def mfu(tokens_per_s: float, shape, seq: int, n_devices: int, peak: float | None) -> float | None:
    if not peak:
        return None
    return tokens_per_s * train_flops_per_token(shape, seq) / (peak * n_devices)
