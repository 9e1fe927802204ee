"""Jitted decoding programs bound to the Qwen model API: Direct and Reasoning recommendation.

Each program is ONE `jax.jit` computation from prompt tokens to ranked items, so nothing
returns to the host between the prefill, the sampled reasoning and the beam search. The KV
cache is created inside the program (never materialised on the host) and carried through the
`lax.while_loop`s, so XLA updates it in place. Programs are module-level `jax.jit`s keyed on
static arguments (model config, beam, K, cache length) and input shapes: callers that keep the
batch and prompt width fixed (see `gream_jax.infer.batching`) compile once.

Reasoning mode continues on the same cache after sampling: rows that stopped early (at
`<answer>`, or at an end-of-turn token) had pad tokens fed while others were still writing, so those slots are marked
invalid in the cache's per-slot mask and the row's rotary position rewound (the model's
`KVCache` has a per-row slot mask and next position for exactly this kind of ragged batch). The
stop token itself is dropped and `<answer>` appended, with `</think>` first for rows that did not
answer (budget spent or turn ended) and never closed their thought, as a right-aligned chunk, so every row's last token is
`<answer>` and the beam starts from the first SID token's distribution.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gream_jax.index.trie import DeviceTrie
from gream_jax.infer.beam import BeamResult, constrained_beam_search, item_head_logq, rerank_with_item_head
from gream_jax.infer.sampling import sample_tokens
from gream_jax.infer.windows import attention_windows
from gream_jax.model import api


def _step_fn(model_cfg):
    return lambda params, tokens, cache, attend_len=None: api.decode_step(params, model_cfg, tokens, cache,
                                                                         attend_len)


def _prefill_and_beam(params, tokens, mask, trie, model_cfg, beam_size: int, keep: int, cache_len: int):
    """(the trie-constrained beam's best `keep` items, the prefill logits [b, V] that start it)."""
    cache = api.init_cache(model_cfg, tokens.shape[0], cache_len)
    logits, cache = api.prefill(params, model_cfg, tokens, mask, cache)
    result = constrained_beam_search(_step_fn(model_cfg), api.reorder_cache, params, logits, cache,
                                     trie, beam_size, keep)
    return result, logits


@functools.partial(jax.jit, static_argnames=("model_cfg", "beam_size", "top_k", "cache_len", "item_head_weight"))
def direct_search(params, tokens, mask, trie: DeviceTrie, item_tokens=None, *, model_cfg, beam_size: int,
                  top_k: int, cache_len: int, item_head_weight: float = 0.0) -> BeamResult:
    """Direct mode. tokens/mask [b, s] LEFT-padded prompts -> BeamResult over [b, top_k].

    item_head_weight > 0 (with item_tokens [n_items], each item's last SID token id): all
    beam_size items the beam finishes with are re-ranked by `beam.rerank_with_item_head` and the
    best top_k kept, so a wider beam gives the head more candidates."""
    keep = beam_size if item_head_weight > 0 else top_k
    result, logits = _prefill_and_beam(params, tokens, mask, trie, model_cfg, beam_size, keep, cache_len)
    if item_head_weight > 0:
        result = rerank_with_item_head(result, logits, item_tokens, item_head_weight)
        result = BeamResult(*(x[:, :top_k] for x in result))
    return result


@functools.partial(jax.jit, static_argnames=("model_cfg", "beam_size", "cache_len"))
def direct_candidates(params, tokens, mask, trie: DeviceTrie, item_tokens, *, model_cfg, beam_size: int,
                      cache_len: int) -> tuple[BeamResult, jax.Array]:
    """Direct mode's candidates before fusion: all beam_size items the beam finishes with, their
    SID scores log P(item) [b, beam_size] (best first) and the next-item head's log q(item)
    [b, beam_size] from the same prefill logits. `recommender.rank_candidates` fuses them for any
    weight on the host, so one decoding pass serves a sweep of re-ranking weights
    (config.eval.item_head_weights); with a single weight it gives direct_search's ranking."""
    result, logits = _prefill_and_beam(params, tokens, mask, trie, model_cfg, beam_size, beam_size, cache_len)
    return result, item_head_logq(result.items, logits, item_tokens)


def direct_cache_len(prompt_width: int, trie: DeviceTrie) -> int:
    return prompt_width + trie.max_depth + 1


class ReasoningSpec(NamedTuple):
    """Static settings of a reasoning program (hashable, so a jit static argument)."""
    budget: int          # max reasoning tokens sampled before `<answer>` is forced
    num_samples: int     # independent reasoning chains per user
    beam_size: int
    top_k: int
    answer_open: int     # token id of `<answer>` (the stop token)
    think_close: int     # token id of `</think>`
    pad_id: int
    # End-of-turn ids (`<|im_end|>`, EOS): a chain that ends its turn without `<answer>` stops
    # there and gets `</think>`/`<answer>` appended, like one that runs out of budget.
    end_tokens: tuple = ()
    # Decode windows (`infer.windows`): the chain's early steps read only the first multiples of
    # this many cache slots (config.eval.decode_window); 0 reads the whole cache every step.
    decode_window: int = 0
    # Ids the chain may not write (config.eval.ban_stray_answer_close: `</answer>`). Every trained
    # chain closes an answer only after `<answer>` (the stop token), so a `</answer>` in the chain
    # is ill-formed: small models write one straight after Step 5's last SID, then end the turn,
    # and the beam would answer after `...SID</answer><|im_end|><answer>` (docs/results.md, session 22).
    banned_tokens: tuple = ()
    # Max times a chain may complete one item's SID (config.eval.max_item_mentions; 0 = no limit;
    # trie-softmax models only). A trained chain names an item at most a few times (Steps 1, 3, 5);
    # Beauty's sampled chains loop on a few SIDs in Step 5 until the budget runs out.
    max_item_mentions: int = 0


class ReasoningOutput(NamedTuple):
    beams: BeamResult         # [b * n, top_k]: rows user-major (user u, sample j at u * n + j)
    think_tokens: jax.Array   # [b * n, budget] sampled ids (the stop token included where one came)
    think_lengths: jax.Array  # [b * n] tokens kept as the reasoning (the stop token excluded)
    answered: jax.Array       # [b * n] bool: the model wrote `<answer>` itself within the budget
    forced_close: jax.Array   # [b * n] bool: `</think>` was appended (no answer and no `</think>`)
    think_logprob: jax.Array  # [b * n] model log-prob of the kept reasoning tokens


def reasoning_cache_len(prompt_width: int, spec: ReasoningSpec, trie: DeviceTrie) -> int:
    return prompt_width + spec.budget + 2 + trie.max_depth + 1


def _sample_chain(params, tokens, mask, trie: DeviceTrie, rng, temperature, top_p, model_cfg,
                  spec: ReasoningSpec, cache_len: int):
    """The chain of Reasoning mode, and the cache after it with `</think>` (where the row neither
    answered nor closed its thought) and `<answer>` appended, so every row ends at `<answer>`.

    Returns (logits [b * n, V] after `<answer>`, cache, text sample, keep [b * n], answered,
    forced_close)."""
    b = tokens.shape[0]
    n = spec.num_samples
    step = _step_fn(model_cfg)
    cache = api.init_cache(model_cfg, b, cache_len)
    logits, cache = api.prefill(params, model_cfg, tokens, mask, cache)
    rows = jnp.repeat(jnp.arange(b, dtype=jnp.int32), n)
    cache, logits = api.reorder_cache(cache, rows), logits[rows]
    start = cache.index

    text = sample_tokens(step, params, logits, cache, rng, max_new_tokens=spec.budget,
                         stop_tokens=(spec.answer_open,) + tuple(spec.end_tokens),
                         temperature=temperature, top_p=top_p, pad_id=spec.pad_id, trie=trie,
                         windows=attention_windows(cache_len, spec.decode_window, first_slot=tokens.shape[1]),
                         banned_tokens=spec.banned_tokens, max_item_mentions=spec.max_item_mentions)
    cache = text.cache
    keep = jnp.where(text.stopped, text.lengths - 1, text.lengths)          # [b*n]
    last = jnp.take_along_axis(text.tokens, jnp.maximum(text.lengths - 1, 0)[:, None], axis=1)[:, 0]
    answered = text.stopped & (last == spec.answer_open)
    slot = jnp.arange(cache.mask.shape[1], dtype=jnp.int32)[None, :]
    tail = (slot >= start + keep[:, None]) & (slot < cache.index)
    cache = cache.replace(mask=cache.mask & ~tail,
                          positions=cache.positions - (cache.index - start) + keep)

    t = jnp.arange(spec.budget)[None, :]
    kept = t < keep[:, None]
    closed = ((text.tokens == spec.think_close) & kept).any(-1)
    forced_close = ~answered & ~closed
    chunk = jnp.stack([jnp.where(forced_close, spec.think_close, spec.pad_id),
                       jnp.full_like(keep, spec.answer_open)], axis=-1)
    chunk_mask = jnp.stack([forced_close, jnp.ones_like(forced_close)], axis=-1).astype(jnp.int32)
    logits, cache = api.prefill(params, model_cfg, chunk, chunk_mask, cache)
    return logits, cache, text, keep, answered, forced_close


@functools.partial(jax.jit, static_argnames=("model_cfg", "spec", "cache_len"))
def reasoning_search(params, tokens, mask, trie: DeviceTrie, rng, temperature, top_p, *, model_cfg,
                     spec: ReasoningSpec, cache_len: int) -> ReasoningOutput:
    """Reasoning mode. tokens/mask [b, s] LEFT-padded reasoning prompts; temperature/top_p traced."""
    logits, cache, text, keep, answered, forced_close = _sample_chain(
        params, tokens, mask, trie, rng, temperature, top_p, model_cfg, spec, cache_len)
    beams = constrained_beam_search(_step_fn(model_cfg), api.reorder_cache, params, logits, cache, trie,
                                    spec.beam_size, spec.top_k)
    kept = jnp.arange(spec.budget)[None, :] < keep[:, None]
    think_logprob = jnp.where(kept, text.logprobs, 0.0).sum(-1)
    return ReasoningOutput(beams=beams, think_tokens=text.tokens, think_lengths=keep,
                           answered=answered, forced_close=forced_close, think_logprob=think_logprob)


@functools.partial(jax.jit, static_argnames=("model_cfg", "spec", "cache_len"))
def sample_chains(params, tokens, mask, trie: DeviceTrie, rng, temperature, top_p, *, model_cfg,
                  spec: ReasoningSpec, cache_len: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Reasoning mode's chains alone, sampled exactly as `reasoning_search` samples them (same key,
    same tokens), without the beam: (think_tokens [b * n, budget], think_lengths [b * n], answered,
    forced_close). SRPO's chain rollouts (`train/srpo_chain.py`) answer after them."""
    _, _, text, keep, answered, forced_close = _sample_chain(
        params, tokens, mask, trie, rng, temperature, top_p, model_cfg, spec, cache_len)
    return text.tokens, keep, answered, forced_close
