"""Accelerator check of the model: parity with PyTorch, cuDNN vs XLA attention, KV cache, timings.

    python -m gream_jax.model.check_gpu [--layers 8 --hidden 1024 --batch 8 --seq 1024]

Prints one line per check (max differences and milliseconds per call). CPU-only machines run it
too (cuDNN rows are skipped), but its purpose is the GPU: that the fused cuDNN attention path
(`ModelConfig.attention="cudnn"`, bf16) computes what the XLA path computes, with padding and
packed segments, through the KV cache and under `jax.grad`.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.model.config import ModelConfig


def _time(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1e3


def check_parity_with_pytorch(mesh) -> None:
    import torch
    import transformers

    from gream_jax.model.hf_loader import load_hf_checkpoint
    from gream_jax.model.tiny_hf import write_tiny_hf_checkpoint
    with tempfile.TemporaryDirectory() as d:
        for arch, tied in (("qwen3", True), ("qwen2", False)):
            path = write_tiny_hf_checkpoint(f"{d}/{arch}", arch=arch, tied=tied)
            cfg, params = load_hf_checkpoint(path, mesh)
            model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            tokens = np.random.default_rng(0).integers(1, 300, (2, 12))
            mask = np.ones_like(tokens)
            mask[1, :5] = 0
            pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
            with torch.no_grad():
                ref = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                            position_ids=torch.tensor(pos)).logits.numpy()
            with jax.default_matmul_precision("highest"):
                ours = np.asarray(api.forward(params, cfg, jnp.asarray(tokens), jnp.asarray(mask)))
            print(f"parity {arch} tied={tied} float32 (highest precision): max|diff| = "
                  f"{np.abs(ours - ref)[mask > 0].max():.2e}")


def check_attention_paths(args, mesh) -> None:
    base = ModelConfig(vocab_size=32768, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                       num_layers=args.layers, num_heads=args.hidden // 64, num_kv_heads=args.hidden // 256,
                       head_dim=64, dtype="bfloat16", param_dtype="float32", max_position_embeddings=8192)
    params = api.init_params(base, jax.random.PRNGKey(0), mesh)
    b, s = args.batch, args.seq
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, base.vocab_size, (b, s)), jnp.int32)
    mask = np.ones((b, s), np.int32)
    mask[::2, : s // 4] = 0                                   # left padding on half the rows
    mask = jnp.asarray(mask)
    segments = jnp.asarray(np.repeat(np.arange(4), s // 4)[None].repeat(b, 0), jnp.int32)
    impls = ["xla", "cudnn"] if jax.default_backend() == "gpu" else ["xla"]
    f32 = base.replace(dtype="float32")
    with jax.default_matmul_precision("highest"):
        reference = [np.asarray(jax.jit(lambda p, t, m, seg=None: api.forward(p, f32, t, m, segment_ids=seg))(
            params, tokens, mask, *extra)) for extra in ((), (segments,))]
    results = {}
    for impl in impls:
        cfg = base.replace(attention=impl)
        fwd = jax.jit(lambda p, t, m, seg=None, cfg=cfg: api.forward(p, cfg, t, m, segment_ids=seg))
        results[impl] = (np.asarray(fwd(params, tokens, mask)), np.asarray(fwd(params, tokens, mask, segments)))
        ms = _time(fwd, params, tokens, mask)

        def loss(p, cfg=cfg):
            return jnp.mean(api.forward(p, cfg, tokens, mask)[:, -1] ** 2)
        grad = jax.jit(jax.grad(loss))
        g_ms = _time(grad, params, repeats=3)
        g = grad(params)
        finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(g))
        print(f"{impl}: forward [{b},{s}] bf16 {ms:.1f} ms; forward+backward {g_ms:.1f} ms; grads finite={finite}")
    real = np.asarray(mask) > 0
    for impl in impls:
        for k, name in enumerate(("padded", "packed segments")):
            diff = np.abs(results[impl][k] - reference[k])[real]
            print(f"{impl} bf16 vs float32 reference logits ({name}): max|diff| = {diff.max():.3e}, "
                  f"mean {diff.mean():.3e} (max|logit| {np.abs(reference[k])[real].max():.2f})")
    if "cudnn" in results:
        for k, name in enumerate(("padded", "packed segments")):
            diff = np.abs(results["cudnn"][k] - results["xla"][k])[real]
            print(f"cudnn vs xla bf16 logits ({name}): max|diff| = {diff.max():.3e}, mean {diff.mean():.3e}")
    # KV cache with the fused path for prefill, XLA for one-token steps; every row has real tokens.
    cfg = base.replace(attention=impls[-1])
    mask = np.ones((b, 64), np.int32)
    mask[::2, :5] = 0
    mask = jnp.asarray(mask)
    full = np.asarray(jax.jit(lambda p: api.forward(p, cfg, tokens[:, :64], mask))(params))
    cache = api.init_cache(cfg, b, 64)
    prefill = jax.jit(lambda p, t, m, c: api.prefill(p, cfg, t, m, c), donate_argnums=3)
    step = jax.jit(lambda p, t, c: api.decode_step(p, cfg, t, c), donate_argnums=2)
    logits, cache = prefill(params, tokens[:, :48], mask[:, :48], cache)
    worst = np.abs(np.asarray(logits) - full[:, 47]).max()
    for i in range(48, 64):
        logits, cache = step(params, tokens[:, i], cache)
        worst = max(worst, np.abs(np.asarray(logits) - full[:, i]).max())
    print(f"kv cache ({cfg.attention} prefill + 16 steps) vs full forward bf16: max|diff| = {worst:.3e}")
    cache = api.init_cache(cfg, b, s + 33)
    _, cache = prefill(params, tokens, jnp.ones((b, s), jnp.int32), cache)
    logits, cache = step(params, tokens[:, 0], cache)       # compile outside the timing
    jax.block_until_ready(logits)
    t0 = time.perf_counter()
    for i in range(32):
        logits, cache = step(params, tokens[:, i], cache)
    jax.block_until_ready(logits)
    print(f"decode step after a {s}-token prefill, batch {b}: {(time.perf_counter() - t0) / 32 * 1e3:.2f} ms")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--skip-parity", action="store_true")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} backend={jax.default_backend()} devices={jax.devices()}")
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    if not args.skip_parity:
        check_parity_with_pytorch(mesh)
    check_attention_paths(args, mesh)


if __name__ == "__main__":
    main()
