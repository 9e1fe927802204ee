"""save_model/load_model round trip and build_model (from scratch, from an HF checkpoint, SID checks)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults import base_config
from gream_jax.data.types import ItemText
from gream_jax.index.sid import SemanticIds
from gream_jax.model import api
from gream_jax.model.builder import SidVocabularyMismatch, build_model
from gream_jax.model.hf_export import export_hf
from gream_jax.model.hf_loader import load_hf_checkpoint
from gream_jax.model.store import load_model, save_model
from gream_jax.model.tiny_hf import write_tiny_hf_checkpoint
from gream_jax.model.tokenizer import TASK_TOKENS, sid_token_table

FWD = jax.jit(api.forward, static_argnames="model_cfg")
ITEMS = [ItemText(title=f"Movie number {i}", brand="", categories="Drama|Comedy",
                  description="a film about people", reviews=[]) for i in range(6)]


def _sids(level_sizes=(16, 8, 4)):
    codes = np.array([[i % level_sizes[0], i % level_sizes[1], i % 2] for i in range(6)], np.int32)
    return SemanticIds(codes=codes, lengths=np.full(6, 3), level_sizes=level_sizes)


def _config(**model):
    config = base_config()
    config.model.update(dict(num_layers=1, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8,
                             intermediate_size=64, tokenizer_vocab_size=300, vocab_pad_multiple=32))
    config.model.update(model)
    return config


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def test_build_from_scratch_then_save_and_load(mesh, tmp_path):
    config = _config()
    cfg, params, tok = build_model(config, str(tmp_path), _sids(), ITEMS, mesh, mesh_lib.DEFAULT_RULES)
    assert cfg.architecture == "qwen3" and cfg.num_layers == 1 and cfg.vocab_size % 32 == 0
    assert tok.vocab_size <= cfg.vocab_size < tok.vocab_size + 32
    assert all(tok.has_token(t) for t in TASK_TOKENS + ("<|im_start|>", "<a_3>", "<c_1>"))
    table = sid_token_table(tok, _sids())
    assert (table >= 0).sum() == 16 + 8 + 4 and table[2, 1] == tok.token_to_id("<c_1>")
    assert params["embed_tokens"].sharding.spec == api.param_shardings(cfg, mesh)["embed_tokens"].spec

    directory = save_model(str(tmp_path / "final"), params, cfg, tok, {"stage": "test", "step": 3})
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    other = mesh_lib.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    cfg2, params2, tok2, meta = load_model(directory, other, mesh_lib.DEFAULT_RULES)
    assert cfg2 == cfg and meta == {"stage": "test", "step": 3}
    assert tok2.encode("<a_1> Movie number 3") == tok.encode("<a_1> Movie number 3")
    assert params2["embed_tokens"].sharding.mesh.shape == other.shape
    tokens = jnp.asarray([tok.encode("Movie number 2 <a_1><b_2>")], jnp.int32)
    mask = jnp.ones_like(tokens)
    np.testing.assert_allclose(FWD(params2, cfg2, tokens, mask), FWD(params, cfg, tokens, mask), atol=1e-6)
    # Saving again over an existing directory replaces it whole.
    save_model(directory, params, cfg, tok, {"stage": "again"})
    assert load_model(directory, mesh)[3] == {"stage": "again"}


def test_build_from_hf_checkpoint_and_refuse_mismatched_sids(mesh, tmp_path):
    hf_dir = write_tiny_hf_checkpoint(str(tmp_path / "hf"), arch="qwen3", tied=False)
    config = _config(checkpoint=hf_dir, lora_rank=2)
    cfg, params, tok = build_model(config, str(tmp_path), _sids(), ITEMS, mesh)
    base_cfg, base_params = load_hf_checkpoint(hf_dir, mesh)
    assert cfg.resized_from_vocab_size == base_cfg.vocab_size == 320
    assert cfg.vocab_size == 352 and tok.vocab_size <= 352 and cfg.lora_rank == 2
    # Old tokens compute exactly what the checkpoint computes (LoRA B = 0, old rows untouched).
    tokens, mask = jnp.asarray([[5, 9, 17, 3]]), jnp.ones((1, 4), jnp.int32)
    np.testing.assert_allclose(FWD(params, cfg, tokens, mask)[..., :320],
                               FWD(base_params, base_cfg, tokens, mask), atol=1e-6)
    # A gream_jax export carries its SID tokens: same index loads without adding any ...
    exported = export_hf(params, cfg, tok, str(tmp_path / "exported"))
    cfg2, _, tok2 = build_model(_config(checkpoint=exported), str(tmp_path), _sids(), ITEMS, mesh)
    assert tok2.vocab_size == tok.vocab_size and cfg2.vocab_size == cfg.vocab_size
    np.testing.assert_array_equal(sid_token_table(tok2, _sids()), sid_token_table(tok, _sids()))
    # Rows from the index would overwrite the export's trained SID rows: refused.
    os.makedirs(tmp_path / "index", exist_ok=True)
    np.save(tmp_path / "index" / "embeddings.npy", np.random.default_rng(0).normal(size=(6, 12)))
    with pytest.raises(ValueError, match="already carries this index's SID tokens"):
        build_model(_config(checkpoint=exported, sid_embedding_init="index"), str(tmp_path), _sids(), ITEMS, mesh)
    # From the base checkpoint (new SID rows) the index init applies: other rows stay, SID rows move.
    cfg3, params3, tok3 = build_model(_config(checkpoint=hf_dir, sid_embedding_init="index"), str(tmp_path),
                                      _sids(), ITEMS, mesh)
    ids = sid_token_table(tok3, _sids())
    ids = ids[ids >= 0]
    fresh = build_model(_config(checkpoint=hf_dir), str(tmp_path), _sids(), ITEMS, mesh)[1]
    for name, axis in (("embed_tokens", 0), ("lm_head", 1)):
        a, b = np.asarray(params3[name]), np.asarray(fresh[name])
        others = np.setdiff1d(np.arange(a.shape[axis]), ids)
        np.testing.assert_array_equal(np.take(a, others, axis), np.take(b, others, axis))
        assert not np.allclose(np.take(a, ids, axis), np.take(b, ids, axis))
    # ... and another index is refused with a clear message.
    with pytest.raises(SidVocabularyMismatch, match=r"exported.*missing \['<a_16>'"):
        build_model(_config(checkpoint=exported), str(tmp_path), _sids((17, 8, 4)), ITEMS, mesh)
