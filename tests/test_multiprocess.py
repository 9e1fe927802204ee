"""Multi-process correctness: two JAX processes (4 fake CPU devices each, a loopback coordinator)
run the real sharded SFT train step and reach the same losses and parameters as one process
with 8 devices and the same global batch. Also: how launchers are detected.

The two processes are this file run as a script; each joins through
`gream_jax.mesh.maybe_initialize_distributed()` reading JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID, exactly what launch/slurm_gpu.sh exports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np

MESH = {"data": 2, "fsdp": 2, "tensor": 2}
STEPS = 3
ROWS, SEQ = 8, 16


def train_few_steps():
    """Runs STEPS SFT steps on the tiny config; returns (losses, params as host numpy)."""
    import types

    import jax
    from jax.experimental import multihost_utils

    from gream_jax import mesh as mesh_lib
    from gream_jax.model import api
    from gream_jax.model.config import ModelConfig
    from gream_jax.train import sft

    mesh = mesh_lib.make_mesh(MESH)
    rules = mesh_lib.DEFAULT_RULES
    cfg = ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8)
    train_cfg = types.SimpleNamespace(lr=1e-2, warmup_steps=1, steps=10, end_lr_factor=0.1, b1=0.9,
                                      b2=0.95, weight_decay=0.01, grad_clip=1.0)
    optimizer = sft.make_optimizer(train_cfg)
    params = api.init_params(cfg, jax.random.PRNGKey(0), mesh, rules)
    state = sft.init_state(params, optimizer, seed=0, mesh=mesh)
    step = sft.make_train_step(lambda p, t, a, pos, seg: api.forward(p, cfg, t, a, pos, seg),
                               optimizer, sft.learning_rate_schedule(train_cfg))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(ROWS, SEQ))
    # The same global batch every step (so the loss must fall); every process passes the whole
    # host batch and `device_batch` places only its own devices' rows.
    host = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
            "positions": np.tile(np.arange(SEQ), (ROWS, 1)),
            "targets": (rng.random((ROWS, SEQ)) < 0.7).astype(np.int32)}
    losses = []
    with jax.set_mesh(mesh):
        jitted = sft.jit_train_step(step, state, mesh, rules)
        for _ in range(STEPS):
            state, metrics = jitted(state, sft.device_batch(host, 1, mesh, rules))
            losses.append(float(metrics["loss"]))
    full = multihost_utils.process_allgather(state["params"], tiled=True)
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(full)[0]}
    return np.asarray(losses), flat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    import jax
    assert jax.device_count() == 8
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(pid), JAX_PLATFORMS="cpu",
                   XLA_FLAGS="--xla_force_host_platform_device_count=4",
                   PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("GREAM_DISTRIBUTED", None)
        procs.append(subprocess.Popen([sys.executable, __file__, str(tmp_path / f"p{pid}.npz")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        logs.append(out)
        assert p.returncode == 0, f"worker failed:\n{out[-4000:]}"
    multi = [np.load(tmp_path / f"p{pid}.npz") for pid in range(2)]
    for pid in range(2):
        assert int(multi[pid]["process_count"]) == 2 and int(multi[pid]["device_count"]) == 8
    losses, params = train_few_steps()       # this process: one process, 8 devices, same mesh shape
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    for pid in range(2):
        np.testing.assert_allclose(multi[pid]["losses"], losses, rtol=1e-5, atol=1e-6)
        for name, value in params.items():
            np.testing.assert_allclose(multi[pid]["param" + name], value, rtol=1e-5, atol=1e-6,
                                       err_msg=f"process {pid}, parameter {name}")


def test_launch_detection():
    from gream_jax.mesh import MeshConfigError, distributed_launch
    assert distributed_launch({}, has_tpu_chips=False) is None
    # SLURM: only inside a multi-task srun step; an sbatch script's environment alone is not a job.
    assert distributed_launch({"SLURM_NTASKS": "16", "SLURM_PROCID": "0"}, has_tpu_chips=False) is None
    assert distributed_launch({"SLURM_STEP_NUM_TASKS": "16"}, has_tpu_chips=False) == ("slurm", {})
    assert distributed_launch({"OMPI_COMM_WORLD_SIZE": "4"}, has_tpu_chips=False) == ("ompi", {})
    # Cloud TPU VM pod (gcloud ... ssh --worker=all): topology from the metadata server, so any VM
    # with TPU chips initialises; GKE TPU: worker host list in the environment.
    assert distributed_launch({}, has_tpu_chips=True) == ("tpu", {})
    assert distributed_launch({"JAX_PLATFORMS": "cpu"}, has_tpu_chips=True) is None
    assert distributed_launch({"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3"}, has_tpu_chips=False) == ("tpu", {})
    assert distributed_launch({"TPU_WORKER_HOSTNAMES": "h0"}, has_tpu_chips=False) is None
    explicit = {"JAX_COORDINATOR_ADDRESS": "n1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed_launch(explicit, has_tpu_chips=False) == (
        "explicit", {"coordinator_address": "n1:1234", "num_processes": 4, "process_id": 3})
    assert distributed_launch({"JAX_COORDINATOR_ADDRESS": "n1:1234"}, has_tpu_chips=False) == (
        "explicit", {"coordinator_address": "n1:1234"})
    assert distributed_launch(dict(explicit, GREAM_DISTRIBUTED="0"), has_tpu_chips=True) is None
    assert distributed_launch({"GREAM_DISTRIBUTED": "1"}, has_tpu_chips=False) == ("auto", {})
    import pytest
    with pytest.raises(MeshConfigError, match="JAX_PROCESS_ID=4"):
        distributed_launch(dict(explicit, JAX_PROCESS_ID="4"), has_tpu_chips=False)
    with pytest.raises(MeshConfigError, match="both JAX_NUM_PROCESSES and JAX_PROCESS_ID"):
        distributed_launch({"JAX_COORDINATOR_ADDRESS": "n1:1", "JAX_PROCESS_ID": "0"}, has_tpu_chips=False)


def _worker(out_path: str) -> None:
    from gream_jax import mesh as mesh_lib
    kind = mesh_lib.maybe_initialize_distributed()   # before any backend use
    import jax
    assert kind == "explicit", kind
    losses, params = train_few_steps()
    np.savez(out_path, losses=losses, process_count=jax.process_count(), device_count=jax.device_count(),
             **{"param" + k: v for k, v in params.items()})


if __name__ == "__main__":
    _worker(sys.argv[1])
else:
    from tests.conftest import REPO_ROOT
