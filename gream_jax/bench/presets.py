"""Benchmark presets: one Qwen3-architecture shape plus the workload run on it.

A preset fixes what both frameworks run (model shape, batch x sequence, dtype, generation and
beam-search workloads) so that every row of the results table measures the same work.
CPU presets follow the shapes of `shared/reference/baselines.md` (4L/256/8k and 8L/512/32k, float32,
batch 8 x 256); `qwen3_0p6b` is Qwen3-0.6B's published config.json (28 layers, 1024 hidden,
16 q / 8 kv heads of 128, 3072 MLP, 151,936 vocab, tied embeddings, rope_theta 1e6).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool = True
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    shape: ModelShape
    dtype: str                 # compute dtype: "float32" | "bfloat16" (master weights stay float32)
    batch: int                 # train step: [batch, seq] tokens
    seq: int
    gen_batch: int             # generation: [gen_batch, gen_prompt] prompt, gen_new greedy tokens
    gen_prompt: int
    gen_new: int
    beam_users: int            # constrained beam search: users per call, beams, top-K, SID levels
    beam_size: int
    beam_topk: int
    beam_prompt: int
    sid_levels: tuple[int, ...]  # codes per SID level; n_items random items over these levels
    n_items: int
    steps: int = 20            # timed steps (medians reported); warm-up excluded
    warmup: int = 2


SHAPES = {
    "tiny": ModelShape(vocab_size=512, hidden_size=64, intermediate_size=192, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=16),
    "small": ModelShape(vocab_size=8192, hidden_size=256, intermediate_size=768, num_layers=4,
                        num_heads=4, num_kv_heads=2, head_dim=64),
    "medium": ModelShape(vocab_size=32768, hidden_size=512, intermediate_size=1536, num_layers=8,
                         num_heads=8, num_kv_heads=4, head_dim=64),
    "qwen3_0p6b": ModelShape(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                             num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                             max_position_embeddings=40960),
}

PRESETS = {
    # Used by the tests and by benchmarks/gpu_bench.sh's CPU rehearsal: seconds, not minutes.
    "tiny": Preset("tiny", SHAPES["tiny"], "float32", batch=4, seq=32, gen_batch=4, gen_prompt=16,
                   gen_new=8, beam_users=4, beam_size=4, beam_topk=4, beam_prompt=16,
                   sid_levels=(8, 8, 8), n_items=64, steps=3, warmup=1),
    "small": Preset("small", SHAPES["small"], "float32", batch=8, seq=256, gen_batch=8,
                    gen_prompt=128, gen_new=64, beam_users=8, beam_size=10, beam_topk=10,
                    beam_prompt=64, sid_levels=(32, 32, 32), n_items=2000),
    "medium": Preset("medium", SHAPES["medium"], "float32", batch=8, seq=256, gen_batch=8,
                     gen_prompt=128, gen_new=64, beam_users=8, beam_size=10, beam_topk=10,
                     beam_prompt=64, sid_levels=(32, 32, 32), n_items=2000),
    "qwen3_0p6b": Preset("qwen3_0p6b", SHAPES["qwen3_0p6b"], "bfloat16", batch=8, seq=2048,
                         gen_batch=64, gen_prompt=128, gen_new=128, beam_users=32, beam_size=20,
                         beam_topk=10, beam_prompt=64, sid_levels=(256, 256, 256), n_items=12000),
}


def get_preset(name: str, **overrides) -> Preset:
    """The named preset with command-line overrides applied (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"--preset={name!r}: unknown; choose one of {sorted(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "dtype" in changes and changes["dtype"] not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype={changes['dtype']!r}: must be float32 or bfloat16")
    for k in ("batch", "seq", "gen_batch", "gen_prompt", "gen_new", "steps", "beam_users",
              "beam_size", "beam_topk"):
        if k in changes and int(changes[k]) <= 0:
            raise ValueError(f"--{k}={changes[k]}: must be positive")
    preset = dataclasses.replace(PRESETS[name], **changes)
    if preset.beam_topk > preset.beam_size:
        raise ValueError(f"--beam_topk={preset.beam_topk} exceeds --beam_size={preset.beam_size}")
    return preset
