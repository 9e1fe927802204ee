"""SFT loss cost: vocabulary softmax vs the trie-factored softmax (config.model.sid_softmax).

Times one jitted forward + backward of the loss head alone (hidden states and LM head rows in,
gradients of both out) on SID windows shaped like a dense-window batch: `--rows` x `--seq`
tokens, each item written as 2 semantic codes (`--codes` per level) + an item-unique token, so
the vocabulary is text + 2 x codes + items (Beauty: 1,000 + 128 + 12,101, padded to 64). The
full loss is `gream_jax.train.losses.token_nll_terms` on `hidden @ head.T`; the trie loss is
`gream_jax.model.trie_softmax.trie_nll_terms` (sid_softmax="trie": siblings; "level": every token
of the label's SID level, the item level compacted to the positions that predict it). Also checks that the trie loss equals the
vocabulary log-softmax masked to the trie (the distribution it defines) on the same batch.

    python benchmarks/bench_trie_softmax.py                 # Beauty shapes
    python benchmarks/bench_trie_softmax.py --items=1682 --codes=32   # ML-100k shapes

Prints one line per loss (ms per call, tokens/s) and the speed-up. Not a timed test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=12101)
    p.add_argument("--codes", type=int, default=64, help="codes per semantic level (2 levels)")
    p.add_argument("--text_vocab", type=int, default=1000)
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main():
    args = parse_args()
    import jax
    import jax.numpy as jnp

    from gream_jax.index.trie import build_trie_from_codes
    from gream_jax.model import trie_softmax as ts
    from gream_jax.train.losses import token_nll_terms

    rng = np.random.default_rng(args.seed)
    n, k = args.items, args.codes
    codes = np.stack([rng.integers(0, k, n), rng.integers(0, k, n), np.arange(n)], 1)
    trie = build_trie_from_codes(codes, np.full(n, 3))
    base = args.text_vocab
    table = np.full((3, max(n, k)), -1, np.int64)
    table[0, :k] = base + np.arange(k)
    table[1, :k] = base + k + np.arange(k)
    table[2, :n] = base + 2 * k + np.arange(n)
    vocab = -(-(base + 2 * k + n) // 64) * 64
    dev = trie.to_device(table, renormalise=True)
    outer = jnp.asarray(ts.outer_token_ids(trie, table, vocab))
    per_row = args.seq // 3 + 1
    items = rng.integers(0, n, (args.rows, per_row))
    tokens = np.stack([np.concatenate([table[[0, 1, 2], codes[i]] for i in row])[:args.seq] for row in items])
    tokens = jnp.asarray(tokens, jnp.int32)
    states = ts.token_states(dev, tokens)
    labels = jnp.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1)
    weights = jnp.ones(tokens.shape, jnp.float32).at[:, -1].set(0.0)
    hidden = jnp.asarray(rng.normal(size=(args.rows, args.seq, args.hidden)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(vocab, args.hidden)) * 0.1, jnp.float32)

    def full(h, w):
        return token_nll_terms(jnp.einsum("bsd,vd->bsv", h, w), labels, weights)[0]

    def trie_loss(h, w):
        return ts.trie_nll_terms(h, w, labels, states, weights, dev, outer)[0]

    level_ids = (np.asarray(table[1, :k]), np.asarray(table[2, :n]))

    def level_loss(h, w):
        return ts.trie_nll_terms(h, w, labels, states, weights, dev, outer, level_ids)[0]

    print(f"vocab {vocab}, outer {outer.shape[0]}, max children {dev.max_children}, "
          f"batch {args.rows} x {args.seq} tokens, hidden {args.hidden}, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")
    times = {}
    for name, fn in (("vocabulary softmax", full), ("trie softmax", trie_loss), ("level softmax", level_loss)):
        step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
        jax.block_until_ready(step(hidden, head))
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(step(hidden, head))
            best = min(best, time.perf_counter() - t0)
        times[name] = best
        print(f"{name:>20}: {best * 1e3:8.1f} ms per forward+backward, "
              f"{args.rows * args.seq / best:,.0f} tokens/s (best of {args.repeats})")
    masked = jax.nn.log_softmax(ts.mask_logits(dev, jnp.einsum("bsd,vd->bsv", hidden, head), states), axis=-1)
    ref = -jnp.sum(jnp.take_along_axis(masked, labels[..., None], axis=-1)[..., 0] * weights)
    ours = trie_loss(hidden, head)
    print(f"trie loss {float(ours):.3f} vs masked vocabulary log-softmax {float(ref):.3f}; "
          f"speed-up: trie {times['vocabulary softmax'] / times['trie softmax']:.1f}x, "
          f"level {times['vocabulary softmax'] / times['level softmax']:.1f}x")


if __name__ == "__main__":
    main()
