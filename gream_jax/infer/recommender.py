"""Direct and Reasoning recommendation for lists of user histories (host side of the decoders).

Builds prompts with the training prompt builders (`gream_jax.tasks.prompts`), pads them into
fixed-shape batches (`batching`), places each batch on the mesh's data axes and runs the jitted
programs of `decoder`. `recommend_direct` is what the SFT trainer calls for periodic validation:
the jitted program is cached by shape, so repeated calls on the same users compile once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax import mesh as mesh_lib
from gream_jax.index.trie import DeviceTrie, Trie
from gream_jax.infer import batching, decoder
from gream_jax.infer.beam import NEG_INF
from gream_jax.tasks.tokens import token_id_or_none
from gream_jax.utils.logging import Progress


@dataclasses.dataclass
class Ranked:
    items: np.ndarray    # [n_users, K] item indices best first, -1 = empty slot
    scores: np.ndarray   # [n_users, K] log P(item | prompt[, reasoning])


@dataclasses.dataclass
class Candidates:
    """Direct mode's beam before re-ranking (`decoder.direct_candidates`)."""
    items: np.ndarray       # [n_users, beam] item indices by SID score, best first; -1 = empty slot
    sid_scores: np.ndarray  # [n_users, beam] log P(item | prompt) through the SID tokens
    head_logq: np.ndarray   # [n_users, beam] log q(item | prompt) of the next-item head


@dataclasses.dataclass
class ReasoningRanked(Ranked):
    sample_items: np.ndarray    # [n_users, S, K] each reasoning chain's own beam
    sample_scores: np.ndarray   # [n_users, S, K]
    texts: list                 # [n_users][S] decoded reasoning text
    answered: np.ndarray        # [n_users, S] the model wrote `<answer>` itself within the budget
    forced_close: np.ndarray    # [n_users, S] `</think>` had to be appended
    think_tokens: np.ndarray    # [n_users, S] reasoning length in tokens


_TRIE_CACHE: dict = {}


def sid_token_table(tokenizer, semantic_ids) -> np.ndarray:
    from gream_jax.model.tokenizer import sid_token_table as table  # the model package owns the vocab
    return table(tokenizer, semantic_ids)


def renormalise(config) -> bool:
    """Whether decoders score SID tokens against their trie siblings (config.model.sid_softmax)."""
    return str(config.model.sid_softmax) in ("trie", "level")


def check_sid_softmax(config, model_meta: dict, model_dir: str) -> None:
    """Refuses to decode a model under another output distribution than it was trained with, or
    to re-rank with a next-item head it was never trained to have (config.eval.item_head_weight)."""
    trained = str(model_meta.get("sid_softmax", "vocab"))
    if trained != str(config.model.sid_softmax):
        raise ValueError(f"{model_dir}: the model was trained with sid_softmax={trained!r} (meta.json) but "
                         f"config.model.sid_softmax={config.model.sid_softmax!r}; pass "
                         f"--config.model.sid_softmax={trained}")
    head = float(model_meta.get("next_item_weight", 0.0))
    if uses_item_head(config) and head <= 0:
        raise ValueError(f"{model_dir}: {_head_fields(config)} re-ranks with the next-item head, but this "
                         f"model was trained without it (meta.json next_item_weight={head}); pass "
                         f"--config.eval.item_head_weight=0 \"--config.eval.item_head_weights=()\"")


def uses_item_head(config) -> bool:
    """Whether Direct mode re-ranks with the next-item head: a fixed weight, or a sweep on
    validation (config.eval.item_head_weights) with some weight above 0."""
    ev = config.eval
    return float(ev.item_head_weight) > 0 or any(float(w) > 0 for w in ev.item_head_weights)


def _head_fields(config) -> str:
    ev = config.eval
    return (f"config.eval.item_head_weights={tuple(ev.item_head_weights)}" if ev.item_head_weights
            else f"config.eval.item_head_weight={ev.item_head_weight}")


def item_head_tokens(tokenizer, semantic_ids, config, mesh, *, force: bool = False) -> jax.Array | None:
    """[n_items] each item's item-unique last SID token id (replicated), or None when Direct mode
    does not use the next-item head (`uses_item_head`) and `force` is off."""
    if not (force or uses_item_head(config)):
        return None
    from gream_jax.index.sid import require_item_unique_last_level
    require_item_unique_last_level(semantic_ids, _head_fields(config))
    table = sid_token_table(tokenizer, semantic_ids)
    tokens = table[-1][np.asarray(semantic_ids.codes)[:, -1]].astype(np.int32)
    return jax.device_put(tokens, mesh_lib.replicated(mesh))


def device_trie(trie, tokenizer, semantic_ids, mesh, renormalise: bool = False) -> DeviceTrie:
    """The trie on device with edges mapped to vocabulary ids (cached per trie/tokenizer)."""
    if isinstance(trie, DeviceTrie):
        if trie.renormalise != renormalise:
            raise ValueError(f"DeviceTrie built with renormalise={trie.renormalise}, but this model's "
                             f"config.model.sid_softmax asks for renormalise={renormalise}")
        return trie
    if not isinstance(trie, Trie):
        raise TypeError(f"trie: expected gream_jax.index.trie.Trie or DeviceTrie, got {type(trie).__name__}")
    key = (id(trie), id(tokenizer), id(semantic_ids), id(mesh), bool(renormalise))
    hit = _TRIE_CACHE.get(key)
    if hit is None or hit[0] is not trie:
        if len(_TRIE_CACHE) > 8:
            _TRIE_CACHE.clear()
        dev = trie.to_device(sid_token_table(tokenizer, semantic_ids), mesh_lib.replicated(mesh), renormalise)
        hit = _TRIE_CACHE[key] = (trie, dev)
    return hit[1]


def _histories(histories) -> list[np.ndarray]:
    """Accepts a list of item-index arrays or a [n, H] array left-padded with -1."""
    if isinstance(histories, np.ndarray) and histories.ndim == 2:
        return [row[row >= 0] for row in histories]
    return [np.asarray(h, np.int32).reshape(-1) for h in histories]


def _place(mesh, model_cfg, *arrays):
    sharding = mesh_lib.batch_sharding(mesh, 2, model_cfg.rules)
    return [jax.device_put(a, sharding) for a in arrays]


def _direct_batches(program, model_cfg, tokenizer, semantic_ids, trie, histories, config, mesh, name):
    """Runs program(tokens, mask, device_trie, cache_len) -> tuple of [batch, ...] arrays over the
    histories' Direct-mode prompts in fixed-shape batches; returns each output concatenated."""
    from gream_jax.tasks.prompts import direct_prompt_ids
    ev = config.eval
    dev = device_trie(trie, tokenizer, semantic_ids, mesh, renormalise(config))
    prompts = [direct_prompt_ids(tokenizer, semantic_ids, h, config) for h in _histories(histories)]
    width = batching.prompt_width(prompts, ev.prompt_bucket)
    cache_len = decoder.direct_cache_len(width, dev)
    batch = batching.resolve_batch(ev, model_cfg, cache_len, ev.beam_size, mesh, n_users=len(prompts))
    parts = []
    progress = Progress(name, total=len(prompts), unit="users")
    for lo, hi in batching.batches(len(prompts), batch):
        tokens, mask = batching.left_pad(prompts[lo:hi], width, batch, int(tokenizer.pad_id))
        tokens, mask = _place(mesh, model_cfg, tokens, mask)
        with jax.set_mesh(mesh):
            out = program(tokens, mask, dev, cache_len)
        parts.append([np.asarray(a)[:hi - lo] for a in out])
        progress.update(hi - lo)
    progress.close()
    return [np.concatenate(column) for column in zip(*parts)]


def recommend_direct(params, model_cfg, tokenizer, semantic_ids, trie, histories, config, mesh,
                     *, name: str = "direct") -> Ranked:
    """Top-K items (config.eval.top_k, beam config.eval.beam_size) for each history, re-ranked
    with the next-item head at config.eval.item_head_weight when that is > 0."""
    ev = config.eval
    weight = float(ev.item_head_weight)
    head_tokens = item_head_tokens(tokenizer, semantic_ids, config, mesh) if weight > 0 else None

    def program(tokens, mask, dev, cache_len):
        res = decoder.direct_search(params, tokens, mask, dev, head_tokens, model_cfg=model_cfg,
                                    beam_size=int(ev.beam_size), top_k=int(ev.top_k), cache_len=cache_len,
                                    item_head_weight=weight)
        return res.items, res.scores

    items, scores = _direct_batches(program, model_cfg, tokenizer, semantic_ids, trie, histories, config,
                                    mesh, name)
    return Ranked(items=items, scores=scores)


def direct_candidates(params, model_cfg, tokenizer, semantic_ids, trie, histories, config, mesh,
                      *, name: str = "direct") -> Candidates:
    """All config.eval.beam_size items of Direct mode's beam per history, with their SID scores
    and the next-item head's log q, unfused: `rank_candidates` orders them for any weight."""
    ev = config.eval
    head_tokens = item_head_tokens(tokenizer, semantic_ids, config, mesh, force=True)

    def program(tokens, mask, dev, cache_len):
        res, logq = decoder.direct_candidates(params, tokens, mask, dev, head_tokens, model_cfg=model_cfg,
                                              beam_size=int(ev.beam_size), cache_len=cache_len)
        return res.items, res.scores, logq

    items, sid_scores, logq = _direct_batches(program, model_cfg, tokenizer, semantic_ids, trie, histories,
                                              config, mesh, name)
    return Candidates(items=items, sid_scores=sid_scores, head_logq=logq)


def rank_candidates(candidates: Candidates, weight: float, top_k: int) -> Ranked:
    """The best top_k candidates by log P(item) + weight * log q(item) (weight 0: the SID score
    alone), ties kept in beam order: the host-side twin of `beam.rerank_with_item_head`."""
    ok = candidates.items >= 0
    fused = np.where(ok, candidates.sid_scores.astype(np.float32)
                     + np.float32(weight) * candidates.head_logq.astype(np.float32), np.float32(NEG_INF))
    order = np.argsort(-fused, axis=-1, kind="stable")[:, :top_k]
    return Ranked(items=np.take_along_axis(candidates.items, order, axis=-1),
                  scores=np.take_along_axis(fused, order, axis=-1))


def merge_samples(sample_items: np.ndarray, sample_scores: np.ndarray, top_k: int):
    """One list from S reasoning chains: rank by log mean_j P(item | prompt, chain j).

    A Monte-Carlo estimate of P(item | prompt) with the reasoning marginalised out; an item absent
    from chain j's beam counts as probability 0 there. [n, S, K] -> ([n, top_k], [n, top_k]).
    """
    n, s, _ = sample_items.shape
    items = np.full((n, top_k), -1, np.int64)
    scores = np.full((n, top_k), NEG_INF, np.float64)
    for u in range(n):
        acc: dict[int, float] = {}
        for j in range(s):
            for it, sc in zip(sample_items[u, j], sample_scores[u, j]):
                if it >= 0:
                    acc[int(it)] = np.logaddexp(acc.get(int(it), -np.inf), float(sc))
        best = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        for r, (it, sc) in enumerate(best):
            items[u, r], scores[u, r] = it, sc - np.log(s)
    return items, scores


def reasoning_spec(tokenizer, config) -> decoder.ReasoningSpec:
    from gream_jax.tasks.example import ANSWER_CLOSE, ANSWER_OPEN, IM_END, THINK_CLOSE
    ev = config.eval
    ids = {}
    for tok in (ANSWER_OPEN, THINK_CLOSE, ANSWER_CLOSE):
        tid = token_id_or_none(tokenizer, tok)
        if tid is None:
            raise ValueError(f"tokenizer has no {tok!r} token: reasoning mode needs the task special tokens")
        ids[tok] = int(tid)
    end = {int(tokenizer.eos_id)}
    if token_id_or_none(tokenizer, IM_END) is not None:
        end.add(token_id_or_none(tokenizer, IM_END))
    return decoder.ReasoningSpec(budget=int(ev.reasoning_budget), num_samples=int(ev.num_samples),
                                 beam_size=int(ev.beam_size), top_k=int(ev.top_k),
                                 answer_open=ids[ANSWER_OPEN], think_close=ids[THINK_CLOSE],
                                 pad_id=int(tokenizer.pad_id), end_tokens=tuple(sorted(end)),
                                 decode_window=int(ev.decode_window),
                                 banned_tokens=(ids[ANSWER_CLOSE],) if ev.ban_stray_answer_close else (),
                                 max_item_mentions=int(ev.max_item_mentions) if renormalise(config) else 0)


def recommend_reasoning(params, model_cfg, tokenizer, semantic_ids, trie, histories, config, mesh,
                        *, name: str = "reasoning") -> ReasoningRanked:
    """Reasoning chains (config.eval.num_samples per user) then the constrained beam per chain."""
    from gream_jax.tasks.prompts import reasoning_prompt_ids
    ev = config.eval
    dev = device_trie(trie, tokenizer, semantic_ids, mesh, renormalise(config))
    spec = reasoning_spec(tokenizer, config)
    prompts = [reasoning_prompt_ids(tokenizer, semantic_ids, h, config) for h in _histories(histories)]
    width = batching.prompt_width(prompts, ev.prompt_bucket)
    cache_len = decoder.reasoning_cache_len(width, spec, dev)
    batch = batching.resolve_batch(ev, model_cfg, cache_len, spec.beam_size, mesh,
                                   rows_per_user=spec.num_samples, n_users=len(prompts))
    key = jax.random.PRNGKey(int(config.seed) + int(ev.seed_offset))
    s, k = spec.num_samples, spec.top_k
    parts = []
    progress = Progress(name, total=len(prompts), unit="users")
    for lo, hi in batching.batches(len(prompts), batch):
        tokens, mask = batching.left_pad(prompts[lo:hi], width, batch, spec.pad_id)
        tokens, mask = _place(mesh, model_cfg, tokens, mask)
        with jax.set_mesh(mesh):
            out = decoder.reasoning_search(params, tokens, mask, dev, jax.random.fold_in(key, lo),
                                           jnp.float32(ev.temperature), jnp.float32(ev.top_p),
                                           model_cfg=model_cfg, spec=spec, cache_len=cache_len)
        out = jax.tree.map(lambda a: np.asarray(a)[:(hi - lo) * s], out)
        parts.append(out)
        progress.update(hi - lo)
    progress.close()
    cat = lambda f: np.concatenate([f(p) for p in parts])
    n = len(prompts)
    sample_items = cat(lambda p: p.beams.items).reshape(n, s, k)
    sample_scores = cat(lambda p: p.beams.scores).reshape(n, s, k)
    think = cat(lambda p: p.think_tokens)
    lengths = cat(lambda p: p.think_lengths)
    texts = [[tokenizer.decode([int(t) for t in think[u * s + j, :lengths[u * s + j]]])
              for j in range(s)] for u in range(n)]
    items, scores = merge_samples(sample_items, sample_scores, k)
    return ReasoningRanked(items=items, scores=scores, sample_items=sample_items,
                           sample_scores=sample_scores, texts=texts,
                           answered=cat(lambda p: p.answered).reshape(n, s),
                           forced_close=cat(lambda p: p.forced_close).reshape(n, s),
                           think_tokens=lengths.reshape(n, s))
