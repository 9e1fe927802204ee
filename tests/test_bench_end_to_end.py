"""`python -m gream_jax.bench` end to end on the tiny preset: both frameworks, same weights.

Checks what makes the figures comparable, not the figures: the JAX and PyTorch models built
from the one checkpoint give the same float32 logits, greedy decoding picks the same tokens, and
the constrained beam searches return the same top-K items; every part produces a throughput.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_bench_tiny_jax_vs_torch_eager(tmp_path):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "gream_jax.bench", "--preset=tiny", "--impls=jax,torch_eager",
           "--steps=3", f"--out_dir={tmp_path}", "--timeout_s=600"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| train | gream_jax (jit) |" in proc.stdout
    summary = json.load(open(tmp_path / "bench_tiny.json"))
    for impl in ("jax", "torch_eager"):
        for part, metric in (("train", "tokens_per_s"), ("generate", "new_tokens_per_s"),
                             ("beam", "users_per_s")):
            r = summary["results"][impl][part]
            assert "error" not in r, (impl, part, r)
            assert r[metric] > 0 and r["steps"] == 3 and r["first_s"] > 0
    assert summary["logit_max_abs_diff"] < 1e-4
    assert summary["generate_first_token_agreement"] == 1.0
    assert summary["beam_topk_agreement"] == 1.0
    assert (tmp_path / "bench_tiny.md").exists() and (tmp_path / "bench_tiny.png").exists()
