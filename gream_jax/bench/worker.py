"""One implementation's measurements, in its own process: `python -m gream_jax.bench.worker`.

The harness (`__main__`) starts one worker per implementation so that JAX and PyTorch never
share an accelerator's memory (JAX preallocates most of it), a crash or out-of-memory in one
row cannot take the others down, and a hung part is killed by a timeout. Each finished part is
written to the result file at once, so a timeout keeps what was already measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback

import numpy as np

from gream_jax.bench.presets import ModelShape, Preset
from gream_jax.utils import io

# Prompt of the weight-equality check: [2, 16] tokens, float32 logits compared across frameworks.
CHECK_TOKENS = np.arange(3, 35, dtype=np.int64).reshape(2, 16)


def preset_from_json(text: str) -> Preset:
    d = json.loads(text)
    d["shape"] = ModelShape(**d["shape"])
    d["sid_levels"] = tuple(d["sid_levels"])
    return Preset(**d)


def preset_to_json(preset: Preset) -> str:
    return json.dumps(dataclasses.asdict(preset))


def _run_part(impl: str, part: str, args, preset: Preset) -> dict:
    budget = args.budget_s or None
    if impl == "jax":
        from gream_jax.bench import jax_side as side
        if part == "train":
            return _jax_train_with_fallbacks(side, args, preset, budget)
        if part == "generate":
            return side.bench_generate(args.checkpoint, preset, budget_s=budget)
        if part == "beam":
            return side.bench_beam(args.checkpoint, preset, budget_s=budget)
        if part == "logits":
            return {"path": _save_logits(args, side.forward_logits(args.checkpoint, preset, CHECK_TOKENS))}
    else:
        from gream_jax.bench import torch_side as side
        compiled = impl == "torch_compile"
        if part == "checkpoint":
            t0 = time.perf_counter()
            side.write_checkpoint(preset.shape, args.checkpoint, args.seed)
            return {"path": args.checkpoint, "seconds": time.perf_counter() - t0}
        if part == "train":
            return side.bench_train(args.checkpoint, preset, compiled=compiled, budget_s=budget)
        if compiled:
            raise ValueError(f"part {part!r} is not measured for torch_compile (generate() is the baseline)")
        if part == "generate":
            return side.bench_generate(args.checkpoint, preset, budget_s=budget)
        if part == "beam":
            return side.bench_beam(args.checkpoint, preset, budget_s=budget)
        if part == "logits":
            return {"path": _save_logits(args, side.forward_logits(args.checkpoint, CHECK_TOKENS))}
    raise ValueError(f"unknown part {part!r}")


def _jax_train_with_fallbacks(side, args, preset, budget) -> dict:
    """The requested (attention, remat) first; if it fails (cuDNN unavailable for this shape or
    JAX version, out of memory), `--fallbacks` settings in turn, each failure recorded."""
    tries = [(args.attention or None, args.remat or None)]
    for item in [x for x in args.fallbacks.split(";") if x]:
        attention, _, remat = item.partition(":")
        tries.append((attention or None, remat or None))
    failures = []
    for attention, remat in tries:
        try:
            out = side.bench_train(args.checkpoint, preset, attention=attention, remat=remat,
                                   scan_layers=not args.no_scan, budget_s=budget,
                                   loss_chunk_tokens=None if args.loss_chunk_tokens < 0 else args.loss_chunk_tokens,
                                   causal_fast_path=not args.no_causal_fast_path)
        except Exception as e:
            traceback.print_exc()
            failures.append(f"attention={attention} remat={remat}: {type(e).__name__}: {str(e)[:300]}")
            _release_jax_memory()
            continue
        if failures:
            out["failed_settings"] = failures
        return out
    raise RuntimeError(" | ".join(failures))


def _release_jax_memory() -> None:
    import gc

    import jax
    gc.collect()
    jax.clear_caches()


def _save_logits(args, logits) -> str:
    path = args.result + ".logits.npz"
    io.save_npz(path, logits=np.asarray(logits, np.float32))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", required=True, choices=("jax", "torch_eager", "torch_compile"))
    p.add_argument("--parts", required=True)
    p.add_argument("--preset_json", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--attention", default="")
    p.add_argument("--remat", default="")
    p.add_argument("--no_scan", action="store_true")
    p.add_argument("--loss_chunk_tokens", type=int, default=-1, help="jax train: -1 = the side's default")
    p.add_argument("--no_causal_fast_path", action="store_true")
    p.add_argument("--budget_s", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fallbacks", default="",
                   help="jax train: ';'-separated attention:remat settings tried if the first fails")
    args = p.parse_args(argv)
    preset = preset_from_json(args.preset_json)
    results = {}
    if args.impl != "jax":
        import torch
        torch.manual_seed(0)
        try:
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except Exception:
            pass
    from gream_jax.bench.timing import environment
    results["environment"] = environment(with_jax=args.impl == "jax", with_torch=args.impl != "jax")
    io.write_json(args.result, results)
    for part in [x for x in args.parts.split(",") if x]:
        t0 = time.perf_counter()
        try:
            results[part] = _run_part(args.impl, part, args, preset)
        except Exception as e:  # one part failing must not lose the others
            traceback.print_exc()
            results[part] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        results[part]["wall_s"] = time.perf_counter() - t0
        io.write_json(args.result, results)
        brief = {k: v for k, v in results[part].items() if not isinstance(v, list)}
        print(f"[bench:{args.impl}:{part}] {json.dumps(brief, default=str)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
