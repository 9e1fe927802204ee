#!/usr/bin/env bash
# Runs one gream_jax stage (or the whole pipeline) on every worker of a Cloud TPU VM pod slice.
#
# Usage (from your workstation, with gcloud configured):
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a \
#   WORKDIR=/mnt/gcs/gream/beauty_qwen3_1p7b \
#   CONFIG=configs/qwen3_1p7b.py:beauty \
#   EXTRA="--config.model.checkpoint=/mnt/gcs/hf/Qwen3-1.7B --config.stage=sft" \
#   launch/tpu_pod.sh
#
# The same `python -m gream_jax.main` command runs on all workers (--worker=all). Inside it,
# gream_jax.mesh.maybe_initialize_distributed() sees TPU chips on the PCI bus and calls
# jax.distributed.initialize(), which reads the pod topology (worker list, this worker's id,
# coordinator = worker 0) from the TPU metadata server; nothing is passed by hand.
# WORKDIR (and the HF checkpoint) must be the same path on all workers: a bucket mounted with
# gcsfuse at the same mount point everywhere, or Filestore (NFS); see launch/README.md.
# REPO_DIR is where the repository is checked out on the workers (copy it once with
#   gcloud compute tpus tpu-vm scp --recurse --worker=all . "$TPU_NAME":gream_jax --zone "$ZONE").
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the pod slice name}"
: "${ZONE:?set ZONE to the slice zone}"
: "${WORKDIR:?set WORKDIR to a path every worker shares (gcsfuse mount or NFS)}"
CONFIG="${CONFIG:-configs/qwen3_0p6b.py}"
REPO_DIR="${REPO_DIR:-gream_jax}"
EXTRA="${EXTRA:-}"
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi

REMOTE="cd ${REPO_DIR} && PYTHONPATH=\$PWD:\${PYTHONPATH:-} python3 -m gream_jax.main \
--config=${CONFIG} --workdir=${WORKDIR} ${EXTRA} 2>&1 | tee -a /tmp/gream_jax_\$(hostname).log"

echo "[tpu_pod] ${TPU_NAME} (${ZONE}): ${REMOTE}"
exec gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" "${PROJECT_FLAG[@]}" \
  --worker=all --command="${REMOTE}"
