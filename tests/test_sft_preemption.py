"""Preemption: SIGKILL the real SFT loop mid-run, rerun the same command, get the same parameters."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "sft_worker.py")


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""          # one CPU device: the worker needs no fake mesh
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(stage_dir, out, sleep="0"):
    return subprocess.run([sys.executable, WORKER, str(stage_dir), str(out), sleep], env=_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    ref = _run(tmp_path / "ref", tmp_path / "ref.npz")
    assert ref.returncode == 0, ref.stderr[-3000:]

    stage = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, WORKER, str(stage), str(tmp_path / "x.npz"), "0.5"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt_dir = stage / "checkpoints"
    deadline = time.time() + 500
    while time.time() < deadline and proc.poll() is None:
        if ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    assert saved and max(saved) < 16, saved
    assert not (tmp_path / "x.npz").exists()

    resumed = _run(stage, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed_from {max(saved)}" in resumed.stdout, resumed.stdout
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "resumed.npz")
    assert set(a.files) == set(b.files)
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)
