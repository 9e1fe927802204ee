"""The index stage end to end on a tiny processed dataset: unique SIDs, reloadable artifact,
report, and the same codes on the 8-device mesh as on one device."""

import json
import os

import jax
import numpy as np
import pytest

from gream_jax.config_defaults import base_config, validate_config
from gream_jax.config_defaults.base import ConfigError
from gream_jax.data.prepare import run_prepare
from gream_jax.index.sid import SemanticIds
from gream_jax.index.stage import run_index

N_ITEMS, N_USERS = 48, 120
GENRES = ["red lipstick matte", "hydrating face cream", "hair shampoo for curls", "nail polish glitter"]


def _write_dataset(directory):
    rng = np.random.default_rng(0)
    items = {}
    for i in range(N_ITEMS):
        g = GENRES[i % 4]
        items[str(i)] = {"title": f"{g} number {i}", "brand": f"brand{i % 3}",
                         "categories": f"Beauty, {g.split()[-1]}", "description": "", "asin": f"A{i}"}
    items["7"] = {"title": "", "brand": "", "categories": "", "description": "", "asin": "A7"}   # no text
    inter = {}
    for u in range(N_USERS):
        g = u % 4
        pool = np.arange(g, N_ITEMS, 4)
        inter[str(u)] = [int(x) for x in rng.permutation(pool)[:rng.integers(5, 10)]]
    os.makedirs(directory, exist_ok=True)
    json.dump(inter, open(os.path.join(directory, "Toy.inter.json"), "w"))
    json.dump(items, open(os.path.join(directory, "Toy.item.json"), "w"))


def _config(data_dir, **index):
    config = base_config()
    config.data.name = "amazon_processed"
    config.data.path = str(data_dir)
    config.index.codes_per_level = (4, 3)
    config.index.kmeans_iters = 10
    config.index.encoder_max_tokens = 32
    config.index.encoder_batch_size = 16
    config.index.collab_dim = 8
    for k, v in index.items():
        config.index[k] = v
    validate_config(config)
    return config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("index_stage")
    _write_dataset(root / "raw")
    return root


def _workdir(prepared, name):
    wd = prepared / name
    run_prepare(_config(prepared / "raw"), str(wd))
    return str(wd)


def test_sharded_same_codes_as_single_device(prepared):
    assert jax.device_count() == 8
    config = _config(prepared / "raw", embedding="collaborative", collision="item_token")
    one = run_index(config, _workdir(prepared, "one"), devices=jax.devices()[:1])
    eight = run_index(config, _workdir(prepared, "eight"))
    a = SemanticIds.load(os.path.join(prepared, "one", "index"))
    b = SemanticIds.load(os.path.join(prepared, "eight", "index"))
    np.testing.assert_array_equal(a.codes, b.codes)
    assert one["collision_rate_after"] == eight["collision_rate_after"] == 0.0
    rep = json.load(open(os.path.join(prepared, "eight", "index", "report.json")))
    assert rep["mesh_devices"] == 8 and rep["sid_length_max"] == 3
    assert [lv["max_cluster"] for lv in rep["levels"][:2]] == [12, 16]      # balanced: 48/4, 48/3
    assert [lv["min_cluster"] for lv in rep["levels"][:2]] == [12, 16]


def test_text_collaborative_rank_suffix_stage(prepared):
    config = _config(prepared / "raw", embedding="text+collaborative", collision="rank_suffix")
    wd = _workdir(prepared, "text")
    summary = run_index(config, wd)
    out = os.path.join(wd, "index")
    for name in ("sids.npz", "sids.json", "report.json", "embeddings.npy", "utilisation.png", "texts.jsonl",
                 "trie.npz"):
        assert os.path.exists(os.path.join(out, name)), name
    rep = json.load(open(os.path.join(out, "report.json")))
    assert rep["empty_text_items"] == 1 and rep["collision_rate_after"] == 0.0
    assert rep["collision_rate_before"] > 0          # 48 items in 12 prefixes must collide
    assert rep["sid_length_max"] == 3 and summary["n_items"] == N_ITEMS
    assert rep["nn_first_code_agreement"] > rep["random_first_code_agreement"]
    sids = SemanticIds.load(out, n_items=N_ITEMS, dataset="Toy")
    assert sids.is_unique() and sids.meta["config"]["collision"] == "rank_suffix"
    assert np.load(os.path.join(out, "embeddings.npy")).shape == (N_ITEMS, 384 + 8)


def test_bad_index_config_named():
    config = base_config()
    config.index.collision = "hash"
    with pytest.raises(ConfigError, match="config.index.collision"):
        validate_config(config)
    config = base_config()
    config.index.codes_per_level = (32, 1)
    with pytest.raises(ConfigError, match="config.index.codes_per_level"):
        validate_config(config)
    config = base_config()
    config.index.settle_share = 1.5
    with pytest.raises(ConfigError, match="config.index.settle_share"):
        validate_config(config)


def test_stage_passes_the_settle_rule_to_the_quantiser():
    from gream_jax.index.stage import kmeans_options
    config = base_config()
    assert kmeans_options(config.index).settle_share == 0.005         # the index stage's choice
    config.index.settle_share = -1.0
    assert kmeans_options(config.index).settle_share is None          # the mode's default
    config.index.settle_share = 0.0
    config.index.settle_patience = 3
    opts = kmeans_options(config.index)
    assert opts.settle_share == 0.0 and opts.settle_patience == 3
