"""LoRA: zero-initialised B leaves the base model unchanged; merging is exact; export merges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.model import api, lora
from gream_jax.model.config import ModelConfig

BASE = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=8, tie_word_embeddings=False)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FWD = jax.jit(api.forward, static_argnames="model_cfg")


@pytest.fixture(scope="module")
def setup():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    base = api.init_params(BASE, jax.random.PRNGKey(0), mesh)
    wrapped, cfg = lora.add_lora(base, BASE, jax.random.PRNGKey(1), mesh, rank=4, alpha=8.0,
                                 targets=TARGETS)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 6)), jnp.int32)
    return mesh, base, wrapped, cfg, tokens, jnp.ones((2, 6), jnp.int32)


def test_zero_b_adapters_give_the_base_logits(setup):
    _, base, wrapped, cfg, tokens, mask = setup
    assert cfg.lora_rank == 4 and "lora_a" in wrapped["layers"]["mlp"]["down_proj"]
    assert float(jnp.abs(wrapped["layers"]["self_attn"]["q_proj"]["lora_a"]).sum()) > 0
    np.testing.assert_array_equal(FWD(wrapped, cfg, tokens, mask), FWD(base, BASE, tokens, mask))


def _perturb_b(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(len(str(p))), x.shape, x.dtype)
        if getattr(p[-1], "key", "") == "lora_b" else x, params)


def test_merge_equals_adapter_forward_and_changes_the_model(setup):
    _, base, wrapped, cfg, tokens, mask = setup
    trained = _perturb_b(wrapped)
    with_adapters = FWD(trained, cfg, tokens, mask)
    merged, merged_cfg = lora.merge_lora(trained, cfg)
    assert merged_cfg.lora_rank == 0 and "lora_a" not in merged["layers"]["self_attn"]["q_proj"]
    assert merged["layers"]["self_attn"]["q_proj"]["kernel"].sharding == \
        wrapped["layers"]["self_attn"]["q_proj"]["kernel"].sharding
    np.testing.assert_allclose(FWD(merged, merged_cfg, tokens, mask), with_adapters, atol=1e-5)
    assert float(jnp.abs(with_adapters - FWD(base, BASE, tokens, mask)).max()) > 1e-3


def test_trainable_mask_selects_only_adapters(setup):
    _, _, wrapped, _, _, _ = setup
    mask = lora.trainable_mask(wrapped)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    assert {getattr(p[-1], "key") for p, m in flat if m} == {"lora_a", "lora_b"}
    assert sum(m for _, m in flat) == 2 * len(TARGETS)


def test_export_merges_adapters(setup, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from gream_jax.model.hf_export import export_hf
    _, _, wrapped, cfg, tokens, mask = setup
    trained = _perturb_b(wrapped)
    out = export_hf(trained, cfg, None, str(tmp_path / "merged"))
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(FWD(trained, cfg, tokens, mask), ref, atol=1e-4)
