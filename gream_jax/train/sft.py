"""The SFT train step: masked next-token loss, AdamW + warm-up/cosine + clipping, accumulation.

One jitted function with explicit in/out shardings: parameters and optimizer state keep the
placement `gream_jax.model.api.param_shardings` gives them (from the mesh rules); a batch
`[accum, rows, seq]` is split over the data-parallel axes on `rows`. Gradients of micro-batches are
summed and divided by the total number of target tokens, so accumulation equals one large batch.
The model enters as `apply_fn(params, tokens, attention_mask, positions, segment_ids) -> logits`,
which keeps this module independent of the model's internals (and testable with any tiny model).
Two throughput levers (config.train): `loss_chunk_tokens` (chunked vocabulary loss, needs
`apply_fn(..., return_hidden=True)` and `head_fn`) and `causal_fast_path` (mask-free causal
attention for unpacked, unpadded micro-batches, where `apply_fn` gets None mask/segments).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gream_jax import mesh as mesh_lib
from gream_jax.model import trie_softmax
from gream_jax.train.losses import (chunked_masked_nll, label_logprobs, per_segment_sums, sequence_unlikelihood,
                                    token_nll_terms)

ApplyFn = Callable[..., jax.Array]
# `unlikely` marks tokens whose probability the loss pushes down (the repeat negatives of dense
# windows, batching.pack); batches built without it get zeros (`device_batch`).
BATCH_KEYS = ("tokens", "segment_ids", "positions", "targets", "unlikely")


def learning_rate_schedule(train_cfg) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        # Starts at lr / (warmup + 1), not 0, so the first update is not wasted.
        init_value=float(train_cfg.lr) / (int(train_cfg.warmup_steps) + 1), peak_value=float(train_cfg.lr), warmup_steps=int(train_cfg.warmup_steps),
        decay_steps=int(train_cfg.steps), end_value=float(train_cfg.lr) * float(train_cfg.end_lr_factor))


def _decay_mask(params):
    """Weight decay on matrices only (not norms, biases or scalars)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(float(train_cfg.grad_clip)),
        optax.adamw(learning_rate_schedule(train_cfg), b1=float(train_cfg.b1), b2=float(train_cfg.b2),
                    weight_decay=float(train_cfg.weight_decay), mask=_decay_mask))


def masked_nll(logits: jax.Array, tokens: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sum of -log p(token) over target tokens, their count, and how many the argmax gets right.

    logits [b, s, V] predict the token after each position; targets [b, s] marks tokens to learn
    (never the first token of a segment, so a prediction never crosses an example boundary).
    The labels are shifted instead of the logits (the last position gets weight 0), so the backward
    pass writes the logits' gradient in place rather than padding a [b, s - 1, V] slice back out.
    """
    labels = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    weights = jnp.concatenate([targets[:, 1:], jnp.zeros_like(targets[:, :1])], axis=1).astype(jnp.float32)
    nll, correct = token_nll_terms(logits.astype(jnp.float32), labels, weights)
    return nll, weights.sum(), correct


def _cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_train_step(apply_fn: ApplyFn, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    compute_dtype: str = "float32", loss_chunk_tokens: int = 0,
                    head_fn: Callable[[Any], jax.Array] | None = None, causal_fast_path: bool = False,
                    dropout: bool = False, repeat_unlikelihood: float = 0.0, trie_loss=None):
    """Returns step(state, batch) -> (state, metrics); batch arrays are [accum, rows, seq].

    loss_chunk_tokens > 0: the loss never materialises [rows, seq, vocab] logits; `apply_fn` is
    called with `return_hidden=True` (final hidden states [rows, seq, d]) and `head_fn(params)`
    gives the LM head rows [vocab, d]; `gream_jax.train.losses.chunked_masked_nll` then computes
    the same loss and gradients one chunk of tokens at a time (recomputed in the backward pass).
    causal_fast_path: a micro-batch whose segment ids are all 1 (no padding, one example per row)
    runs the model with attention_mask=None and segment_ids=None, i.e. plain causal attention with
    no mask array (cuDNN's causal kernel on GPU); any other micro-batch takes the masked path.
    Chosen at run time with `lax.cond`, so it is always correct; the cost is a second compiled
    copy of the forward/backward pass.
    dropout: `apply_fn` also takes `dropout_rng=`; each micro-batch gets its own key, derived from
    the state's seed, the step and the micro-batch index (so a resumed run draws the same masks).
    repeat_unlikelihood > 0: adds that weight times `losses.sequence_unlikelihood` of the token
    sequences `batch["unlikely"]` marks (at most one per example) to the summed loss (same
    denominator as the cross-entropy), and logs `repeat_p` (the sequences' mean probability) and
    `repeat_items` (how many); `loss` stays the cross-entropy.
    trie_loss = (DeviceTrie, outer_ids [n_outer], level_ids or None, next_item or None): the
    trie-factored softmax (`gream_jax.model.trie_softmax`, config.model.sid_softmax="trie"/"level"):
    inside an SID a token is scored against its trie siblings (or, with level_ids, its whole SID
    level), elsewhere against the outer vocabulary, with no vocabulary-wide matmul; needs
    `apply_fn(..., return_hidden=True)` and `head_fn`. Positions whose label that distribution
    cannot produce (an SID cut mid-way) are left out and logged as `trie_unscored`.
    next_item = (first-level ids, item ids, SID length, weight) adds that weight times
    `trie_softmax.next_item_terms` (the auxiliary next-item objective) to the summed loss (same
    denominator as the cross-entropy) and logs `next_item_nll` / `next_item_accuracy`; `loss`
    stays the SID cross-entropy.
    """
    if int(loss_chunk_tokens) < 0:
        raise ValueError(f"loss_chunk_tokens={loss_chunk_tokens}: must be >= 0 (0 = full logits)")
    if loss_chunk_tokens and head_fn is None:
        raise ValueError("loss_chunk_tokens > 0 needs head_fn(params) -> LM head rows [vocab, d]")
    dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32
    ul_weight = float(repeat_unlikelihood)
    if ul_weight < 0:
        raise ValueError(f"repeat_unlikelihood={repeat_unlikelihood}: must be >= 0")
    if trie_loss is not None and (loss_chunk_tokens or ul_weight or head_fn is None):
        raise ValueError("trie_loss needs head_fn and excludes loss_chunk_tokens and repeat_unlikelihood")

    def loss_sum(params, micro, rng, plain: bool):
        p = _cast(params, dtype) if dtype != jnp.float32 else params
        seg = micro["segment_ids"]
        mask, seg_arg = (None, None) if plain else ((seg > 0).astype(jnp.int32), seg)
        extra = {"dropout_rng": rng} if dropout else {}
        zero = jnp.zeros(())
        if trie_loss is not None:
            trie, outer_ids, level_ids, next_item = trie_loss
            tokens = micro["tokens"]
            hidden = apply_fn(p, tokens, mask, micro["positions"], seg_arg, return_hidden=True, **extra)
            states = trie_softmax.token_states(trie, tokens)
            h, head, labels = hidden[:, :-1].astype(dtype), head_fn(p), tokens[:, 1:]
            weights = micro["targets"][:, 1:].astype(jnp.float32)
            total, count, correct, bad = trie_softmax.trie_nll_terms(
                h, head, labels, states[:, :-1], weights, trie, jnp.asarray(outer_ids), level_ids)
            if next_item is None:
                return total, (total, count, correct, zero, zero, bad, zero, zero, zero)
            first_ids, item_ids, sid_len, nx_weight = next_item
            nx, nx_count, nx_hits = trie_softmax.next_item_terms(
                h, head, labels, weights, jnp.asarray(first_ids), jnp.asarray(item_ids), int(sid_len))
            return total + float(nx_weight) * nx, (total, count, correct, zero, zero, bad, nx, nx_count, nx_hits)
        if loss_chunk_tokens:
            hidden = apply_fn(p, micro["tokens"], mask, micro["positions"], seg_arg, return_hidden=True,
                              **extra)
            # The model's head multiplies hidden states in the compute dtype; the float32 copy
            # `return_hidden` gives is exact, so casting back reproduces the plain path bit for bit.
            ul_args = {"unlikely": micro["unlikely"], "segments": seg} if ul_weight else {}
            out = chunked_masked_nll(hidden.astype(dtype), head_fn(p), micro["tokens"], micro["targets"],
                                     int(loss_chunk_tokens), **ul_args)
            total, count, correct = out[:3]
            ul, ul_p, n_ul = out[3:] if ul_weight else (jnp.zeros(()),) * 3
        else:
            logits = apply_fn(p, micro["tokens"], mask, micro["positions"], seg_arg, **extra)
            total, count, correct = masked_nll(logits, micro["tokens"], micro["targets"])
            ul, ul_p, n_ul = (jnp.zeros(()),) * 3
            if ul_weight:
                shift = lambda x: jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)  # noqa: E731
                marks = shift(micro["unlikely"]).astype(jnp.float32)
                lp = label_logprobs(logits, shift(micro["tokens"]))
                size = seg.shape[1]
                ul, ul_p, n_ul = sequence_unlikelihood(per_segment_sums(marks * lp, shift(seg), size),
                                                       per_segment_sums(marks, shift(seg), size) > 0)
        return total + ul_weight * ul, (total, count, correct, ul_p, n_ul, zero, zero, zero, zero)

    masked_grad = jax.value_and_grad(functools.partial(loss_sum, plain=False), has_aux=True)
    plain_grad = jax.value_and_grad(functools.partial(loss_sum, plain=True), has_aux=True)

    def grad_fn(params, micro, rng):
        if not causal_fast_path:
            return masked_grad(params, micro, rng)
        plain = jnp.all(micro["segment_ids"] == 1)
        return jax.lax.cond(plain, plain_grad, masked_grad, params, micro, rng)

    def step(state, batch):
        params = state["params"]
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

        def body(carry, xs):
            micro, index = xs
            g_acc, sums = carry
            (l, aux), g = grad_fn(params, micro, jax.random.fold_in(step_key, index))
            del l                                   # = nll + weight * ul; aux has both parts
            return (jax.tree.map(jnp.add, g_acc, g), tuple(a + v for a, v in zip(sums, aux))), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        init = (zeros, (jnp.zeros(()),) * 9)
        accum = jax.tree.leaves(batch)[0].shape[0]
        (grads, (total, count, correct, ul_p, n_ul, unscored, nx, nx_count, nx_hits)), _ = jax.lax.scan(
            body, init, (batch, jnp.arange(accum, dtype=jnp.int32)))
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
                     "step": state["step"] + 1, "rng": state["rng"]}
        metrics = {"loss": total / denom, "token_accuracy": correct / denom, "target_tokens": count,
                   "grad_norm": optax.tree.norm(grads), "lr": schedule(state["step"])}
        if trie_loss is not None:
            metrics["trie_unscored"] = unscored
        if trie_loss is not None and trie_loss[3] is not None:
            metrics["next_item_nll"] = nx / jnp.maximum(nx_count, 1.0)
            metrics["next_item_accuracy"] = nx_hits / jnp.maximum(nx_count, 1.0)
        if ul_weight:
            metrics["repeat_p"] = ul_p / jnp.maximum(n_ul, 1.0)
            metrics["repeat_items"] = n_ul
        return new_state, metrics

    return step


def opt_state_shardings(optimizer: optax.GradientTransformation, params, mesh) -> Any:
    """Shardings of the optimizer state: every params-shaped tree (AdamW mu/nu) gets exactly the
    parameters' shardings, everything else (counts) is replicated as a NamedSharding on `mesh`.

    `params` may be concrete arrays or `jax.ShapeDtypeStruct`s carrying `.sharding` (AOT). Left to
    `jax.jit(optimizer.init)`, XLA would replicate the zero-initialised moments on every device
    (they do not depend on the parameters' values), silently losing FSDP for 2/3 of the state."""
    rep = mesh_lib.replicated(mesh)
    abstract = jax.eval_shape(optimizer.init, params)
    return optax.tree_map_params(optimizer, lambda _, p: p.sharding, abstract, params,
                                 transform_non_params=lambda _: rep)


def init_state(params, optimizer: optax.GradientTransformation, seed: int, mesh) -> dict:
    """Optimizer moments inherit each parameter's sharding; scalars (step, counts, RNG) are
    replicated over the whole mesh (as NamedShardings, also on a one-device mesh) so the jitted
    step sees the same input shardings on every call and compiles once."""
    rep = mesh_lib.replicated(mesh)
    opt_state = jax.jit(optimizer.init, out_shardings=opt_state_shardings(optimizer, params, mesh))(params)
    return {"params": params, "opt_state": opt_state, "step": jax.device_put(jnp.zeros((), jnp.int32), rep),
            "rng": jax.device_put(jax.random.key_data(jax.random.key(seed)), rep)}


def state_shardings(state) -> Any:
    return jax.tree.map(lambda x: x.sharding, state)


def batch_sharding(mesh, rules):
    """[accum, rows, seq]: rows split over the data-parallel axes."""
    return mesh_lib.logical_sharding(mesh, (None, "batch", None), rules)


def jit_train_step(step_fn, state, mesh, rules):
    """The jitted, sharded step; the old state's buffers are donated to the new one."""
    s_shard = state_shardings(state)
    b_shard = {k: batch_sharding(mesh, rules) for k in BATCH_KEYS}
    return jax.jit(step_fn, in_shardings=(s_shard, b_shard),
                   out_shardings=(s_shard, mesh_lib.replicated(mesh)), donate_argnums=(0,))


def device_batch(batch: dict[str, np.ndarray], accum: int, mesh, rules) -> dict[str, jax.Array]:
    """Host [rows, seq] arrays -> sharded [accum, rows / accum, seq] device arrays."""
    out = {}
    sharding = batch_sharding(mesh, rules)
    for k in BATCH_KEYS:
        v = batch[k] if k in batch else np.zeros_like(batch["targets"])
        v = v.reshape(accum, v.shape[0] // accum, *v.shape[1:])
        out[k] = jax.device_put(v.astype(np.int32), sharding)
    return out
