#!/usr/bin/env bash
# One-shot GPU benchmark: gream_jax vs transformers + PyTorch (eager, torch.compile) on Qwen3-0.6B
# shapes, one H100, about 6 minutes. Results (JSON, Markdown, PNG, logs) go to $OUT.
#
#   OUT=/path/to/results benchmarks/gpu_bench.sh
#
# Expects an environment that already has JAX with CUDA, flax, optax, PyTorch and transformers
# (NOT the project venv); the repository is put on PYTHONPATH, nothing is installed unless a
# needed module is missing (then one quiet `pip install` attempt, failure tolerated).
# Workload (baselines.md): train batch 8 x 2,048 tokens, bfloat16 compute, float32 master weights,
# AdamW, cuDNN causal attention, chunked vocabulary loss; greedy generation batch 64, prompt 128, +128; constrained beam search
# 32 users (prompt 64), beam 20, top-10 over 12,000 items with 3-token SIDs. Every implementation runs in its
# own process with its own time limit, and every finished part is written at once, so one failure
# or a time-out loses nothing else.
#
# CPU rehearsal of every code path (what was run before handing this over):
#   GPU_BENCH_PRESET=tiny OUT=/tmp/gpu_bench_rehearsal benchmarks/gpu_bench.sh
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-${REPO}/runs/gpu_bench}"
PRESET="${GPU_BENCH_PRESET:-qwen3_0p6b}"
DEADLINE_S="${GPU_BENCH_DEADLINE_S:-360}"      # whole benchmark, checkpoint writing included
IMPLS="${GPU_BENCH_IMPLS:-jax,torch_eager,torch_compile}"
PARTS="${GPU_BENCH_PARTS:-train,generate,beam}"
PY="${PYTHON:-python3}"
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "${OUT}"
START=$(date +%s)
log() { echo "[gpu_bench +$(( $(date +%s) - START ))s] $*"; }

log "repo ${REPO}, preset ${PRESET}, out ${OUT}"
{ nvidia-smi || echo "no nvidia-smi"; } > "${OUT}/nvidia_smi.txt" 2>&1
head -n 15 "${OUT}/nvidia_smi.txt"

# Versions, and the modules the benchmark imports that are missing (one Python start, not eight).
MISSING=$("${PY}" - <<'PYEOF' 2>>"${OUT}/versions.txt"
import importlib, sys
missing = []
for m in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "safetensors", "numpy", "matplotlib"):
    try:
        print(m, importlib.import_module(m).__version__, file=sys.stderr)
    except Exception as e:
        print(m, "MISSING", type(e).__name__, e, file=sys.stderr)
        if m != "jaxlib":
            missing.append(m)
try:
    import torch
    print("torch cuda", torch.cuda.is_available(), torch.version.cuda, file=sys.stderr)
except Exception as e:
    print("torch cuda check failed", e, file=sys.stderr)
print(" ".join(missing))
PYEOF
)
cat "${OUT}/versions.txt"
for pkg in ${MISSING}; do
  log "module ${pkg} missing: trying pip install ${pkg}"
  timeout 90 "${PY}" -m pip install -q "${pkg}" >/dev/null 2>&1 || log "could not install ${pkg} (continuing)"
done

# The fast settings (docs/benchmarks.md, "GPU levers"): bfloat16 compute on float32 master weights,
# cuDNN attention on its mask-free causal path (the train step's causal_fast_path: the benchmark rows
# are unpacked and unpadded), the chunked vocabulary loss (no [16k, 151,936] float32 logits), and the
# in-place KV cache for generation. GPU_BENCH_LOSS_CHUNK=0 measures the full-logits loss instead.
LOSS_CHUNK="${GPU_BENCH_LOSS_CHUNK:-4096}"
if [[ "${PRESET}" == "qwen3_0p6b" ]]; then
  FLAGS=(--preset=qwen3_0p6b --dtype=bfloat16 --attention=cudnn --loss_chunk_tokens="${LOSS_CHUNK}")
else   # CPU rehearsal: same flags and code paths (cuDNN then fails and the fallbacks run)
  FLAGS=(--preset="${PRESET}" --dtype=bfloat16 --attention=cudnn --loss_chunk_tokens="${LOSS_CHUNK}")
fi

log "benchmark: ${IMPLS}"
"${PY}" -m gream_jax.bench "${FLAGS[@]}" --impls="${IMPLS}" --parts="${PARTS}" \
  --fallbacks="cudnn:full;xla:full" --budget_s=25 --no_logit_check --deadline_s="${DEADLINE_S}" --timeout_s=240 --impl_timeouts="${GPU_BENCH_IMPL_TIMEOUTS:-jax:200,torch_eager:110}" \
  --out_dir="${OUT}" 2>&1 | tee "${OUT}/bench.log"
rc=${PIPESTATUS[0]}
log "benchmark exit code ${rc}"

ls -la "${OUT}"
if ls "${OUT}"/bench_*.md >/dev/null 2>&1; then
  log "results table:"; cat "${OUT}"/bench_*.md
else
  log "no results table was written; see ${OUT}/bench.log"
fi
log "done"
exit "${rc}"
