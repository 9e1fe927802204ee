"""Results -> JSON (for programs), a Markdown table (for people) and a PNG bar chart.

`results` is {impl: {part: dict}} with impl in IMPLS and part in PARTS; a part that failed holds
{"error": message}. Ratios are always against the PyTorch eager row of the same run.
"""

from __future__ import annotations

import os

from gream_jax.bench import flops as flops_lib
from gream_jax.utils import io

PARTS = ("train", "generate", "beam")
IMPLS = ("jax", "torch_eager", "torch_compile")
LABELS = {"jax": "gream_jax (jit)", "torch_eager": "transformers + PyTorch eager",
          "torch_compile": "transformers + torch.compile"}
METRIC = {"train": "tokens_per_s", "generate": "new_tokens_per_s", "beam": "users_per_s"}
TITLES = {"train": "SFT train step (tokens/s)", "generate": "greedy KV-cache generation (new tokens/s)",
          "beam": "constrained beam search (users/s)"}


def _metric(results, impl, part):
    r = results.get(impl, {}).get(part)
    if not r or "error" in r:
        return None
    return r.get(METRIC[part])


def summarize(preset, results: dict, env: dict, peak_tflops: float | None = None) -> dict:
    """Adds MFU, speed-ups and agreement checks; returns the JSON-able summary."""
    n_devices = 1
    peak = flops_lib.peak_flops(env.get("jax_device_kind") or env.get("torch_device", ""), peak_tflops)
    per_token = flops_lib.train_flops_per_token(preset.shape, preset.seq)
    summary = {"preset": preset.name, "shape": vars(preset.shape), "workload": {
        k: v for k, v in vars(preset).items() if k != "shape"},
        "flops_per_token": per_token, "matmul_params": flops_lib.matmul_params(preset.shape),
        "peak_flops_per_device": peak, "environment": env, "results": results, "speedups": {}}
    for impl in IMPLS:
        train = results.get(impl, {}).get("train")
        if train and "error" not in train:
            train["mfu"] = flops_lib.mfu(train["tokens_per_s"], preset.shape, preset.seq, n_devices, peak)
    for part in PARTS:
        base = _metric(results, "torch_eager", part)
        summary["speedups"][part] = {
            impl: (_metric(results, impl, part) / base) if base and _metric(results, impl, part) else None
            for impl in IMPLS}
    jb = results.get("jax", {}).get("beam") or {}
    tb = results.get("torch_eager", {}).get("beam") or {}
    if "top_items" in jb and "top_items" in tb:
        summary["beam_topk_agreement"] = topk_agreement(jb["top_items"], tb["top_items"])
    jg = results.get("jax", {}).get("generate") or {}
    tg = results.get("torch_eager", {}).get("generate") or {}
    if "first_tokens" in jg and "first_tokens" in tg:
        summary["generate_first_token_agreement"] = float(sum(
            a[0] == b[0] for a, b in zip(jg["first_tokens"], tg["first_tokens"])) / len(jg["first_tokens"]))
    return summary


def topk_agreement(a: list, b: list) -> float:
    """Mean over users of |top-K(a) ∩ top-K(b)| / K: 1.0 = the same recommendation sets."""
    total = 0.0
    for ra, rb in zip(a, b):
        sa, sb = {x for x in ra if x >= 0}, {x for x in rb if x >= 0}
        total += len(sa & sb) / max(len(ra), 1)
    return total / max(len(a), 1)


def _fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def markdown(summary: dict) -> str:
    res, sp = summary["results"], summary["speedups"]
    w = summary["workload"]
    env = summary["environment"]
    backend = env.get("jax_backend") or ("gpu" if env.get("torch_cuda") else "cpu")
    device = (env.get("jax_device_kind") or env.get("torch_device", "?")) if backend != "cpu" else \
        f"CPU ({env.get('cpu_count')} cores)"
    lines = [f"### Preset `{summary['preset']}` on {device}, {w['dtype']}",
             "",
             f"Train: batch {w['batch']} x {w['seq']} tokens, AdamW, float32 master weights; "
             f"{summary['flops_per_token'] / 1e9:.3f} GFLOP/token "
             f"(6 x {summary['matmul_params'] / 1e6:.1f} M matmul params + causal attention). "
             f"Generation: batch {w['gen_batch']}, prompt {w['gen_prompt']}, +{w['gen_new']} greedy. "
             f"Beam: {w['beam_users']} users, prompt {w['beam_prompt']}, beam {w['beam_size']}, "
             f"top-{w['beam_topk']} over {w['n_items']} items with {len(w['sid_levels'])}-token SIDs.",
             "",
             "| part | implementation | throughput | vs PyTorch eager | MFU | first call (compile) | median step | peak mem GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for part in PARTS:
        for impl in IMPLS:
            r = res.get(impl, {}).get(part)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {part} | {LABELS[impl]} | failed: {r['error'][:80]} | | | | | |")
                continue
            unit = {"train": "tok/s", "generate": "new tok/s", "beam": "users/s"}[part]
            ratio = sp[part].get(impl)
            mfu = r.get("mfu")
            lines.append(
                f"| {part} | {LABELS[impl]} | {_fmt(r[METRIC[part]], 1 if r[METRIC[part]] < 100 else 0)} {unit} "
                f"| {'–' if ratio is None else f'{ratio:.2f}x'} | {'–' if mfu is None else f'{100 * mfu:.1f}%'} "
                f"| {r['first_s']:.2f} s | {r['median_s'] * 1e3:.1f} ms ({r['steps']}) "
                f"| {_fmt(r.get('peak_memory_gib'), 1)} |")
    notes = []
    if "beam_topk_agreement" in summary:
        notes.append(f"beam top-{w['beam_topk']} agreement with PyTorch: "
                     f"{100 * summary['beam_topk_agreement']:.1f}%")
    if "generate_first_token_agreement" in summary:
        notes.append(f"greedy first-token agreement: {100 * summary['generate_first_token_agreement']:.0f}%")
    if "logit_max_abs_diff" in summary:
        notes.append(f"same weights: float32 logits max |JAX - PyTorch| = {summary['logit_max_abs_diff']:.2e}")
    if notes:
        lines += ["", "Checks: " + "; ".join(notes) + "."]
    jt = res.get("jax", {}).get("train") or {}
    if "attention" in jt:
        lines += ["", f"gream_jax train settings: attention={jt['attention']}, remat={jt['remat']}, "
                      f"scan_layers={jt.get('scan_layers')}, loss_chunk_tokens={jt.get('loss_chunk_tokens')}, "
                      f"causal_fast_path={jt.get('causal_fast_path')}, "
                      f"final loss {jt.get('final_loss', float('nan')):.4f}"
                  + "".join(f"; tried first and failed: {f[:160]}" for f in jt.get("failed_settings", [])) + "."]
    lines += ["", "Environment: " + ", ".join(f"{k} {env[k]}" for k in (
        "jax", "flax", "torch", "transformers", "jax_backend", "jax_device_kind", "torch_threads",
        "cpu_count", "date_utc") if k in env) + "."]
    return "\n".join(lines) + "\n"


def bar_chart(summary: dict, path: str) -> None:
    """One panel per part; bars = throughput, labelled with the speed-up over PyTorch eager."""
    try:
        import matplotlib
    except ImportError:
        print(f"[bench] matplotlib is not installed: no chart written to {path}", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res, sp = summary["results"], summary["speedups"]
    parts = [p for p in PARTS if any(_metric(res, i, p) for i in IMPLS)]
    if not parts:
        return
    fig, axes = plt.subplots(1, len(parts), figsize=(4.6 * len(parts), 3.8), squeeze=False)
    colors = {"jax": "#1f77b4", "torch_eager": "#ff7f0e", "torch_compile": "#d62728"}
    for ax, part in zip(axes[0], parts):
        impls = [i for i in IMPLS if _metric(res, i, part)]
        vals = [_metric(res, i, part) for i in impls]
        bars = ax.bar([LABELS[i].replace(" + ", "\n+ ") for i in impls], vals,
                      color=[colors[i] for i in impls])
        for bar, impl in zip(bars, impls):
            ratio = sp[part].get(impl)
            if ratio is not None:
                ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=9)
        ax.set_title(TITLES[part], fontsize=10)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylim(0, max(vals) * 1.18)
    env = summary["environment"]
    device = env.get("jax_device_kind") or env.get("torch_device", "?")
    fig.suptitle(f"gream_jax vs transformers+PyTorch: preset {summary['preset']}, "
                 f"{summary['workload']['dtype']}, {device}", fontsize=11)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_all(summary: dict, out_dir: str, stem: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, f"{stem}.json"), "md": os.path.join(out_dir, f"{stem}.md"),
             "png": os.path.join(out_dir, f"{stem}.png")}
    io.write_json(paths["json"], summary)
    io.write_text(paths["md"], markdown(summary))
    bar_chart(summary, paths["png"])
    return paths
