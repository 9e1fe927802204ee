"""The SRPO update with a row per response against one shared-prefix row per group.

`config.rl.shared_prefix` (`srpo.shared_prefix_logprobs`, `srpo_batch.shared_prefix_batches`)
runs a group's prompt once with its G responses after it, each attending to the prompt and
itself, instead of G rows `prompt ++ response`. This script builds one mini-batch of `--groups`
groups x G SID responses of `--response` tokens after prompts of `--prompt` tokens (random tokens,
random-weight Qwen3 of the given shape, one device), lays it out both ways, and times the jitted
old-policy log-prob pass and one optimiser update of each (compile excluded), checking that the
two layouts give the same loss and log-probs.

    python benchmarks/bench_shared_prefix.py                       # chain rollouts: ~550-token prompts
    python benchmarks/bench_shared_prefix.py --prompt=128          # Direct mode: the history prompt

Not a timed test.
"""

from __future__ import annotations

import argparse
import time

from bench_nucleus import random_qwen3   # a sibling script: run from the repo root as shown


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=8, help="groups per mini-batch (config.rl.mini_batch_prompts)")
    p.add_argument("--group_size", type=int, default=10)
    p.add_argument("--prompt", type=int, default=640, help="prompt width (a chain rollout's prompt + chain)")
    p.add_argument("--response", type=int, default=4, help="response tokens (the SID's length)")
    p.add_argument("--vocab", type=int, default=2752)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def _time(fn, repeats):
    import jax
    jax.block_until_ready(fn())                                         # compile + warm
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    args = parse_args()
    import jax
    import numpy as np

    from gream_jax import mesh as mesh_lib
    from gream_jax.train import srpo
    from gream_jax.train.srpo_batch import shared_prefix_batches, update_batches

    g, r, m = args.group_size, args.response, args.groups
    cfg, params = random_qwen3(args, args.prompt + g * r + 8)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    rules = mesh_lib.DEFAULT_RULES
    rng = np.random.default_rng(args.seed)
    prompt_ids = np.empty(m, dtype=object)
    prompt_ids[:] = [list(rng.integers(1, args.vocab, size=args.prompt - int(rng.integers(0, 16))))
                     for _ in range(m)]
    batch = {"prompt_ids": prompt_ids, "response_tokens": rng.integers(1, args.vocab, size=(m, g, r)).astype(np.int32),
             "response_mask": np.ones((m, g, r), np.int32), "group_weight": np.ones(m, np.float32)}
    adv = rng.normal(size=(m, g)).astype(np.float32)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.layers} x {args.hidden} Qwen3, vocab "
          f"{args.vocab}; {m} groups x G {g}, prompt {args.prompt}, response {r}")
    opt = srpo.OptimizerConfig(learning_rate=1e-4, warmup_steps=0)
    results = {}
    for name, rows, layout, micro in (("row per response", 0, update_batches, m * g),
                                      ("shared prefix", g, shared_prefix_batches, m)):
        mb = layout(batch, adv, m, micro, np.random.default_rng(0), 0, width_bucket=128)[0]
        mb.pop("index")
        logprob_fn = srpo.make_logprob_fn(cfg, mesh, rules, r, group_size=rows)
        update = srpo.make_update_fn(cfg, opt, srpo.LossConfig(), mesh, rules, r, group_size=rows)
        state = srpo.init_optimizer_state(cfg, opt, params, mesh, rules)
        with jax.set_mesh(mesh):
            t_logp, old = _time(lambda: logprob_fn(params, mb["tokens"], mb["attention_mask"]), args.repeats)
            mb["old_logp"] = mb["ref_logp"] = np.asarray(old)
            copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)      # the update donates both
            t_update, (_, _, metrics) = _time(lambda: update(copy(params), copy(state), mb), args.repeats)
        tokens = int(np.asarray(mb["attention_mask"]).sum())
        results[name] = (np.asarray(old).reshape(-1), float(metrics["loss"]))
        print(f"{name:17s}: rows {mb['tokens'].shape[1]} x {mb['tokens'].shape[2]} tokens ({tokens:,} real); "
              f"log-probs {t_logp * 1e3:7.1f} ms, update {t_update * 1e3:7.1f} ms "
              f"({m * g * r / t_update:,.0f} response tok/s), loss {float(metrics['loss']):+.6f}")
    (a, la), (b, lb) = results.values()
    print(f"max |log-prob difference| {np.max(np.abs(a - b)):.2e}; loss difference {abs(la - lb):.2e}")


if __name__ == "__main__":
    main()
