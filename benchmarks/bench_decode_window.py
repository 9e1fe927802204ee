"""Reasoning-chain decoding with and without decode windows (`gream_jax.infer.windows`).

A decode step attends over the whole preallocated KV cache unless it is given a window; a chain
fills a 640-slot cache from the prompt's end to ~600, so the early steps read hundreds of empty
slots. This script decodes `--tokens` tokens per row with `infer.sampling.sample_tokens` (decode
step of a random-weight Qwen3 of the given shape, the nucleus filter, the draw; no stop token, so
every row runs the whole budget) once per window step in `--window_steps` (0 = the whole cache at
every step), checks every run samples the same tokens as the unwindowed one, and prints compile
seconds, ms per step and sampled tokens/s.

    python benchmarks/bench_decode_window.py                                # ML-100k: 2 x 64, vocab 2,752
    python benchmarks/bench_decode_window.py --vocab=13248 --hidden=128 --prompt=176 --tokens=640   # Beauty

Not a timed test.
"""

from __future__ import annotations

import argparse
import time

from bench_nucleus import add_sampling_args, random_qwen3   # a sibling script: run from the repo root as shown


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    p.add_argument("--prompt", type=int, default=144, help="prompt width (slots filled before the chain)")
    p.add_argument("--tokens", type=int, default=512, help="tokens sampled per row (the reasoning budget)")
    p.add_argument("--window_steps", default="0,64,128,256")
    return p.parse_args()


def main():
    args = parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gream_jax.infer import sampling
    from gream_jax.infer.windows import attention_windows
    from gream_jax.model import api

    cache_len = args.prompt + args.tokens + 8
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; rows {args.rows}, vocab {args.vocab}, "
          f"{args.layers} x {args.hidden} model, prompt {args.prompt}, {args.tokens} tokens, cache {cache_len}")
    cfg, params = random_qwen3(args, cache_len)
    prompt = jax.random.randint(jax.random.PRNGKey(args.seed), (args.rows, args.prompt), 0, args.vocab)
    step_fn = lambda p, t, c, attend_len=None: api.decode_step(p, cfg, t, c, attend_len)
    reference = None
    for step in (int(s) for s in args.window_steps.split(",")):
        windows = attention_windows(cache_len, step, first_slot=args.prompt)

        @jax.jit
        def chain(params, prompt, rng, windows=windows):
            cache = api.init_cache(cfg, args.rows, cache_len)
            logits, cache = api.prefill(params, cfg, prompt, jnp.ones_like(prompt), cache)
            return sampling.sample_tokens(step_fn, params, logits, cache, rng, max_new_tokens=args.tokens,
                                          stop_tokens=(-1,), temperature=args.temperature, top_p=args.top_p,
                                          pad_id=0, windows=windows).tokens
        rng = jax.random.PRNGKey(args.seed + 1)
        t0 = time.perf_counter()
        compiled = chain.lower(params, prompt, rng).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(params, prompt, rng))          # warm
        t0 = time.perf_counter()
        tokens = np.asarray(jax.block_until_ready(compiled(params, prompt, rng)))
        dt = time.perf_counter() - t0
        if reference is None:
            reference = tokens
        same = bool((tokens == reference).all())
        print(f"window step {step:4d} ({len(windows)} partial windows): compile {compile_s:5.1f} s, "
              f"{dt * 1e3 / args.tokens:6.2f} ms/step, {args.rows * args.tokens / dt:8,.0f} sampled tok/s, "
              f"tokens identical to step 0: {same}")


if __name__ == "__main__":
    main()
