"""Direct-mode throughput: our jitted trie-constrained beam search vs transformers `generate`.

The peers decode with PyTorch `model.generate(num_beams=B, prefix_allowed_tokens_fn=...)`, whose
Python callback walks a trie for every beam at every step. We run both on the SAME weights
(exported from JAX with `gream_jax.model.hf_export.export_hf` and loaded by
`transformers.AutoModelForCausalLM`), the same prompts, the same B and K, and compare users/s
and the top-K lists (identical up to ties: a differing position must hold scores equal within
`--tie_tol` on both sides).

Scoring is made identical on both sides: raw sum of log-probabilities, `length_penalty=0.0` for
`generate` (our documented choice; see gream_jax/infer/beam.py). The SIDs are fixed-length (the
ML-100k default scheme: 2 semantic levels + an item-unique token), so `generate` needs no EOS.

    python benchmarks/bench_beam_search.py                       # synthetic ML-100k-shaped SIDs, random model
    python benchmarks/bench_beam_search.py --workdir=/tmp/gream_ml100k   # a trained workdir's SIDs/model/users

Prints one table row per beam size (and writes --out JSON if given). Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="", help="trained workdir (index/, data/, sft|rl/final); '' = synthetic")
    p.add_argument("--users", type=int, default=64, help="users decoded by both implementations")
    p.add_argument("--batch", type=int, default=16, help="users per generate()/jit call (same for both)")
    p.add_argument("--beams", default="10,20")
    p.add_argument("--top_k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the machine has 2 cores)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved timed passes over the users per implementation (best kept)")
    p.add_argument("--tie_tol", type=float, default=2e-3)
    p.add_argument("--init_range", type=float, default=0.15,
                   help="random model's init std (peaky enough that ties are rare)")
    p.add_argument("--out", default="")
    return p.parse_args()


def synthetic_setup(n_items=1682, sizes=(32, 32), history=20, users=64, seed=0):
    """ML-100k-shaped SIDs (2 balanced levels + item token) and random 20-item histories."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_items)
    codes = np.stack([perm % sizes[0], (perm // sizes[0]) % sizes[1], np.arange(n_items)], 1)
    level_sizes = tuple(sizes) + (n_items,)
    hist = rng.integers(0, n_items, (users, history))
    return codes.astype(np.int32), np.full(n_items, 3, np.int32), level_sizes, hist


def build(args):
    """-> (model_cfg, params, codes, lengths, level_sizes, prompts, token_table, eos, pad, source)."""
    import jax

    from gream_jax import mesh as mesh_lib
    from gream_jax.model import api
    from gream_jax.model.config import ModelConfig
    mesh = mesh_lib.make_mesh({"data": 1}, jax.devices()[:1])
    if args.workdir:
        from gream_jax.data.prepare import load_prepared
        from gream_jax.eval.stage import model_directory
        from gream_jax.index.sid import SemanticIds
        from gream_jax.model.store import load_model
        from gream_jax.model.tokenizer import sid_token_table
        from gream_jax.tasks.tokens import bos_id, history_ids, item_token_ids
        from gream_jax.config_defaults import base_config
        config = base_config()
        data, split = load_prepared(args.workdir)
        sids = SemanticIds.load(os.path.join(args.workdir, "index"), n_items=data.n_items)
        model_dir = model_directory(config, args.workdir)
        model_cfg, params, tokenizer, _ = load_model(model_dir, mesh)
        table = sid_token_table(tokenizer, sids)
        item_tok = item_token_ids(tokenizer, sids)
        users = np.arange(min(args.users, split.n_users))
        prompts = [[bos_id(tokenizer)] + history_ids(item_tok, split.history("test", int(u))) for u in users]
        return (model_cfg, params, sids.codes, sids.lengths, sids.level_sizes, prompts, table,
                tokenizer.eos_id, tokenizer.pad_id, f"trained model {model_dir}")
    codes, lengths, level_sizes, hist = synthetic_setup(users=args.users)
    n_text = 2000                                   # ML-100k default tokenizer size
    table = np.full((3, max(level_sizes)), -1, np.int32)
    nxt = n_text
    for lvl, k in enumerate(level_sizes):
        table[lvl, :k] = np.arange(nxt, nxt + k)
        nxt += k
    vocab = -(-nxt // 64) * 64
    model_cfg = ModelConfig(vocab_size=vocab, hidden_size=64, intermediate_size=256, num_layers=2,
                            num_heads=4, num_kv_heads=4, head_dim=16, max_position_embeddings=512,
                            initializer_range=args.init_range, eos_token_id=0, pad_token_id=0)
    params = api.init_params(model_cfg, jax.random.PRNGKey(0), mesh)
    item_tok = table[np.arange(3)[None, :], codes]
    prompts = [[0] + item_tok[h].reshape(-1).tolist() for h in hist]
    return (model_cfg, params, codes, lengths, level_sizes, prompts, table, 0, 0,
            "random ML-100k-sized Qwen3 (2 layers, 64 wide, vocab %d), synthetic 32x32+item SIDs" % vocab)


def make_jax(model_cfg, params, prompts, dev_trie, beam, k, batch, pad):
    """-> a function decoding every user once with our jitted program: () -> (items, scores)."""
    import jax
    import jax.numpy as jnp

    from gream_jax.infer import decoder
    from gream_jax.infer.batching import left_pad
    width = max(map(len, prompts))
    cache_len = decoder.direct_cache_len(width, dev_trie)
    chunks = [left_pad(prompts[i:i + batch], width, batch, pad) for i in range(0, len(prompts), batch)]
    chunks = [(jnp.asarray(t), jnp.asarray(m)) for t, m in chunks]

    def once():
        outs = [decoder.direct_search(params, t, m, dev_trie, model_cfg=model_cfg, beam_size=beam, top_k=k,
                                      cache_len=cache_len) for t, m in chunks]
        jax.block_until_ready(outs)
        items = np.concatenate([np.asarray(o.items) for o in outs])[:len(prompts)]
        scores = np.concatenate([np.asarray(o.scores) for o in outs])[:len(prompts)]
        return items, scores

    return once


def make_torch(hf_dir, prompts, codes, lengths, table, beam, k, batch, eos, pad, threads):
    """-> a function decoding every user once with transformers generate: () -> (items, scores)."""
    import torch
    import transformers
    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    # The peers' trie: nested dicts of token ids, walked in a Python callback per beam per step.
    trie: dict = {}
    leaf_item = {}
    for item in range(len(codes)):
        node = trie
        toks = [int(table[lvl, codes[item, lvl]]) for lvl in range(int(lengths[item]))]
        for t in toks:
            node = node.setdefault(t, {})
        leaf_item[tuple(toks)] = item
    width = max(map(len, prompts))
    depth = int(lengths.max())

    def allowed(batch_id, input_ids):
        node = trie
        for t in input_ids[width:].tolist():
            node = node.get(t, {})
        return list(node.keys()) or [eos]

    return lambda: _generate_all(model, prompts, allowed, leaf_item, width, depth, beam, k, batch, eos, pad)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _generate_all(model, prompts, allowed, leaf_item, width, depth, beam, k, batch, eos, pad):
    import torch
    items = np.full((len(prompts), k), -1, np.int64)
    scores = np.full((len(prompts), k), -np.inf)
    for lo in range(0, len(prompts), batch):
        chunk = prompts[lo:lo + batch]
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, p in enumerate(chunk):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, num_beams=beam, num_return_sequences=k,
                                 max_new_tokens=depth, do_sample=False,
                                 prefix_allowed_tokens_fn=allowed, length_penalty=0.0, early_stopping=True,
                                 eos_token_id=eos, pad_token_id=pad, output_scores=True,
                                 return_dict_in_generate=True)
        seqs = out.sequences[:, width:].reshape(len(chunk), k, -1).numpy()
        sc = out.sequences_scores.reshape(len(chunk), k).numpy()
        for r in range(len(chunk)):
            for j in range(k):
                items[lo + r, j] = leaf_item.get(tuple(int(t) for t in seqs[r, j, :depth]), -1)
                scores[lo + r, j] = sc[r, j]
    return items, scores


def same_up_to_ties(ia, sa, ib, sb, tol) -> bool:
    """Equal lists, except that items may swap (or drop out at the K-th place) among equal scores."""
    if not np.allclose(sa, sb, atol=tol):
        return False
    for j in range(len(ia)):
        if ia[j] == ib[j]:
            continue
        pos = np.nonzero(ib == ia[j])[0]
        ref = sb[pos[0]] if len(pos) else sb[-1]
        if abs(sa[j] - ref) > tol:
            return False
    return True


def main():
    args = parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from gream_jax.index.trie import build_trie_from_codes
    from gream_jax.model.hf_export import export_hf
    (model_cfg, params, codes, lengths, level_sizes, prompts, table, eos, pad, source) = build(args)
    if len(set(int(x) for x in lengths)) != 1:
        raise SystemExit("this benchmark needs fixed-length SIDs (generate would otherwise need EOS scoring)")
    dev_trie = build_trie_from_codes(codes, lengths).to_device(table)
    hf_dir = export_hf(params, model_cfg, None, os.path.join(tempfile.mkdtemp(prefix="bench_beam_"), "hf"))
    print(f"model: {source}; {len(prompts)} users, prompt <= {max(map(len, prompts))} tokens, "
          f"{len(codes)} items, K={args.top_k}, batch {args.batch}")
    rows = []
    for beam in [int(b) for b in args.beams.split(",")]:
        jax_once = make_jax(model_cfg, params, prompts, dev_trie, beam, args.top_k, args.batch, pad)
        torch_once = make_torch(hf_dir, prompts, codes, lengths, table, beam, args.top_k, args.batch, eos, pad,
                                args.threads)
        _, compile_s = timed(jax_once)           # first call compiles
        j_best = t_best = float("inf")
        for _ in range(args.repeats):            # interleaved, best kept: the machine is shared
            (j_items, j_scores), dt = timed(jax_once)
            j_best = min(j_best, dt)
            (t_items, t_scores), dt = timed(torch_once)
            t_best = min(t_best, dt)
        j_rate, t_rate = len(prompts) / j_best, len(prompts) / t_best
        exact = float(np.mean([(a == b).all() for a, b in zip(j_items, t_items)]))
        ties = float(np.mean([same_up_to_ties(j_items[u], j_scores[u], t_items[u], t_scores[u], args.tie_tol)
                              for u in range(len(prompts))]))
        real = bool((j_items >= 0).all())
        row = dict(beam=beam, top_k=args.top_k, users=len(prompts), jax_users_per_s=j_rate,
                   torch_users_per_s=t_rate, speedup=j_rate / t_rate, jax_compile_s=compile_s,
                   identical_lists=exact, identical_up_to_ties=ties, all_real_items=real,
                   max_score_diff=float(np.max(np.abs(j_scores - t_scores))))
        rows.append(row)
        print(f"B={beam:3d} K={args.top_k}: JAX {j_rate:8.1f} users/s (compile {compile_s:.1f}s) | "
              f"transformers generate {t_rate:7.2f} users/s | {j_rate / t_rate:6.1f}x | identical lists "
              f"{exact:.3f}, up to ties {ties:.3f}, max |score diff| {row['max_score_diff']:.2e}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"source": source, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
