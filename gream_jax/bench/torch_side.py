"""The PyTorch side: `transformers` Qwen3ForCausalLM, eager and `torch.compile`.

This is the setup researchers compare against (and the one the GREAM peers train and serve
with): AdamW on float32 master weights with `torch.autocast` bfloat16 compute when the preset
asks for it, Hugging Face's own causal-LM loss, `generate()` for greedy KV-cache decoding and
`generate(num_beams=..., prefix_allowed_tokens_fn=...)` with a Python trie callback for
constrained beam search. The weights come from the checkpoint directory the harness wrote,
which gream_jax loads too, so both sides run the same model.
"""

from __future__ import annotations

import numpy as np

from gream_jax.bench import flops as flops_lib
from gream_jax.bench import workload
from gream_jax.bench.timing import time_calls


def hf_config(shape, dtype: str = "float32"):
    from transformers import Qwen3Config
    return Qwen3Config(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size, num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim, rope_theta=shape.rope_theta, rms_norm_eps=shape.rms_norm_eps,
        tie_word_embeddings=shape.tie_word_embeddings,
        max_position_embeddings=shape.max_position_embeddings, use_cache=True,
        bos_token_id=0, eos_token_id=1, pad_token_id=2)


def write_checkpoint(shape, directory: str, seed: int) -> None:
    """Random Qwen3 weights saved as a Hugging Face directory (config.json + safetensors)."""
    import torch
    from transformers import Qwen3ForCausalLM
    torch.manual_seed(seed)
    with torch.device(_device()):   # initialising 0.6B weights on the CPU alone takes a while
        model = Qwen3ForCausalLM(hf_config(shape)).to(torch.float32)
    model.save_pretrained(directory, safe_serialization=True)


def _device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load_model(checkpoint: str, attn: str = "sdpa"):
    import torch
    from transformers import Qwen3ForCausalLM
    model = Qwen3ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32,
                                             attn_implementation=attn)
    return model.to(_device())


def _autocast(dtype: str):
    import contextlib

    import torch
    if dtype == "bfloat16":
        return torch.autocast(_device().type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _peak_memory_gib() -> float | None:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def bench_train(checkpoint: str, preset, compiled: bool, budget_s: float | None = None) -> dict:
    """AdamW train step on [batch, seq] tokens; returns timings and tokens/s."""
    import torch
    model = load_model(checkpoint)
    model.train()
    fused = torch.cuda.is_available()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=fused)
    forward = torch.compile(model) if compiled else model
    tokens = torch.from_numpy(workload.train_tokens(preset, seed=1)).to(_device())

    def step():
        with _autocast(preset.dtype):
            loss = forward(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync()
        step.loss = float(loss.detach())

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    timing = time_calls(step, preset.steps, preset.warmup, budget_s)
    out = timing.to_dict()
    out.update(tokens_per_s=preset.batch * preset.seq / timing.median_s, final_loss=step.loss,
               peak_memory_gib=_peak_memory_gib())
    del model, opt, forward
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def bench_generate(checkpoint: str, preset, budget_s: float | None = None) -> dict:
    """Greedy `generate()` with the KV cache: gen_batch prompts of gen_prompt, gen_new new tokens."""
    import torch
    model = load_model(checkpoint)
    model.eval()
    if preset.dtype == "bfloat16":
        model = model.to(torch.bfloat16)  # inference in the compute dtype, as generate() users do
    prompt = torch.from_numpy(workload.prompt_tokens(preset.gen_batch, preset.gen_prompt,
                                                     preset.shape.vocab_size, seed=2)).to(_device())
    mask = torch.ones_like(prompt)

    def call():
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=mask, do_sample=False,
                                 max_new_tokens=preset.gen_new, min_new_tokens=preset.gen_new,
                                 pad_token_id=2, eos_token_id=None)
        _sync()
        call.out = out[:, preset.gen_prompt:].cpu().numpy()

    steps = max(3, min(preset.steps, 5))
    timing = time_calls(call, steps, 1, budget_s)
    out = timing.to_dict()
    out.update(new_tokens_per_s=preset.gen_batch * preset.gen_new / timing.median_s,
               peak_memory_gib=_peak_memory_gib())
    out["first_tokens"] = call.out[:, :8].tolist()
    del model
    return out


def bench_beam(checkpoint: str, preset, budget_s: float | None = None) -> dict:
    """`generate(num_beams, prefix_allowed_tokens_fn)` over a trie of valid SIDs; users/s."""
    import torch
    model = load_model(checkpoint)
    model.eval()
    if preset.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    sids = workload.sid_codes(preset, seed=3)
    token_table = workload.sid_token_table(preset)
    allowed = workload.prefix_allowed_table(sids, token_table)
    prompt_np = workload.prompt_tokens(preset.beam_users, preset.beam_prompt,
                                       int(token_table.min()), seed=4)
    prompt = torch.from_numpy(prompt_np).to(_device())
    plen = prompt.shape[1]
    every_token = list(range(preset.shape.vocab_size))

    def prefix_allowed(batch_id, input_ids):
        prefix = tuple(int(t) for t in input_ids[plen:].tolist())
        return allowed.get(prefix, every_token[:1])

    levels = len(preset.sid_levels)

    def call():
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                 num_beams=preset.beam_size, num_return_sequences=preset.beam_topk,
                                 max_new_tokens=levels, min_new_tokens=levels, do_sample=False,
                                 early_stopping=True, length_penalty=0.0,
                                 prefix_allowed_tokens_fn=prefix_allowed, pad_token_id=2,
                                 eos_token_id=None, output_scores=False)
        _sync()
        call.out = out[:, plen:].cpu().numpy().reshape(preset.beam_users, preset.beam_topk, levels)

    steps = max(3, min(preset.steps, 5))
    timing = time_calls(call, steps, 1, budget_s)
    out = timing.to_dict()
    out.update(users_per_s=preset.beam_users / timing.median_s)
    out["top_items"] = workload.tokens_to_items(call.out, sids, token_table).tolist()
    del model
    return out


def forward_logits(checkpoint: str, tokens: np.ndarray) -> np.ndarray:
    """float32 logits [b, s, V] for the weight-equality check (CPU, no autocast)."""
    import torch
    from transformers import Qwen3ForCausalLM
    model = Qwen3ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(tokens)).logits.float().numpy()


def mfu_line(tokens_per_s: float, preset, n_devices: int, peak) -> float | None:
    return flops_lib.mfu(tokens_per_s, preset.shape, preset.seq, n_devices, peak)
