"""The gream_jax side: its real model (`gream_jax.model.api`), its real jitted, sharded SFT train
step (`gream_jax.train.sft`), KV-cache greedy decoding on `prefill`/`decode_step`, and the
inference package's trie-constrained beam search (`gream_jax.infer.beam`).

Levers (all from the model/trainer configs, chosen per preset in `model_config`): bfloat16 compute
with float32 master weights, cuDNN fused attention on GPU taking its mask-free causal path (the
train step's `causal_fast_path`), the chunked vocabulary loss (`loss_chunk_tokens`), `nn.scan`
over layers, a remat policy, and donated state/cache buffers (the train step donates the old
state; generation carries the KV cache, updated in place, through its decode loop). Weights come from the Hugging Face directory the harness wrote, through gream_jax's own
sharded loader, so the PyTorch side runs the very same model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax import mesh as mesh_lib
from gream_jax.bench import workload
from gream_jax.bench.timing import time_calls


def model_config(preset, attention: str | None = None, remat: str | None = None,
                 scan_layers: bool = True):
    """ModelConfig for the preset: compute in the preset dtype, master weights in float32."""
    from gream_jax.model.config import ModelConfig
    s = preset.shape
    if attention is None:
        attention = "cudnn" if jax.default_backend() == "gpu" and preset.dtype == "bfloat16" else "xla"
    return ModelConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_layers=s.num_layers, num_heads=s.num_heads, num_kv_heads=s.num_kv_heads,
        head_dim=s.head_dim, rope_theta=s.rope_theta, rms_norm_eps=s.rms_norm_eps,
        tie_word_embeddings=s.tie_word_embeddings, max_position_embeddings=s.max_position_embeddings,
        architecture="qwen3", qk_norm=True, param_dtype="float32", dtype=preset.dtype,
        remat=remat or "none", scan_layers=scan_layers, attention=attention)


def make_mesh():
    """A one-device mesh: every row of the table is one accelerator (or the CPU) against one
    PyTorch device, and MFU is per device. Multi-device scaling is the AOT/multi-process tests'."""
    return mesh_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def load_params(checkpoint: str, model_cfg, mesh):
    """The HF directory's weights placed with gream_jax's sharded loader."""
    from gream_jax.model import hf_loader
    params = hf_loader.load_hf_params(checkpoint, model_cfg, mesh, mesh_lib.DEFAULT_RULES)
    return params


def _train_config():
    """The optimizer fields `gream_jax.train.sft.make_optimizer` reads from `config.train`
    (a plain namespace, so the benchmark does not need ml_collections on a bare GPU box)."""
    import types
    return types.SimpleNamespace(lr=1e-5, warmup_steps=1, steps=10_000, end_lr_factor=0.1,
                                 b1=0.9, b2=0.95, weight_decay=0.0, grad_clip=1.0)


def default_loss_chunk_tokens(preset) -> int:
    """Chunked vocabulary loss on accelerators (the [tokens, vocab] float32 logits of Qwen3-0.6B at
    8 x 2,048 are 10 GB, plus their gradient); off on the CPU, where memory is not the limit."""
    return 4096 if jax.default_backend() != "cpu" else 0


def bench_train(checkpoint: str, preset, attention=None, remat=None, scan_layers=True,
                budget_s: float | None = None, loss_chunk_tokens: int | None = None,
                causal_fast_path: bool = True) -> dict:
    """gream_jax.train.sft step on [batch, seq] tokens (one segment per row, loss on all tokens).

    The step is the SFT stage's own, with its two levers: `causal_fast_path` (the rows are unpacked
    and unpadded, so the run-time check picks mask-free causal attention) and `loss_chunk_tokens`
    (None = `default_loss_chunk_tokens`; 0 = full logits)."""
    from gream_jax.model import api
    from gream_jax.train import sft
    model_cfg = model_config(preset, attention, remat, scan_layers)
    mesh = make_mesh()
    rules = mesh_lib.DEFAULT_RULES
    params = load_params(checkpoint, model_cfg, mesh)
    train_cfg = _train_config()
    optimizer, schedule = sft.make_optimizer(train_cfg), sft.learning_rate_schedule(train_cfg)
    if loss_chunk_tokens is None:
        loss_chunk_tokens = default_loss_chunk_tokens(preset)

    def apply_fn(p, tokens, attention_mask, positions, segment_ids, return_hidden=False):
        return api.forward(p, model_cfg, tokens, attention_mask, positions, segment_ids,
                           return_hidden=return_hidden)

    step_fn = sft.make_train_step(apply_fn, optimizer, schedule, compute_dtype=preset.dtype,
                                  loss_chunk_tokens=loss_chunk_tokens,
                                  head_fn=lambda p: api.lm_head_rows(p, model_cfg),
                                  causal_fast_path=causal_fast_path)
    state = _on_mesh(sft.init_state(params, optimizer, seed=0, mesh=mesh), mesh)
    del params
    tokens = workload.train_tokens(preset, seed=1).astype(np.int32)
    host = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
            "positions": np.broadcast_to(np.arange(preset.seq, dtype=np.int32), tokens.shape).copy(),
            "targets": np.ones_like(tokens)}
    with jax.set_mesh(mesh):
        jitted = sft.jit_train_step(step_fn, state, mesh, rules)
        batch = sft.device_batch(host, 1, mesh, rules)
        holder = {"state": state}

        def step():
            holder["state"], metrics = jitted(holder["state"], batch)
            step.loss = float(jax.block_until_ready(metrics["loss"]))

        timing = time_calls(step, preset.steps, preset.warmup, budget_s)
    out = timing.to_dict()
    out.update(tokens_per_s=preset.batch * preset.seq / timing.median_s, final_loss=step.loss,
               attention=model_cfg.attention, remat=model_cfg.remat, scan_layers=scan_layers,
               loss_chunk_tokens=loss_chunk_tokens, causal_fast_path=causal_fast_path,
               peak_memory_gib=_peak_memory_gib())
    return out


@functools.partial(jax.jit, static_argnames=("model_cfg", "new_tokens"))
def greedy_generate(params, prompt, model_cfg, new_tokens: int):
    """prompt [b, p] (no padding) -> [b, new_tokens] greedy ids; KV cache prefilled once, then
    one `decode_step` per token inside a `fori_loop` (the cache is carried, updated in place)."""
    from gream_jax.model import api
    b, p = prompt.shape
    cache = api.init_cache(model_cfg, b, p + new_tokens)
    logits, cache = api.prefill(params, model_cfg, prompt, jnp.ones_like(prompt), cache)
    first = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    out = jnp.zeros((b, new_tokens), jnp.int32).at[:, 0].set(first)

    def body(i, carry):
        out, last, cache = carry
        logits, cache = api.decode_step(params, model_cfg, last, cache)
        nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return out.at[:, i].set(nxt), nxt, cache

    out, _, _ = jax.lax.fori_loop(1, new_tokens, body, (out, first, cache))
    return out


def _inference_params(checkpoint, preset, attention):
    """Weights cast once to the compute dtype (bf16 serving), like the PyTorch side's `.to()`."""
    model_cfg = model_config(preset, attention)
    if preset.dtype != "float32":
        model_cfg = model_cfg.replace(param_dtype=preset.dtype)
    mesh = make_mesh()
    params = load_params(checkpoint, model_cfg.replace(param_dtype="float32"), mesh)
    params = jax.tree.map(lambda x: x.astype(model_cfg.jnp_param_dtype), params)
    return model_cfg, mesh, params


def bench_generate(checkpoint: str, preset, attention=None, budget_s: float | None = None) -> dict:
    # cuDNN attention needs query length > 1 on some versions; decoding uses XLA attention.
    model_cfg, mesh, params = _inference_params(checkpoint, preset, attention or "xla")
    prompt = jnp.asarray(workload.prompt_tokens(preset.gen_batch, preset.gen_prompt,
                                                preset.shape.vocab_size, seed=2).astype(np.int32))
    with jax.set_mesh(mesh):
        def call():
            call.out = np.asarray(jax.block_until_ready(
                greedy_generate(params, prompt, model_cfg, preset.gen_new)))

        timing = time_calls(call, max(preset.steps, 3), preset.warmup, budget_s)
    out = timing.to_dict()
    out.update(new_tokens_per_s=preset.gen_batch * preset.gen_new / timing.median_s,
               peak_memory_gib=_peak_memory_gib())
    out["first_tokens"] = call.out[:, :8].tolist()
    return out


def bench_beam(checkpoint: str, preset, attention=None, budget_s: float | None = None) -> dict:
    """Prefill + gream_jax.infer.beam.constrained_beam_search, one jitted call per batch of users."""
    from gream_jax.index.trie import build_trie_from_codes
    from gream_jax.infer.beam import constrained_beam_search
    from gream_jax.model import api
    model_cfg, mesh, params = _inference_params(checkpoint, preset, attention or "xla")
    codes = workload.sid_codes(preset, seed=3)
    token_table = workload.sid_token_table(preset)
    trie = build_trie_from_codes(codes, np.full(len(codes), codes.shape[1])).to_device(token_table)
    prompt = jnp.asarray(workload.prompt_tokens(preset.beam_users, preset.beam_prompt,
                                                int(token_table.min()), seed=4).astype(np.int32))
    levels = len(preset.sid_levels)
    step_fn = lambda p, tokens, cache: api.decode_step(p, model_cfg, tokens, cache)

    @jax.jit
    def recommend(params, prompt, trie):
        cache = api.init_cache(model_cfg, prompt.shape[0], prompt.shape[1] + levels)
        logits, cache = api.prefill(params, model_cfg, prompt, jnp.ones_like(prompt), cache)
        res = constrained_beam_search(step_fn, api.reorder_cache, params, logits, cache, trie,
                                      preset.beam_size, preset.beam_topk)
        return res.items, res.tokens

    with jax.set_mesh(mesh):
        def call():
            items, tokens = jax.block_until_ready(recommend(params, prompt, trie))
            call.items = np.asarray(items)

        timing = time_calls(call, max(preset.steps, 3), preset.warmup, budget_s)
    out = timing.to_dict()
    out.update(users_per_s=preset.beam_users / timing.median_s)
    out["top_items"] = call.items.tolist()
    return out


def forward_logits(checkpoint: str, preset, tokens: np.ndarray) -> np.ndarray:
    """float32 logits for the weight-equality check against the PyTorch side."""
    from gream_jax.model import api
    model_cfg = model_config(preset, "xla").replace(dtype="float32")
    mesh = make_mesh()
    params = load_params(checkpoint, model_cfg, mesh)
    t = jnp.asarray(tokens.astype(np.int32))
    with jax.set_mesh(mesh), jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(lambda p, t: api.forward(p, model_cfg, t, jnp.ones_like(t)))(params, t))


def _on_mesh(tree, mesh):
    """Replicates leaves that are not yet on the mesh (the scalar step / optimizer counts):
    otherwise the first call sees single-device scalars and the second call, fed the step's
    mesh-replicated outputs, compiles the whole train step a second time."""
    from jax.sharding import NamedSharding
    rep = mesh_lib.replicated(mesh)
    return jax.tree.map(
        lambda x: x if isinstance(x.sharding, NamedSharding) else jax.device_put(x, rep), tree)


def _peak_memory_gib() -> float | None:
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30
