"""AOT compile check: the Qwen3-4B config's sharded SFT train step compiles on the 8-device mesh.

No weights are created: the state and batch are ShapeDtypeStructs with shardings. Besides
compiling, the test proves the placement is really FSDP x tensor: each device holds ~1/8 of the
train state (optimizer moments included), and the donated state is aliased to the new one.
"""

import pytest

from gream_jax.bench import aot
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_qwen3_4b_sharded_train_step_compiles_with_per_device_memory_estimate():
    config, module = aot.load_config_file(str(REPO_ROOT / "configs" / "qwen3_4b.py"))
    assert (config.mesh.fsdp, config.mesh.tensor) == (-1, 2)
    # Micro-batch of 8 rows x 1,024 tokens (1 row per data-parallel device pair) keeps CI compile short.
    report = aot.compile_train_step(config, module.HF_SHAPE["vocab_size"], rows=8, seq=1024)
    print("\n" + aot.format_report(report))
    assert report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
    assert 4.0e9 < report["n_params"] < 4.1e9          # Qwen3-4B: 4.02 B parameters (tied head)
    # float32 params + AdamW mu/nu = 12 bytes/param; per device ~1/8 of it (norms are replicated).
    assert report["state_bytes_total"] == pytest.approx(12 * report["n_params"], rel=1e-3)
    assert report["state_bytes_per_device"] < 1.02 * report["state_bytes_total"] / 8
    # XLA's own view: arguments are this device's shard; the donated state is reused in place.
    assert report["argument_bytes"] == pytest.approx(report["state_bytes_per_device"], rel=0.01)
    assert report["alias_bytes"] >= 0.99 * report["state_bytes_per_device"]
    assert 0 < report["temp_bytes"] < 40 * 2**30
