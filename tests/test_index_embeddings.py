"""Embedding sources: fusion weights/normalisation, text cache, and the Qwen backbone source."""

import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults import base_config
from gream_jax.index import embeddings


def test_l2_normalize_keeps_zero_rows():
    x = np.asarray([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(embeddings.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


def test_cache_reused_only_for_same_key(tmp_path):
    path = str(tmp_path / "c.npz")
    calls = []

    def compute():
        calls.append(1)
        return np.full((2, 3), len(calls), np.float32)

    a = embeddings.cached(path, "k1", compute)
    b = embeddings.cached(path, "k1", compute)
    c = embeddings.cached(path, "k2", compute)
    assert len(calls) == 2 and np.all(a == b) and np.all(c == 2)


def test_collaborative_source_and_unknown_source():
    config = base_config()
    config.index.collab_dim = 4
    train = [np.asarray([0, 1, 2], np.int32), np.asarray([1, 2, 3], np.int32), np.asarray([3, 4, 0], np.int32)]
    v = embeddings.item_embeddings("collaborative", [""] * 5, train, 5, config)
    assert v.shape == (5, 4)
    with pytest.raises(ValueError, match="config.index.embedding='bert'"):
        embeddings.item_embeddings("bert", [""] * 5, train, 5, config)


def test_qwen_source_mean_pools_backbone(tmp_path):
    pytest.importorskip("torch")
    from gream_jax.model.tiny_hf import write_tiny_hf_checkpoint
    ckpt = write_tiny_hf_checkpoint(str(tmp_path / "tiny"))
    config = base_config()
    config.model.checkpoint = ckpt
    config.index.encoder_batch_size = 4
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    texts = ["the quick brown fox", "users watch movies", "", "the quick brown fox"]
    v = embeddings.item_embeddings("qwen", texts, [], 4, config, mesh, mesh_lib.DEFAULT_RULES,
                                   cache_dir=str(tmp_path / "cache"))
    assert v.shape == (4, 32) and np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), [1.0, 1.0, 0.0, 1.0], atol=1e-5)   # empty text: 0
    np.testing.assert_allclose(v[0], v[3], atol=1e-5)           # same text, same vector
    assert not np.allclose(v[0], v[1])
    config.model.checkpoint = ""
    with pytest.raises(ValueError, match="config.model.checkpoint"):
        embeddings.item_embeddings("qwen", texts, [], 4, config, mesh, mesh_lib.DEFAULT_RULES)
