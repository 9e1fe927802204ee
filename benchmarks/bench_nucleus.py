"""Reasoning-mode sampling cost: the sort-free nucleus filter vs sort + cumsum.

Every sampled token of a reasoning chain (the eval's Reasoning mode, SRPO's reasoning rollouts)
goes through `gream_jax.infer.sampling.top_p_filter`. It used to sort each row of the
[rows, vocab] logits; it now finds the nucleus by bisection on the probability threshold's float
bits (`top_p_filter`), and `top_p_filter_sorted` keeps the sorted version as the reference.
This script times, inside one jitted `fori_loop` of `--steps` steps (as the decoders run):
  1. the filter alone on [rows, vocab] logits, both versions, and checks their kept sets match;
  2. `sample_tokens` (decode step of a random-weight Qwen3 of the given shape + the filter +
     the draw) over a `--cache`-slot KV cache, once with each filter.

    python benchmarks/bench_nucleus.py                      # ML-100k model: 2 x 64, vocab 2,752
    python benchmarks/bench_nucleus.py --vocab=13248 --hidden=128   # Beauty shapes

Prints ms per step and sampled tokens/s per line. Not a timed test.
"""

from __future__ import annotations

import argparse
import time


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The decode shape and sampler flags this script shares with bench_decode_window.py."""
    p.add_argument("--rows", type=int, default=160, help="chains decoded together (16 prompts x G 10)")
    p.add_argument("--vocab", type=int, default=2752)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top_p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)


def random_qwen3(args, max_len: int):
    """(config, params) of a random-weight Qwen3 of the flags' shape (heads of 16) on one device."""
    import jax
    import numpy as np

    from gream_jax.model import api
    from gream_jax.model.config import ModelConfig
    heads = max(1, args.hidden // 16)
    cfg = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_layers=args.layers, num_heads=heads, num_kv_heads=heads, head_dim=16,
                      max_position_embeddings=max_len, architecture="qwen3", qk_norm=True)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    return cfg, api.init_params(cfg, jax.random.PRNGKey(args.seed), mesh)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    p.add_argument("--cache", type=int, default=640, help="KV cache slots (prompt + 512-token budget + answer)")
    p.add_argument("--steps", type=int, default=64)
    return p.parse_args()


def _time(fn, *args) -> float:
    import jax
    jax.block_until_ready(fn(*args))                     # compile
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main():
    args = parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gream_jax.infer import sampling
    from gream_jax.model import api

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; rows {args.rows}, vocab {args.vocab}, "
          f"{args.layers} x {args.hidden} model, cache {args.cache}, {args.steps} steps, "
          f"T {args.temperature}, top-p {args.top_p}")
    key = jax.random.PRNGKey(args.seed)
    logits = jax.random.normal(key, (args.rows, args.vocab)) * 3.0
    filters = (("bisection (top_p_filter)", sampling.top_p_filter),
               ("sort + cumsum (top_p_filter_sorted)", sampling.top_p_filter_sorted))

    kept = [np.asarray(f(logits / args.temperature, args.top_p)) > -1e29 for _, f in filters]
    print(f"kept sets equal: {bool((kept[0] == kept[1]).all())} (mean nucleus {kept[0].sum(-1).mean():.1f} tokens)")

    for name, filt in filters:
        @jax.jit
        def filter_loop(logits, filt=filt):
            def body(_, acc):
                return acc + filt(logits + acc[:, None] * 1e-6, args.top_p)[:, 0] * 1e-9
            return jax.lax.fori_loop(0, args.steps, body, jnp.zeros((args.rows,)))
        dt = _time(filter_loop, logits)
        print(f"filter alone, {name}: {dt * 1e3 / args.steps:.2f} ms/step")

    cfg, params = random_qwen3(args, args.cache)
    prompt = min(100, args.cache - args.steps)
    cache = api.init_cache(cfg, args.rows, args.cache)
    cache = cache.replace(index=jnp.int32(prompt), mask=cache.mask.at[:, :prompt].set(True),
                          positions=jnp.full((args.rows,), prompt, jnp.int32))
    original = sampling.top_p_filter
    try:
        for name, filt in filters:
            sampling.top_p_filter = filt                  # what sample_token calls, swapped for this run

            @jax.jit
            def text_loop(params, cache, logits, rng):
                out = sampling.sample_tokens(lambda p, t, c: api.decode_step(p, cfg, t, c), params, logits,
                                             cache, rng, max_new_tokens=args.steps, stop_tokens=(-1,),
                                             temperature=args.temperature, top_p=args.top_p, pad_id=0)
                return out.tokens
            dt = _time(text_loop, params, cache, logits, jax.random.PRNGKey(args.seed + 1))
            print(f"sample_tokens, {name}: {dt * 1e3 / args.steps:.2f} ms/step, "
                  f"{args.rows * args.steps / dt:,.0f} sampled tok/s")
    finally:
        sampling.top_p_filter = original


if __name__ == "__main__":
    main()
