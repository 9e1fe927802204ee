"""On-device samplers: free text until a stop token, and one SID constrained by the trie.

Both are generic over the decoder, like `beam.py`:
  step_fn(params, tokens [n], cache) -> (logits [n, V], cache)
and start from `first_logits [n, V]` (the distribution of the next token after the prompt) and
a cache positioned after the prompt. Call them inside `jax.jit` (`gream_jax.infer.decoder` has
jitted, model-bound wrappers); `temperature` and `top_p` may be traced, so changing them does not
recompile. `temperature <= 0` means greedy (argmax), which ignores `top_p` and the rng.

Log-probabilities returned are the *model's* (full-vocabulary log-softmax of the raw logits at
temperature 1), i.e. the policy log-probs that teacher-forced `forward` gives, not those of the
tempered/truncated sampling distribution; the SRPO trainer compares them with its recomputation.

Used by reasoning-mode inference (the `<think>` text) and by SRPO rollouts (text, then
`sample_sid` for the answer).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from gream_jax.index.trie import DeviceTrie
from gream_jax.infer.windows import windowed_while_loop

NEG_INF = -1e30


class TextSample(NamedTuple):
    tokens: jax.Array       # [n, T] int32 sampled ids, pad_id after a row's stop token
    logprobs: jax.Array     # [n, T] float32 model log-prob of each sampled token, 0 after the stop
    lengths: jax.Array      # [n] int32 tokens produced, the stop token included
    stopped: jax.Array      # [n] bool: the row emitted a stop token within the budget
    next_logits: jax.Array  # [n, V] logits after the last fed token (valid for rows still running)
    cache: Any              # rows that stopped early had pad tokens appended after their stop


class SidSample(NamedTuple):
    items: jax.Array        # [n] int32 item spelled by the sampled SID
    tokens: jax.Array       # [n, L] int32 SID token ids, -1 past the SID's end
    logprobs: jax.Array     # [n, L] float32 model log-prob of each SID token, 0 past the end
    lengths: jax.Array      # [n] int32 SID length
    cache: Any


def top_p_filter(logits: jax.Array, top_p) -> jax.Array:
    """Keeps the smallest set of highest logits whose probability reaches `top_p` (nucleus).

    logits [n, V]; the most likely token is always kept (ties at the cut are kept too);
    `top_p >= 1` keeps everything.

    No sort: a token is in the nucleus iff its probability is at least t*, the largest t with
    mass(p >= t) >= top_p, and t* is found by bisection on the float32 bit pattern of t (which
    orders non-negative floats like their values), so 31 masked row sums over [n, V] pin it down
    exactly. Sorting every row every step cost 2-5x the whole decode step of the small CPU model
    (docs/benchmarks.md "infer: the nucleus filter"). The kept set is the sort's
    (`top_p_filter_sorted`; they could differ only where float rounding of the mass decides a cut
    that lands exactly on top_p)."""
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    as_bits = lambda x: jax.lax.bitcast_convert_type(x, jnp.int32)
    as_float = lambda b: jax.lax.bitcast_convert_type(b, jnp.float32)
    # Invariant: mass(p >= float(lo)) >= top_p (lo = 0.0 keeps all), and mass(p >= float(hi)) <
    # top_p or hi is just above the largest probability, whose mass alone then decides.
    lo = jnp.zeros(probs.shape[:-1] + (1,), jnp.int32)
    hi = as_bits(probs.max(axis=-1, keepdims=True)) + 1

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        ok = jnp.where(probs >= as_float(mid), probs, 0.0).sum(axis=-1, keepdims=True) >= top_p
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 31, halve, (lo, hi))   # bits of 1.0 < 2**30: 31 halvings reach hi - lo = 1
    return jnp.where((probs >= as_float(lo)) | (top_p >= 1.0), logits, NEG_INF)


def top_p_filter_sorted(logits: jax.Array, top_p) -> jax.Array:
    """The textbook nucleus (sort each row, cumulative sum): the reference `top_p_filter` is
    tested and benchmarked against."""
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs           # mass strictly above each token
    keep = before < top_p
    n_keep = jnp.maximum(keep.sum(-1), 1)
    threshold = jnp.take_along_axis(sorted_logits, (n_keep - 1)[:, None], axis=-1)
    return jnp.where((logits >= threshold) | (top_p >= 1.0), logits, NEG_INF)


def sample_token(rng: jax.Array, logits: jax.Array, temperature, top_p) -> jax.Array:
    """One token per row from softmax(logits / temperature) cut to the top-p nucleus.

    logits [n, V] -> tokens [n] int32; temperature <= 0 is greedy. (SRPO rollouts call this.)
    """
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1)
    scaled = top_p_filter(logits / jnp.maximum(temperature, 1e-6), top_p)
    sampled = jax.random.categorical(rng, scaled, axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


def ban_tokens(logits: jax.Array, banned: Sequence[int]) -> jax.Array:
    """logits [n, V] with the `banned` token ids (static) set to NEG_INF: never drawn."""
    if not banned:
        return logits
    return logits.at[:, jnp.asarray(tuple(banned), jnp.int32)].set(NEG_INF)


def sample_logits(logits: jax.Array, rng: jax.Array, temperature, top_p, draw_logits: jax.Array | None = None):
    """One token per row. logits [n, V] -> (tokens [n] int32, model log-probs [n]).

    draw_logits [n, V]: the logits to draw from when a sampling constraint (a banned token, an
    exhausted item) removes tokens; the log-prob returned is still the model's, from `logits`,
    as under the nucleus."""
    logits = logits.astype(jnp.float32)
    draw = logits if draw_logits is None else draw_logits.astype(jnp.float32)
    tokens = sample_token(rng, draw, temperature, top_p)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return tokens, jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]


def mask_exhausted_items(trie: DeviceTrie, logits: jax.Array, state: jax.Array, mentions: jax.Array,
                         limit: int) -> jax.Array:
    """logits [n, V] with each row's trie children that would complete an item already written
    `limit` times set to NEG_INF. state [n] (trie node, -1 outside an SID), mentions [n, N] (times
    each leaf node was completed). A node all of whose children are used up is left unmasked, so
    the row can always finish its SID."""
    tok, child, valid = trie.expand(jnp.maximum(state, 0))                     # [n, W]
    used = jnp.take_along_axis(mentions, child, axis=1) >= limit
    exhausted = valid & used & (trie.node_item[child] >= 0) & (state >= 0)[:, None]
    some_left = (valid & ~exhausted).any(-1, keepdims=True)
    vocab = logits.shape[-1]
    rows = jnp.arange(logits.shape[0])[:, None]
    return logits.at[rows, jnp.where(exhausted & some_left, tok, vocab)].set(NEG_INF, mode="drop")


def sample_tokens(step_fn: Callable, params: Any, first_logits: jax.Array, cache: Any, rng: jax.Array,
                  *, max_new_tokens: int, stop_tokens: Sequence[int], temperature, top_p,
                  pad_id: int, trie: DeviceTrie | None = None, windows: Sequence[int] = (),
                  banned_tokens: Sequence[int] = (), max_item_mentions: int = 0) -> TextSample:
    """Samples up to `max_new_tokens` per row, stopping a row at its first stop token.

    A `lax.while_loop` that ends early once every row has stopped; the cache is carried (and so
    updated in place). With a `trie` whose `renormalise` is set (a trie-softmax model), each row
    tracks where it stands in the SID trie and draws from that model's own distribution
    (`model.trie_softmax.mask_logits`): an SID begun in the text is continued among its node's
    children, and inner SID tokens never appear elsewhere.
    windows (static, `infer.windows.attention_windows`): the early steps read only the cache
    slots written so far; step_fn must then accept `attend_len=` and the cache have `.index`.
    banned_tokens (static): ids no row may draw (Reasoning mode bans a stray `</answer>`; see
    `infer.decoder.ReasoningSpec`); their log-probs stay in the model's normaliser.
    max_item_mentions (static, > 0 with a trie-softmax `trie` only): no row completes one item's SID
    more than this many times (`mask_exhausted_items`), a guard against a chain repeating a few
    items until its budget runs out; 0 = off.
    """
    n = first_logits.shape[0]
    stops = jnp.asarray(tuple(stop_tokens), jnp.int32).reshape(-1)
    grammar = trie is not None and trie.renormalise
    if grammar:
        from gream_jax.model import trie_softmax
    limit = int(max_item_mentions)
    if limit > 0 and not grammar:
        raise ValueError("max_item_mentions needs a trie-softmax trie (trie.renormalise): SIDs are "
                         "tracked through the trie grammar")
    rows = jnp.arange(n)

    def cond(c):
        t, done = c[0], c[3]
        return (t < max_new_tokens) & ~done.all()

    def body(c, attend_len):
        t, out, out_lp, done, logits, cache, rng, state, mentions = c
        rng, key = jax.random.split(rng)
        if grammar:
            logits = trie_softmax.mask_logits(trie, logits, state)
        draw = mask_exhausted_items(trie, logits, state, mentions, limit) if limit else logits
        tok, lp = sample_logits(logits, key, temperature, top_p, draw_logits=ban_tokens(draw, banned_tokens))
        if grammar:
            state = trie_softmax.next_state(trie, state, tok)
        if limit:
            completed = (state >= 0) & (trie.node_item[jnp.maximum(state, 0)] >= 0) & ~done
            mentions = mentions.at[rows, jnp.maximum(state, 0)].add(completed.astype(jnp.int32))
        tok = jnp.where(done, pad_id, tok)
        out = out.at[:, t].set(tok)
        out_lp = out_lp.at[:, t].set(jnp.where(done, 0.0, lp))
        done = done | (tok[:, None] == stops[None, :]).any(-1)
        logits, cache = (step_fn(params, tok, cache) if attend_len is None
                         else step_fn(params, tok, cache, attend_len=attend_len))
        return t + 1, out, out_lp, done, logits.astype(jnp.float32), cache, rng, state, mentions

    n_nodes = trie.node_item.shape[0] if limit else 1
    init = (jnp.int32(0), jnp.full((n, max_new_tokens), pad_id, jnp.int32),
            jnp.zeros((n, max_new_tokens), jnp.float32), jnp.zeros((n,), bool),
            first_logits.astype(jnp.float32), cache, rng, jnp.full((n,), -1, jnp.int32),
            jnp.zeros((n, n_nodes), jnp.int32))
    _, out, out_lp, done, logits, cache, _, _, _ = windowed_while_loop(cond, body, init, lambda c: c[5].index,
                                                                       windows)
    is_stop = (out[..., None] == stops).any(-1)
    first_stop = jnp.argmax(is_stop, axis=-1)
    lengths = jnp.where(done, first_stop + 1, max_new_tokens).astype(jnp.int32)
    return TextSample(tokens=out, logprobs=out_lp, lengths=lengths, stopped=done,
                      next_logits=logits, cache=cache)


def sample_sid(step_fn: Callable, params: Any, first_logits: jax.Array, cache: Any, trie: DeviceTrie,
               rng: jax.Array, temperature) -> SidSample:
    """Samples one SID per row token by token among the trie children only, so it names an item.

    The sampling distribution at each step is softmax(logits / temperature) renormalised over the
    valid children (greedy when temperature <= 0). Rows whose SID ends early stop at their leaf.
    """
    n = first_logits.shape[0]
    depth = trie.max_depth

    def choose(logits, node, key):
        tok, child, valid = trie.expand(node)                               # [n, W]
        lg = jnp.take_along_axis(logits.astype(jnp.float32), tok, axis=-1)
        lg = jnp.where(valid, lg, NEG_INF)
        greedy = jnp.argmax(lg, axis=-1)
        sampled = jax.random.categorical(key, jnp.where(valid, lg / jnp.maximum(temperature, 1e-6), NEG_INF))
        slot = jnp.where(temperature > 0, sampled, greedy)[:, None]
        chosen_tok = jnp.take_along_axis(tok, slot, axis=-1)[:, 0]
        if trie.renormalise:   # the model's own distribution here is over the children
            lp = jnp.take_along_axis(jax.nn.log_softmax(lg, axis=-1), slot, axis=-1)[:, 0]
        else:
            logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            lp = jnp.take_along_axis(logp, chosen_tok[:, None], axis=-1)[:, 0]
        return chosen_tok, jnp.take_along_axis(child, slot, axis=-1)[:, 0], lp

    def cond(c):
        t, node = c[0], c[1]
        return (t < depth) & (trie.node_item[node] < 0).any()

    def body(c):
        t, node, toks, lps, logits, cache, rng = c
        rng, key = jax.random.split(rng)
        finished = trie.node_item[node] >= 0
        tok, child, lp = choose(logits, node, key)
        toks = toks.at[:, t].set(jnp.where(finished, -1, tok))
        lps = lps.at[:, t].set(jnp.where(finished, 0.0, lp))
        node = jnp.where(finished, node, child)
        logits, cache = step_fn(params, jnp.where(finished, 0, tok), cache)
        return t + 1, node, toks, lps, logits.astype(jnp.float32), cache, rng

    init = (jnp.int32(0), jnp.zeros((n,), jnp.int32), jnp.full((n, depth), -1, jnp.int32),
            jnp.zeros((n, depth), jnp.float32), first_logits.astype(jnp.float32), cache, rng)
    _, node, toks, lps, _, cache, _ = jax.lax.while_loop(cond, body, init)
    return SidSample(items=trie.node_item[node], tokens=toks, logprobs=lps,
                     lengths=(toks >= 0).sum(-1).astype(jnp.int32), cache=cache)
