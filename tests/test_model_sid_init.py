"""SID token rows initialised from the index's item vectors (gream_jax/model/sid_init.py)."""

import os

import jax
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults import base_config, validate_config
from gream_jax.config_defaults.base import ConfigError
from gream_jax.data.types import ItemText
from gream_jax.index.sid import SemanticIds
from gream_jax.model import api
from gream_jax.model.builder import build_model
from gream_jax.model.sid_init import principal_projection, sid_rows
from gream_jax.model.tokenizer import sid_token_table
from test_model_store_builder import _config  # the same tiny from-scratch model config

N = 6
ITEMS = [ItemText(title=f"Item number {i}", brand="", categories="Tools", description="a thing",
                  reviews=[]) for i in range(N)]


def _sids():
    # 3 first codes (code 2 unused), then an item-unique last level.
    codes = np.array([[i % 2, i] for i in range(N)], np.int32)
    return SemanticIds(codes=codes, lengths=np.full(N, 2), level_sizes=(3, N))


def _vectors(seed=0, dim=10):
    return np.random.default_rng(seed).normal(size=(N, dim)).astype(np.float32)


def test_principal_projection_is_pca_with_zero_padding():
    x = _vectors(dim=3)
    z = principal_projection(x, 5)
    assert z.shape == (N, 5)
    np.testing.assert_allclose(z[:, 3:], 0.0)                       # D = 3 < width: zero columns
    gram = z[:, :3].T @ z[:, :3]
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-9)   # uncorrelated
    assert np.all(np.diff(np.diag(gram)) <= 1e-9)                   # variance in decreasing order
    # The projection keeps all pairwise distances when no direction is dropped.
    d = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)
    np.testing.assert_allclose(d(z), d(x.astype(np.float64)), atol=1e-5)


def test_sid_rows_item_level_means_and_scale():
    x = _vectors()
    mean, std = np.full(4, 0.5), np.array([0.1, 0.2, 0.3, 0.4])
    (first, first_informed), (last, last_informed) = sid_rows(x, _sids().codes, _sids().lengths, (3, N), 4,
                                                              mean, std)
    assert first.shape == (3, 4) and last.shape == (N, 4) and last_informed.all()
    # The item-unique level: each item's own projection, standardised per dimension.
    z = principal_projection(x, 4)
    expect = mean + (z - z.mean(0)) / z.std(0) * std
    np.testing.assert_allclose(last, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last.mean(0), mean, atol=1e-6)
    np.testing.assert_allclose(last.std(0), std, rtol=1e-5)
    # A first-level code: the mean of its items' projections (then the level's own scaling);
    # code 2 has no items and is not informed (the caller keeps its default row).
    groups = np.stack([z[0::2].mean(0), z[1::2].mean(0)])
    spread = groups.std(0)
    np.testing.assert_allclose(first[:2], mean + (groups - groups.mean(0)) / spread * std, rtol=1e-5)
    assert first_informed[:2].all() and not first_informed[2].any()
    # Dimensions past the vectors' rank (6 centred items: rank 5) are not informed either.
    _, (_, wide_informed) = sid_rows(x, _sids().codes, _sids().lengths, (3, N), 8, np.zeros(8), np.ones(8))
    assert wide_informed[:, :5].all() and not wide_informed[:, 5:].any()
    # Similar items get similar rows: a near-duplicate item lands next to its original.
    x2 = x.copy()
    x2[5] = x2[4] + 1e-3
    rows = sid_rows(x2, _sids().codes, _sids().lengths, (3, N), 4, mean, std)[1][0]
    dists = np.linalg.norm(rows[4] - rows, axis=1)
    assert np.argsort(dists)[1] == 5


def test_sid_rows_refuses_mismatched_vectors():
    with pytest.raises(ValueError, match="item vectors of shape"):
        sid_rows(_vectors()[:4], _sids().codes, _sids().lengths, (3, N), 4, np.zeros(4), np.ones(4))


@pytest.mark.parametrize("tied", [True, False])
def test_build_model_index_init_sets_only_sid_rows_and_keeps_shardings(tmp_path, tied):
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    os.makedirs(tmp_path / "index")
    np.save(tmp_path / "index" / "embeddings.npy", _vectors(dim=48))
    base_cfg, base, tok = build_model(_config(tie_word_embeddings=tied), str(tmp_path), _sids(), ITEMS, mesh)
    cfg, params, tok2 = build_model(_config(tie_word_embeddings=tied, sid_embedding_init="index"),
                                    str(tmp_path), _sids(), ITEMS, mesh)
    assert cfg == base_cfg and tok2.vocab_size == tok.vocab_size
    table = sid_token_table(tok, _sids())
    sid_ids = np.concatenate([table[0, :3], table[1, :N]])
    emb, emb0 = np.asarray(params["embed_tokens"]), np.asarray(base["embed_tokens"])
    others = np.setdiff1d(np.arange(emb.shape[0]), sid_ids)
    np.testing.assert_array_equal(emb[others], emb0[others])          # same seed: everything else equal
    assert not np.allclose(emb[sid_ids], emb0[sid_ids])
    # The item rows carry the vectors' geometry (6 items: rank 5) and the backbone rows' scale; the
    # dimensions the vectors do not inform keep the default rows.
    item_rows = emb[table[1, :N]]
    np.testing.assert_allclose(item_rows[:, :5].std(0), emb0[others][:, :5].std(0), rtol=1e-4)
    np.testing.assert_array_equal(item_rows[:, 5:], emb0[table[1, :N]][:, 5:])
    assert params["embed_tokens"].sharding == base["embed_tokens"].sharding
    if not tied:
        head, head0 = np.asarray(params["lm_head"]), np.asarray(base["lm_head"])
        np.testing.assert_array_equal(head[:, others], head0[:, others])
        assert not np.allclose(head[:, sid_ids], head0[:, sid_ids])
        assert params["lm_head"].sharding == base["lm_head"].sharding
    tokens = np.asarray([tok.encode("Item number 2 <a_1><b_2>")], np.int32)
    logits = jax.jit(api.forward, static_argnames="model_cfg")(params, cfg, tokens, np.ones_like(tokens))
    assert np.isfinite(np.asarray(logits)).all()


def test_build_model_index_init_needs_matching_index(tmp_path):
    mesh = mesh_lib.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
    with pytest.raises(FileNotFoundError, match="run --config.stage=index first"):
        build_model(_config(sid_embedding_init="index"), str(tmp_path), _sids(), ITEMS, mesh)
    os.makedirs(tmp_path / "index")
    np.save(tmp_path / "index" / "embeddings.npy", _vectors()[:4])
    with pytest.raises(ValueError, match="embeddings.npy: shape"):
        build_model(_config(sid_embedding_init="index"), str(tmp_path), _sids(), ITEMS, mesh)


def test_config_checks_init_mode_and_select_metric():
    config = base_config()
    config.model.sid_embedding_init = "pca"
    with pytest.raises(ConfigError, match="sid_embedding_init"):
        validate_config(config)
    config = base_config()
    config.train.select_metric = "mrr"
    with pytest.raises(ConfigError, match="select_metric"):
        validate_config(config)
