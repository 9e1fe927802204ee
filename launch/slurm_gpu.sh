#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per GPU, started by srun.
#
# Usage:
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=12 \
#     --export=ALL,CONFIG=configs/qwen3_4b.py,WORKDIR=/shared/gream/beauty_4b,\
#EXTRA="--config.model.checkpoint=/shared/hf/Qwen3-4B" launch/slurm_gpu.sh
# or inside an allocation (salloc): launch/slurm_gpu.sh
#
# The coordinator is the first host of the allocation (from SLURM_JOB_NODELIST), port derived
# from the job id; every task gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES=$SLURM_NTASKS,
# JAX_PROCESS_ID=$SLURM_PROCID and JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID (one GPU per process),
# which gream_jax.mesh.maybe_initialize_distributed() passes to jax.distributed.initialize().
# WORKDIR must be on a filesystem every node mounts at the same path (checkpoints, data, TB logs).
set -euo pipefail

: "${WORKDIR:?set WORKDIR to a path on a shared filesystem}"
: "${SLURM_JOB_ID:?run this inside a SLURM allocation (sbatch or salloc)}"
CONFIG="${CONFIG:-configs/qwen3_0p6b.py}"
EXTRA="${EXTRA:-}"
REPO_DIR="${REPO_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PYTHON="${PYTHON:-python3}"

COORD_HOST="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"
COORD_PORT="${COORD_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}"
export JAX_COORDINATOR_ADDRESS="${COORD_HOST}:${COORD_PORT}"
echo "[slurm_gpu] job ${SLURM_JOB_ID}: ${SLURM_NTASKS:-?} tasks, coordinator ${JAX_COORDINATOR_ADDRESS}"

# Single quotes: the SLURM_* variables are expanded per task, inside srun.
srun --kill-on-bad-exit=1 bash -c '
  export JAX_NUM_PROCESSES="$SLURM_NTASKS" JAX_PROCESS_ID="$SLURM_PROCID"
  export JAX_LOCAL_DEVICE_IDS="${JAX_LOCAL_DEVICE_IDS:-$SLURM_LOCALID}"
  cd "'"${REPO_DIR}"'"
  exec env PYTHONPATH="$PWD:${PYTHONPATH:-}" '"${PYTHON}"' -m gream_jax.main \
    --config='"${CONFIG}"' --workdir='"${WORKDIR}"' '"${EXTRA}"'
'
