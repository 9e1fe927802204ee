#!/usr/bin/env bash
# One process on one machine: CPU, one GPU, or all GPUs/TPU chips of a single host.
#
# Usage:
#   launch/single_host.sh configs/ml100k.py runs/ml100k [extra --config.* flags]
#   launch/single_host.sh configs/qwen3_0p6b.py runs/beauty_0p6b --config.model.checkpoint=/data/Qwen3-0.6B
#
# GREAM_DISTRIBUTED=0 keeps JAX single-process even where a launcher's variables leak in
# (for example a SLURM batch script that starts this directly instead of through srun).
# CPU-only smoke test of multi-device sharding on one machine:
#   FAKE_DEVICES=8 launch/single_host.sh configs/ml100k.py:smoke runs/smoke8
set -euo pipefail

CONFIG="${1:?usage: launch/single_host.sh CONFIG WORKDIR [flags...]}"
WORKDIR="${2:?usage: launch/single_host.sh CONFIG WORKDIR [flags...]}"
shift 2
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export GREAM_DISTRIBUTED="${GREAM_DISTRIBUTED:-0}"
if [[ -n "${FAKE_DEVICES:-}" ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${FAKE_DEVICES}"
fi
cd "${REPO_DIR}"
exec env PYTHONPATH="${REPO_DIR}:${PYTHONPATH:-}" "${PYTHON}" -m gream_jax.main \
  --config="${CONFIG}" --workdir="${WORKDIR}" "$@"
