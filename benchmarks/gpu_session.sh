#!/usr/bin/env bash
# One bounded GPU session: the throughput benchmark (benchmarks/gpu_bench.sh), then Beauty's SFT and
# Direct-mode evaluation on the GPU from a workdir prepared and indexed on a CPU machine.
#
# Why the split: the GPU machine has JAX, flax, optax, orbax, PyTorch and transformers but no network,
# no ../shared data and no MiniLM wheel, so `prepare` and `index` (seconds and ~1 minute on a CPU) run
# beforehand and their outputs travel with the repository; ml_collections and tensorboardX travel as
# wheels. Everything is bounded by wall time (GPU_SESSION_S) so the results come back even when a part
# runs long, and every part writes what it finished before the next starts.
#
# Before the call, on the CPU machine (from the repository root; .gpu/ is git-ignored locally):
#   echo /.gpu/ >> .git/info/exclude
#   python -m gream_jax.main --config=configs/beauty.py --workdir=.gpu/beauty --config.stage=prepare
#   python -m gream_jax.main --config=configs/beauty.py --workdir=.gpu/beauty --config.stage=index
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .gpu/whl ml_collections==1.1.0 tensorboardX==2.6.5
# On the GPU machine (the device tool's `run`, carry [".gpu"]):
#   OUT=$OUT GPU_SESSION_S=570 bash benchmarks/gpu_session.sh
# CPU rehearsal of every code path:
#   GPU_BENCH_PRESET=tiny GPU_SESSION_S=300 BENCH_S=120 BEAUTY_SFT_MINUTES=0.3 OUT=/tmp/gpu_session \
#     PYTHON=.venv/bin/python bash benchmarks/gpu_session.sh
# (in a clone without ../shared beside it, as on the GPU machine; docs/benchmarks.md has the results)
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
OUT="${OUT:-${REPO}/runs/gpu_session}"
BUDGET_S="${GPU_SESSION_S:-570}"            # whole script
BENCH_S="${BENCH_S:-330}"                  # the throughput benchmark's deadline (0 = skip it)
SFT_MINUTES="${BEAUTY_SFT_MINUTES:-2.0}"   # Beauty SFT training time (config.train.max_minutes)
PREPARED="${PREPARED:-${REPO}/.gpu/beauty}"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d /tmp/gpu_session.XXXX)"
mkdir -p "${OUT}" "${WORK}/bench"
T0=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
log() { echo "[gpu_session +$(( $(date +%s) - T0 ))s] $*"; }

# Pure-Python packages the image lacks (no index, no network: only the carried wheels).
if ls "${REPO}"/.gpu/whl/*.whl >/dev/null 2>&1; then
  "${PY}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "${WORK}/site" \
    "${REPO}"/.gpu/whl/*.whl && export PYTHONPATH="${WORK}/site${PYTHONPATH:+:${PYTHONPATH}}"
fi
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"
export TF_CPP_MIN_LOG_LEVEL=1 PYTHONUNBUFFERED=1

# 1. Throughput: gream_jax vs transformers + PyTorch (eager, torch.compile), Qwen3-0.6B shapes.
if (( BENCH_S > 0 )); then
  log "1/2 throughput benchmark, deadline ${BENCH_S} s"
  GPU_BENCH_DEADLINE_S="${BENCH_S}" OUT="${WORK}/bench" PYTHON="${PY}" \
    timeout $(( BENCH_S + 30 )) bash benchmarks/gpu_bench.sh > "${WORK}/bench/gpu_bench.log" 2>&1
  log "benchmark exit code $?"
  tail -n 40 "${WORK}/bench/gpu_bench.log"
  cp "${WORK}"/bench/bench_*.md "${OUT}/" 2>/dev/null
  tar -C "${WORK}" -czf "${OUT}/bench.tgz" bench
fi

# 2. Beauty on the GPU: SFT (bounded by SFT_MINUTES of training) and Direct-mode eval on all users.
if [[ ! -d "${PREPARED}/data" || ! -d "${PREPARED}/index" ]]; then
  log "no prepared Beauty workdir at ${PREPARED} (data/ and index/): skipping part 2"; exit 0
fi
W="${WORK}/beauty"
mkdir -p "${W}" && cp -r "${PREPARED}/data" "${PREPARED}/index" "${W}/"
FLAGS=(--config=configs/beauty.py --workdir="${W}")
t=$(( $(left) - 100 ))
# Training stops by itself (max_minutes) SFT_RESERVE_S before the hard limit, so start-up, the final
# 4,000-user validation and the export still happen when the benchmark ran long (else no sft/final).
minutes=$(awk -v m="${SFT_MINUTES}" -v t="${t}" -v r="${SFT_RESERVE_S:-90}" \
  'BEGIN { x = (t - r) / 60; printf "%.2f", (x < m ? x : m) }')
log "2/2 Beauty SFT (${minutes} min of training, ${t} s limit)"
if (( t > 30 )) && awk -v x="${minutes}" 'BEGIN { exit !(x > 0.2) }'; then
  timeout "${t}" "${PY}" -m gream_jax.main "${FLAGS[@]}" --config.stage=sft \
    --config.train.max_minutes="${minutes}" > "${W}/sft.log" 2>&1
  log "sft exit code $?"; grep -E "\[sft\] ([0-9]+/|config|step|done)" "${W}/sft.log" | cut -c1-600 | tail -n 30
fi
t=$(( $(left) - 10 ))
if [[ -d "${W}/sft/final" ]] && (( t > 20 )); then
  log "Beauty eval, Direct mode, all users (${t} s limit)"
  timeout "${t}" "${PY}" -m gream_jax.main "${FLAGS[@]}" --config.stage=eval --config.eval.modes=direct \
    > "${W}/eval.log" 2>&1
  log "eval exit code $?"; tail -n 25 "${W}/eval.log"
fi
# Logs, metrics and tables only: checkpoints (a killed save's temporary directory too) and per-user rows
# exceed what a device call brings back.
tar -C "${WORK}" --exclude='checkpoints' --exclude='final' --exclude='.*.tmp*' --exclude='best' \
  --exclude='per_user_*' --exclude='data' --exclude='index' -czf "${OUT}/beauty.tgz" beauty
log "done; ${OUT}:"; ls -la "${OUT}"
