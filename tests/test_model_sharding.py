"""Sharding: every (data, fsdp, tensor) mesh computes the single-device logits, and the partition
spec of every parameter matches the golden snapshot.

Regenerate the snapshot after an intentional sharding change with
    GREAM_REGENERATE_GOLDEN=1 python -m pytest -q tests/test_model_sharding.py
and review the diff of tests/golden/model_partition_specs.json.
"""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.model.config import ModelConfig

GOLDEN = pathlib.Path(__file__).parent / "golden" / "model_partition_specs.json"
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]
# kv_heads=2 < tensor=8 exercises the replicate-what-does-not-divide rule; LoRA leaves included.
CFG = ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=8,
                  num_kv_heads=2, head_dim=8, tie_word_embeddings=False, lora_rank=4,
                  lora_targets=("q_proj", "v_proj", "down_proj"))


def _mesh(shape):
    return mesh_lib.make_mesh(dict(zip(mesh_lib.MESH_AXES, shape)))


def _inputs():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, CFG.vocab_size, size=(8, 8)).astype(np.int32)
    mask = np.ones((8, 8), np.int32)
    mask[::2, :3] = 0
    return tokens, mask


@pytest.fixture(scope="module")
def reference():
    one = mesh_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    params = api.init_params(CFG, jax.random.PRNGKey(3), one)
    # Non-zero LoRA B so the adapters take part in the sharded computation.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if str(p[-1]).find("lora_b") >= 0 else x, params)
    host = jax.tree.map(np.asarray, params)
    tokens, mask = _inputs()
    logits = jax.jit(api.forward, static_argnames="model_cfg")(host, CFG, tokens, mask)
    return host, np.asarray(logits)


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_forward_matches_single_device(reference, shape):
    host, expected = reference
    mesh = _mesh(shape)
    params = jax.device_put(host, api.param_shardings(CFG, mesh))
    tokens, mask = _inputs()
    batch = mesh_lib.batch_sharding(mesh, 2)
    with jax.set_mesh(mesh):
        logits = jax.jit(api.forward, static_argnames="model_cfg")(
            params, CFG, jax.device_put(tokens, batch), jax.device_put(mask, batch))
    assert logits.sharding.spec[0] is not None or mesh_lib.data_parallel_size(mesh) == 1
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=0)


def test_sharded_kv_cache_decoding_matches_single_device(reference):
    host, expected = reference
    mesh = _mesh((2, 2, 2))
    params = jax.device_put(host, api.param_shardings(CFG, mesh))
    tokens, mask = _inputs()
    cache = jax.device_put(api.init_cache(CFG, 8, 10), api.cache_shardings(CFG, mesh, 8, 10))
    with jax.set_mesh(mesh):
        logits, cache = jax.jit(api.prefill, static_argnames="model_cfg", donate_argnames="cache")(
            params, CFG, tokens[:, :6], mask[:, :6], cache)
        np.testing.assert_allclose(np.asarray(logits), expected[:, 5], atol=1e-5, rtol=0)
        logits, cache = jax.jit(api.decode_step, static_argnames="model_cfg", donate_argnames="cache")(
            params, CFG, jnp.asarray(tokens[:, 6]), cache)
    np.testing.assert_allclose(np.asarray(logits), expected[:, 6], atol=1e-5, rtol=0)


def _spec_table():
    table = {}
    for shape in MESHES:
        shardings = api.param_shardings(CFG, _mesh(shape))
        flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
        table["x".join(map(str, shape))] = {
            "/".join(getattr(k, "key", str(k)) for k in path): str(tuple(s.spec)) for path, s in flat}
    return table


def test_partition_specs_match_golden_snapshot():
    table = _spec_table()
    if os.environ.get("GREAM_REGENERATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for mesh_name in golden:
        for name in sorted(set(golden[mesh_name]) | set(table[mesh_name])):
            assert table[mesh_name].get(name) == golden[mesh_name].get(name), (
                f"mesh {mesh_name}, param {name}: spec {table[mesh_name].get(name)} != golden "
                f"{golden[mesh_name].get(name)} (regenerate: GREAM_REGENERATE_GOLDEN=1, see docstring)")
    assert set(golden) == set(table)
