"""SRPO policy update: response log-probabilities, the clipped + KL token loss, one jitted update.

Layout of a rollout batch (built by `gream_jax/train/srpo_rollouts.py`): every sequence is its
prompt LEFT-padded to `prompt_len` followed by its response RIGHT-padded to `response_len`:
  tokens          [n_micro, micro, S] int32   S = prompt_len + response_len
  attention_mask  [n_micro, micro, S] int32   1 = real token
  response_mask   [n_micro, micro, R] float32 1 = a response token that carries loss
  advantages      [n_micro, micro]    float32 one value per sequence, broadcast to its tokens
                  (or [n_micro, micro, R]: one per response token, `config.rl.credit_assignment="level"`)
  old_logp, ref_logp [n_micro, micro, R] float32
The leading `n_micro` axis is scanned (gradient accumulation), the `micro` axis is split over the
mesh's data-parallel axes (logical axis `batch`), so memory is bounded by one micro-batch.
Shared-prefix rows (`group_size` > 0, `config.rl.shared_prefix`): a row is one GROUP, its prompt
once and its G responses after it, `S = prompt_len + G response_len`; response_mask, advantages
(per token) and the log-probs are `[n_micro, micro, G R]` (`shared_prefix_logprobs`).

Loss (GREAM / DAPO-style, token level): ratio = exp(logp - old_logp);
  pg = max(-A ratio, -A clip(ratio, 1 - eps_low, 1 + eps_high)), and for A < 0 also
  pg = min(pg, -A dual_clip) (dual clip); kl = exp(ref - logp) - (ref - logp) - 1 (k3, clamped
  to [-10, 10]); loss = sum((pg + kl_coef kl) mask) / sum(mask) over the whole mini-batch
  (token-mean aggregation). The reference parameters only enter through `ref_logp`, computed
  once per batch with the same jitted forward, so they are never differentiated nor updated.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gream_jax import mesh as mesh_lib
from gream_jax.infer.beam import item_head_logq
from gream_jax.model import api as model_api
from gream_jax.model import trie_softmax
from gream_jax.model.decoder import shared_prefix_layout

BATCH_AXES = (None, "batch", None)     # logical axes of [n_micro, micro, seq] arrays


@dataclasses.dataclass(frozen=True)
class LossConfig:
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip: float = 10.0
    kl_coef: float = 0.001

    @classmethod
    def from_config(cls, rl) -> "LossConfig":
        return cls(float(rl.clip_eps_low), float(rl.clip_eps_high), float(rl.dual_clip), float(rl.kl_coef))


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Left-padded rows: position 0 at the first real token. `[b, s]` -> `[b, s]` int32."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def lm_head(params, model_cfg, hidden):
    """The decoder's output projection on final-normed hidden states `[b, r, d]` -> logits `[b, r, V]`.

    Applied to the response positions only: the prompt's logits are never needed, and for Direct
    rollouts (R = SID length, S ~ 100) this is ~25x less memory than full-sequence logits.
    """
    dtype = model_cfg.jnp_dtype
    if model_cfg.tie_word_embeddings:
        return jnp.einsum("brd,vd->brv", hidden.astype(dtype), params["embed_tokens"].astype(dtype),
                          preferred_element_type=jnp.float32)
    return jnp.einsum("brd,dv->brv", hidden.astype(dtype), params["lm_head"].astype(dtype),
                      preferred_element_type=jnp.float32)


def response_logprobs(params, model_cfg, tokens, attention_mask, response_len: int, trie=None, head=None,
                      head_weight: float = 0.0):
    """Log-probability and entropy of each response token: `[b, S]` -> (`[b, R]`, `[b, R]`).

    The logit at position t scores token t + 1, so the response's R tokens are scored by the
    hidden states at positions S - R - 1 .. S - 2. With a `trie` (a trie-softmax model,
    `DeviceTrie.renormalise`) the distribution is that model's own (`trie_softmax.mask_logits`
    at each position's SID-trie state), the one its rollouts were drawn from.

    head (`config.rl.policy_item_head`): dict(item_tokens [n_items], item_of_token [V]) of the
    next-item head. The response token that names an item (its item-unique last SID token) then
    scores `log p(token | prefix) + head_weight * log q(item | prompt)`, q being the head's softmax
    over every item at the prompt's end (`beam.item_head_logq`): the policy is the fused score
    Direct mode ranks with, so the update and the KL term reach the head too.
    """
    hidden = model_api.forward(params, model_cfg, tokens, attention_mask,
                               positions_from_mask(attention_mask), return_hidden=True)
    s = tokens.shape[1]
    logits = lm_head(params, model_cfg, hidden[:, s - response_len - 1:s - 1])
    states = (trie_softmax.token_states(trie, tokens)[:, s - response_len - 1:s - 1]
              if trie is not None else None)
    return _score_responses(logits, tokens[:, s - response_len:], states, trie, head, head_weight)


def shared_prefix_logprobs(params, model_cfg, tokens, attention_mask, response_len: int, group_size: int,
                           trie=None, head=None, head_weight: float = 0.0):
    """`response_logprobs` for rows that hold one prompt and its group's G responses:
    `[b, W + G R]` -> (`[b, G R]`, `[b, G R]`), response g's tokens at `[:, g R:(g + 1) R]`.

    Row layout: the prompt LEFT-padded to W, then G responses of R tokens each (right-padded),
    attended as `decoder.shared_prefix_layout` lays them out: each response sees the prompt and
    itself only. The values equal `response_logprobs` on the G rows `prompt ++ response_g`, and the
    prompt runs once instead of G times (the update of chain rollouts, whose ~550-token prompt
    precedes 4-token answers, does ~10x less work)."""
    b, s = tokens.shape
    g, r = int(group_size), int(response_len)
    w = s - g * r
    positions, mask = shared_prefix_layout(attention_mask[:, :w], attention_mask[:, w:].reshape(b, g, r))
    hidden = model_api.forward(params, model_cfg, tokens, positions=positions, mask=mask, return_hidden=True)
    # The hidden state that scores token k of response g: the prompt's last for k = 0, else
    # response g's token k - 1.
    offsets = np.arange(g)[:, None] * r + np.arange(r)[None, :] - 1                # [G, R]
    scorer = np.where(np.arange(r)[None, :] == 0, w - 1, w + offsets)
    logits = lm_head(params, model_cfg, hidden[:, scorer.reshape(-1)])             # [b, G R, V]
    targets = tokens[:, w:]
    states = None
    if trie is not None:    # each response continues the prompt's trie state, not its neighbour's
        start = trie_softmax.token_states(trie, tokens[:, :w])[:, -1]                # [b]
        answers = targets.reshape(b * g, r)
        start = jnp.repeat(start, g)
        after = trie_softmax.token_states(trie, answers[:, :-1], start)              # [b G, R - 1]
        states = jnp.concatenate([start[:, None], after], axis=1).reshape(b, g * r)
    logits = logits.reshape(b * g, r, -1)
    targets = targets.reshape(b * g, r)
    states = None if states is None else states.reshape(b * g, r)
    logp, entropy = _score_responses(logits, targets, states, trie, head, head_weight)
    return logp.reshape(b, g * r), entropy.reshape(b, g * r)


def _score_responses(logits, targets, states, trie, head, head_weight):
    """logits [n, R, V] at the positions that score targets [n, R] (position 0: the prompt's end)
    -> (log-probability, entropy) [n, R] under the policy (trie states [n, R] for a trie softmax)."""
    head_logq = None
    if head is not None and head_weight > 0:
        item = head["item_of_token"][targets]                                          # [n, R], -1: no item
        head_logq = head_weight * item_head_logq(item, logits[:, 0], head["item_tokens"])   # 0 where -1
    if trie is not None:
        logits = trie_softmax.mask_logits(trie, logits, states)
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    if head_logq is not None:
        logp = logp + head_logq
    return logp, entropy


def policy_logprobs(params, model_cfg, tokens, attention_mask, response_len: int, group_size: int = 0,
                    trie=None, head=None, head_weight: float = 0.0):
    """`response_logprobs` (group_size 0: a row per response) or `shared_prefix_logprobs` (a row
    per group of `group_size` responses)."""
    if group_size:
        return shared_prefix_logprobs(params, model_cfg, tokens, attention_mask, response_len, group_size,
                                      trie, head, head_weight)
    return response_logprobs(params, model_cfg, tokens, attention_mask, response_len, trie, head, head_weight)


def token_loss(logp, old_logp, ref_logp, advantages, cfg: LossConfig):
    """Per-token clipped policy-gradient + KL terms (see module docstring). All `[b, R]`.

    advantages: `[b]` (one per sequence) or `[b, R]` (one per token).
    Returns (per_token_loss, clipped [b, R] bool, kl [b, R]).
    """
    a = advantages[:, None] if advantages.ndim == 1 else advantages
    ratio = jnp.exp(jnp.clip(logp - old_logp, -20.0, 20.0))
    pg_unclipped = -a * ratio
    pg_clipped = -a * jnp.clip(ratio, 1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high)
    pg = jnp.maximum(pg_unclipped, pg_clipped)
    clipped = pg_clipped > pg_unclipped
    if cfg.dual_clip > 1.0:
        dual = jnp.minimum(pg, -a * cfg.dual_clip)
        clipped = clipped | ((a < 0) & (dual < pg))
        pg = jnp.where(a < 0, dual, pg)
    delta = ref_logp - logp
    kl = jnp.clip(jnp.exp(delta) - delta - 1.0, -10.0, 10.0)
    return pg + cfg.kl_coef * kl, clipped, kl


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW hyper-parameters (hashable, so compiled update functions can be cached on them)."""
    learning_rate: float = 2e-6
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0

    @classmethod
    def from_config(cls, rl) -> "OptimizerConfig":
        return cls(float(rl.learning_rate), int(rl.warmup_steps), float(rl.weight_decay), float(rl.grad_clip))


def make_optimizer(opt: OptimizerConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up to a constant rate and global-norm clipping (GREAM's recipe)."""
    schedule = (optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps) if opt.warmup_steps
                else optax.constant_schedule(opt.learning_rate))
    parts = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=opt.weight_decay))
    return optax.chain(*parts)


def batch_shardings(mesh, rules, token_advantages: bool = False) -> dict[str, Any]:
    """Shardings of the rollout batch fields (micro axis over the data-parallel mesh axes)."""
    three = mesh_lib.logical_sharding(mesh, BATCH_AXES, rules)
    two = mesh_lib.logical_sharding(mesh, BATCH_AXES[:2], rules)
    return {"tokens": three, "attention_mask": three, "response_mask": three,
            "old_logp": three, "ref_logp": three, "advantages": three if token_advantages else two}


def _abstract_params(model_cfg, mesh, rules):
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        model_api.param_shapes(model_cfg), model_api.param_shardings(model_cfg, mesh, rules))


def optimizer_shardings(model_cfg, opt: OptimizerConfig, mesh, rules):
    """Where the optimiser state lives: moments like their parameters, counters replicated."""
    compiled = jax.jit(make_optimizer(opt).init).lower(_abstract_params(model_cfg, mesh, rules)).compile()
    replicated = mesh_lib.replicated(mesh)
    return jax.tree.map(lambda sh: sh if isinstance(sh, jax.sharding.NamedSharding) and sh.mesh == mesh
                        else replicated, compiled.output_shardings)


def init_optimizer_state(model_cfg, opt: OptimizerConfig, params, mesh, rules):
    """Fresh optimiser state, placed by `optimizer_shardings`."""
    shardings = optimizer_shardings(model_cfg, opt, mesh, rules)
    return jax.jit(make_optimizer(opt).init, out_shardings=shardings)(params)


def _split_extra(extra, renormalise: bool, head_weight: float):
    """The optional trailing arguments of the jitted functions: (trie or None, head or None)."""
    extra = list(extra)
    trie = extra.pop(0) if renormalise else None
    head = extra.pop(0) if head_weight > 0 else None
    return trie, head


def _extra_shardings(mesh, renormalise: bool, head_weight: float) -> tuple:
    return (mesh_lib.replicated(mesh),) * (int(renormalise) + int(head_weight > 0))


@functools.lru_cache(maxsize=16)
def make_logprob_fn(model_cfg, mesh, rules, response_len: int, renormalise: bool = False,
                    head_weight: float = 0.0, group_size: int = 0):
    """Jitted `(params, tokens, attention_mask) -> logp [n_micro, micro, R]`, scanned over micro-batches
    (group_size > 0: rows of `shared_prefix_logprobs`, logp `[n_micro, micro, G R]`).

    One compiled forward serves the old policy and the frozen reference (same shapes, other
    params). Cached on its (hashable) arguments, so a resumed run in the same process reuses it.
    renormalise (a trie-softmax model): the function takes the `DeviceTrie` as a fourth argument;
    head_weight > 0: then the next-item head's arrays (`response_logprobs`' `head`).
    """
    shard = batch_shardings(mesh, rules)

    def run(params, tokens, attention_mask, *extra):
        trie, head = _split_extra(extra, renormalise, head_weight)

        def body(_, xs):
            t, m = xs
            logp, _ = policy_logprobs(params, model_cfg, t, m, response_len, group_size, trie, head, head_weight)
            return None, logp
        _, out = jax.lax.scan(body, None, (tokens, attention_mask))
        return out

    param_shardings = model_api.param_shardings(model_cfg, mesh, rules)
    in_shardings = ((param_shardings, shard["tokens"], shard["attention_mask"])
                    + _extra_shardings(mesh, renormalise, head_weight))
    return jax.jit(run, in_shardings=in_shardings, out_shardings=shard["old_logp"])


@functools.lru_cache(maxsize=16)
def make_update_fn(model_cfg, opt: OptimizerConfig, loss_cfg: LossConfig, mesh, rules, response_len: int,
                   renormalise: bool = False, token_advantages: bool = False, head_weight: float = 0.0,
                   group_size: int = 0):
    """Jitted `(params, opt_state, batch) -> (params, opt_state, metrics)`: one optimiser step
    (renormalise, a trie-softmax model: `(params, opt_state, batch, trie)`; token_advantages:
    `batch["advantages"]` is `[n_micro, micro, R]`, one value per response token; head_weight > 0:
    the next-item head's arrays follow, as for `make_logprob_fn`; group_size > 0: rows of
    `shared_prefix_logprobs`, response fields `[n_micro, micro, G R]`, and advantages per token).

    Gradients are accumulated over the batch's micro-batches with `lax.scan`; the loss is the
    token mean over the whole mini-batch, so the micro-batch split does not change the update.
    Parameters, optimiser state and batch have explicit shardings; params and state are donated.
    """
    optimizer = make_optimizer(opt)
    shard = batch_shardings(mesh, rules, token_advantages or group_size > 0)
    replicated = mesh_lib.replicated(mesh)
    param_shardings = model_api.param_shardings(model_cfg, mesh, rules)
    opt_shardings = optimizer_shardings(model_cfg, opt, mesh, rules)
    def update(params, opt_state, batch, *extra):
        trie, head = _split_extra(extra, renormalise, head_weight)
        denom = jnp.maximum(jnp.sum(batch["response_mask"]), 1.0)

        def micro_loss(p, mb):
            logp, entropy = policy_logprobs(p, model_cfg, mb["tokens"], mb["attention_mask"], response_len,
                                            group_size, trie, head, head_weight)
            per_token, clipped, kl = token_loss(logp, mb["old_logp"], mb["ref_logp"], mb["advantages"], loss_cfg)
            mask = mb["response_mask"]
            sums = {"loss": jnp.sum(per_token * mask), "clip_frac": jnp.sum(clipped * mask),
                    "kl": jnp.sum(kl * mask), "entropy": jnp.sum(jax.lax.stop_gradient(entropy) * mask),
                    "ratio": jnp.sum(jnp.exp(jax.lax.stop_gradient(logp) - mb["old_logp"]) * mask)}
            return sums["loss"] / denom, sums

        def body(acc, mb):
            grads, sums = jax.grad(micro_loss, has_aux=True)(params, mb)
            acc_grads, acc_sums = acc
            return (jax.tree.map(jnp.add, acc_grads, grads),
                    jax.tree.map(jnp.add, acc_sums, sums)), None

        zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("loss", "clip_frac", "kl", "entropy", "ratio")}
        (grads, sums), _ = jax.lax.scan(body, (jax.tree.map(jnp.zeros_like, params), zero_sums), batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {k: v / denom for k, v in sums.items()}
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["tokens"] = denom
        return params, opt_state, metrics

    in_shardings = (param_shardings, opt_shardings, shard) + _extra_shardings(mesh, renormalise, head_weight)
    return jax.jit(update, in_shardings=in_shardings,
                   out_shardings=(param_shardings, opt_shardings, replicated), donate_argnums=(0, 1))
