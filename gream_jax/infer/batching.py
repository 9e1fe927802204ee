"""Fixed-shape batches for the jitted decoders, and the memory rule that sizes them.

Evaluation never changes its beam size or K to fit memory (the reference release shrinks the
beam on out-of-memory, which silently changes the metric). Instead the number of users per
device batch is fixed up front: `config.eval.max_batch`, or, when 0, the largest batch whose
KV caches and beam logits fit `memory_fraction` of the device memory (or
`config.eval.memory_budget_mb` where the device does not report it, e.g. CPU). If not even one
user per data-parallel shard fits, start-up fails naming the field to change.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax import mesh as mesh_lib


class BatchConfigError(ValueError):
    """An evaluation batch setting that cannot run; the message names the config field."""


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // int(multiple)) * int(multiple)


def left_pad(prompts: list[list[int]], width: int, rows: int, pad_id: int):
    """prompts -> (tokens [rows, width] int32, mask [rows, width] int32), LEFT-padded.

    Rows past len(prompts) repeat the first prompt (results for them are dropped by the caller),
    so every batch has the same shape and the decoder compiles once.
    """
    if not prompts:
        raise ValueError("left_pad: no prompts")
    if rows < len(prompts):
        raise ValueError(f"left_pad: {len(prompts)} prompts do not fit {rows} rows")
    tokens = np.full((rows, width), pad_id, np.int32)
    mask = np.zeros((rows, width), np.int32)
    for r in range(rows):
        p = prompts[r] if r < len(prompts) else prompts[0]
        if len(p) > width:
            raise ValueError(f"left_pad: prompt of {len(p)} tokens exceeds width {width}")
        if p:
            tokens[r, width - len(p):] = p
            mask[r, width - len(p):] = 1
    return tokens, mask


def prompt_width(prompts: list[list[int]], bucket: int) -> int:
    """Common prompt width: the longest prompt rounded up to `bucket` (fewer distinct compiles)."""
    return round_up(max(len(p) for p in prompts), max(bucket, 1))


def bytes_per_user(model_cfg, cache_len: int, beam_size: int, rows_per_user: int = 1) -> int:
    """Peak decoder memory per user: K/V caches of all its beams plus a few [V] float32 rows each.

    rows_per_user: reasoning samples per user (each has its own cache and its own beams).
    """
    dtype_bytes = jnp.dtype(model_cfg.dtype).itemsize
    kv = 2 * model_cfg.num_layers * cache_len * model_cfg.num_kv_heads * model_cfg.head_dim * dtype_bytes
    # The beam gathers from the old cache into a new one, so two copies live at once.
    logits = 4 * model_cfg.vocab_size * 4      # logits, log-softmax and temporaries, float32
    return rows_per_user * beam_size * (2 * kv + logits)


def device_memory_budget(eval_cfg) -> int:
    """Bytes one device may spend on decoding."""
    stats = None
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # CPU backends may not implement memory_stats
        stats = None
    if stats and stats.get("bytes_limit"):
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        return int(free * float(eval_cfg.memory_fraction))
    return int(eval_cfg.memory_budget_mb) * 2**20


def resolve_batch(eval_cfg, model_cfg, cache_len: int, beam_size: int, mesh, rows_per_user: int = 1,
                  n_users: int | None = None) -> int:
    """Users per jitted batch: a multiple of the data-parallel size, fixed for the whole run."""
    dp = mesh_lib.data_parallel_size(mesh, model_cfg.rules)
    per_user = bytes_per_user(model_cfg, cache_len, beam_size, rows_per_user)
    if int(eval_cfg.max_batch) > 0:
        batch = round_up(int(eval_cfg.max_batch), dp)
    else:
        budget = device_memory_budget(eval_cfg)
        per_device = budget // per_user
        if per_device < 1:
            raise BatchConfigError(
                f"config.eval.max_batch=0 (automatic): one user needs {per_user / 2**20:.1f} MiB "
                f"(beam_size={beam_size}, cache length {cache_len}, {rows_per_user} sample(s)) but the "
                f"budget is {budget / 2**20:.1f} MiB per device; lower config.eval.beam_size / "
                f"config.eval.reasoning_budget or raise config.eval.memory_budget_mb")
        batch = int(per_device) * dp
    if n_users is not None:
        batch = min(batch, round_up(n_users, dp))
    return max(batch, dp)


def batches(n: int, size: int):
    """[start, stop) ranges covering range(n) in chunks of `size`."""
    return [(s, min(s + size, n)) for s in range(0, n, size)] if n else []
