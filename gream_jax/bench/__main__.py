"""`python -m gream_jax.bench`: gream_jax vs transformers + PyTorch, same model, same weights.

Writes one random Qwen3 checkpoint (Hugging Face format), then measures, each implementation in
its own process (see worker.py): (a) the SFT train step, tokens/s and MFU; (b) greedy KV-cache
generation, new tokens/s, against `generate()`; (c) trie-constrained beam search, users/s,
against `generate(num_beams, prefix_allowed_tokens_fn)`. Compilation / first call is reported
separately; throughput is the median of the timed calls. Prints a Markdown table and writes
OUT_DIR/bench_<preset>.{json,md,png}.

Examples:
    python -m gream_jax.bench --preset=small
    python -m gream_jax.bench --preset=medium --parts=train --impls=jax,torch_eager
    python -m gream_jax.bench --preset=qwen3_0p6b --dtype=bfloat16 --out_dir=$OUT   # one H100
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from gream_jax.bench import presets as presets_lib
from gream_jax.bench import report
from gream_jax.bench.worker import preset_to_json
from gream_jax.utils import io

# Which parts each implementation runs (torch.compile is a train-step baseline only).
IMPL_PARTS = {"jax": ("train", "generate", "beam"), "torch_eager": ("train", "generate", "beam"),
              "torch_compile": ("train",)}


_START = time.perf_counter()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m gream_jax.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(presets_lib.PRESETS))
    p.add_argument("--dtype", choices=("float32", "bfloat16"))
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int)
    p.add_argument("--gen_batch", type=int)
    p.add_argument("--gen_prompt", type=int)
    p.add_argument("--gen_new", type=int)
    p.add_argument("--beam_users", type=int)
    p.add_argument("--beam_size", type=int)
    p.add_argument("--beam_topk", type=int)
    p.add_argument("--steps", type=int, help="timed calls per part (median reported); default 20")
    p.add_argument("--parts", default="train,generate,beam",
                   help="comma list of train,generate,beam")
    p.add_argument("--impls", default="jax,torch_eager,torch_compile",
                   help="comma list of jax,torch_eager,torch_compile")
    p.add_argument("--attention", default="", help="gream_jax attention: xla|cudnn|einsum (default: "
                   "cudnn on GPU with bfloat16, else xla)")
    p.add_argument("--remat", default="", help="gream_jax remat policy: none|full|dots|dots_no_batch")
    p.add_argument("--no_scan", action="store_true", help="gream_jax: unroll the layer loop")
    p.add_argument("--loss_chunk_tokens", type=int, default=-1, help="gream_jax train: chunked "
                   "vocabulary loss, tokens per chunk (0 = full logits; -1 = 4096 on accelerators, 0 on CPU)")
    p.add_argument("--no_causal_fast_path", action="store_true", help="gream_jax train: always "
                   "build the dense attention mask (no mask-free causal path for unpacked rows)")
    p.add_argument("--fallbacks", default="", help="gream_jax train: ';'-separated attention:remat "
                   "settings tried in turn if the first fails, e.g. 'cudnn:full;xla:full'")
    p.add_argument("--no_logit_check", action="store_true",
                   help="skip the float32 same-weights logit comparison")
    p.add_argument("--peak_tflops", type=float, help="peak dense TFLOP/s per device for MFU "
                   "(default: known accelerators; none on CPU)")
    p.add_argument("--checkpoint", default="", help="existing HF Qwen3 directory to use instead "
                   "of writing random weights (must match the preset's shapes)")
    p.add_argument("--out_dir", default="runs/bench")
    p.add_argument("--timeout_s", type=float, default=3600.0, help="per-implementation process limit")
    p.add_argument("--impl_timeouts", default="", help="per-implementation limits overriding "
                   "--timeout_s, e.g. 'jax:200,torch_eager:110'")
    p.add_argument("--deadline_s", type=float, default=0.0,
                   help="wall-clock budget for the whole run; each worker gets what is left (0 = none)")
    p.add_argument("--budget_s", type=float, default=0.0,
                   help="stop a part's timed loop after this many seconds (>= 3 calls); 0 = no limit")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _worker_env() -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_worker(impl: str, parts: list[str], preset, checkpoint: str, work: str, args) -> dict:
    """Runs one implementation's worker process; returns {part: result}, timeouts included."""
    result = os.path.join(work, f"{impl}_{'_'.join(parts)}.json")
    cmd = [sys.executable, "-m", "gream_jax.bench.worker", f"--impl={impl}", f"--parts={','.join(parts)}",
           f"--preset_json={preset_to_json(preset)}", f"--checkpoint={checkpoint}", f"--result={result}",
           f"--attention={args.attention}", f"--remat={args.remat}", f"--budget_s={args.budget_s}",
           f"--fallbacks={args.fallbacks}", f"--seed={args.seed}"]
    if args.no_scan:
        cmd.append("--no_scan")
    cmd.append(f"--loss_chunk_tokens={args.loss_chunk_tokens}")
    if args.no_causal_fast_path:
        cmd.append("--no_causal_fast_path")
    print(f"[bench] {impl}: {','.join(parts)}", flush=True)
    t0 = time.perf_counter()
    timeout = impl_timeouts(args.impl_timeouts).get(impl, args.timeout_s)
    if args.deadline_s:
        left = args.deadline_s - (time.perf_counter() - _START)
        if left < 5:
            return {part: {"error": f"skipped: --deadline_s={args.deadline_s:.0f} reached"} for part in parts}
        timeout = min(timeout, left)
    try:
        proc = subprocess.run(cmd, env=_worker_env(), timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    out = io.read_json(result) if os.path.exists(result) else {}
    for part in parts:
        if part not in out:
            out[part] = {"error": f"worker exited ({rc}) before finishing this part "
                                  f"after {time.perf_counter() - t0:.0f} s"}
    return out


def impl_timeouts(text: str) -> dict[str, float]:
    out = {}
    for item in [x for x in text.split(",") if x]:
        impl, _, seconds = item.partition(":")
        if impl not in IMPL_PARTS or not seconds:
            raise SystemExit(f"--impl_timeouts: bad entry {item!r}; expected IMPL:SECONDS with IMPL in "
                             f"{tuple(IMPL_PARTS)}")
        out[impl] = float(seconds)
    return out


def logit_difference(results: dict) -> float | None:
    """max |logits_jax - logits_torch| on the check prompt (float32), None if either is missing."""
    try:
        a = np.load(results["jax"]["logits"]["path"])["logits"]
        b = np.load(results["torch_eager"]["logits"]["path"])["logits"]
    except (KeyError, FileNotFoundError, TypeError):
        return None
    return float(np.max(np.abs(a - b)))


def main(argv=None) -> dict:
    global _START
    _START = time.perf_counter()
    args = parse_args(argv)
    preset = presets_lib.get_preset(
        args.preset, dtype=args.dtype, batch=args.batch, seq=args.seq, gen_batch=args.gen_batch,
        gen_prompt=args.gen_prompt, gen_new=args.gen_new, beam_users=args.beam_users,
        beam_size=args.beam_size, beam_topk=args.beam_topk, steps=args.steps)
    parts = [p for p in args.parts.split(",") if p]
    impls = [i for i in args.impls.split(",") if i]
    for p in parts:
        if p not in report.PARTS:
            raise SystemExit(f"--parts: unknown part {p!r}; choose from {report.PARTS}")
    for i in impls:
        if i not in IMPL_PARTS:
            raise SystemExit(f"--impls: unknown implementation {i!r}; choose from {tuple(IMPL_PARTS)}")
    os.makedirs(args.out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="gream_bench_")
    checkpoint = args.checkpoint
    if not checkpoint:
        # In a worker too, so that this process never holds accelerator memory.
        checkpoint = os.path.join(work, "checkpoint")
        made = run_worker("torch_eager", ["checkpoint"], preset, checkpoint, work, args)["checkpoint"]
        if "error" in made:
            raise SystemExit(f"[bench] could not write the random checkpoint: {made['error']}")
        print(f"[bench] random Qwen3 checkpoint ({preset.name}) written in {made['seconds']:.1f} s: "
              f"{checkpoint}", flush=True)
    results, envs = {}, {}
    summary = paths = None
    for impl in impls:
        todo = [p for p in parts if p in IMPL_PARTS[impl]]
        if not args.no_logit_check and impl in ("jax", "torch_eager"):
            todo.append("logits")
        if not todo:
            continue
        results[impl] = run_worker(impl, todo, preset, checkpoint, work, args)
        envs[impl] = results[impl].pop("environment", None) or {}
        # Written after every implementation, so a later crash or time limit loses nothing.
        summary, paths = write_report(preset, results, envs, args)
    if summary is None:
        raise SystemExit("[bench] nothing to run: check --impls and --parts")
    print(report.markdown(summary), flush=True)
    print(f"[bench] wrote {paths['json']}, {paths['md']}, {paths['png']}", flush=True)
    return summary


def write_report(preset, results: dict, envs: dict, args):
    shown = {impl: {p: r for p, r in parts.items() if p != "logits"} for impl, parts in results.items()}
    summary = report.summarize(preset, shown, merged_environment(envs), args.peak_tflops)
    diff = logit_difference(results)
    if diff is not None:
        summary["logit_max_abs_diff"] = diff
    return summary, report.write_all(summary, args.out_dir, f"bench_{preset.name}")


def merged_environment(envs: dict) -> dict:
    """Each worker's environment (PyTorch's, then JAX's on top); this process never starts JAX."""
    from gream_jax.bench.timing import environment
    env = environment(with_jax=False, with_torch=False)
    for impl in ("torch_compile", "torch_eager", "jax"):
        env.update(envs.get(impl) or {})
    return env


if __name__ == "__main__":
    from gream_jax.utils.cli import run_cli
    run_cli(main)
