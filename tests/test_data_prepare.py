"""run_prepare / load_prepared on small files: written artifacts, leak-free reviews, refusals."""

import gzip
import json
import os

import numpy as np
import pytest
from data_fixtures import data_config

from gream_jax.data import load_prepared, run_prepare


def _processed(tmp_path, n_users=6, n_items=5):
    d = tmp_path / "src"
    d.mkdir()
    inter = {str(u): [(u + k) % n_items for k in range(3 + u % 3)] for u in range(n_users)}
    inter["6"] = [0, 1]            # too short: dropped and counted
    items = {str(i): {"title": f"Item {i}", "brand": "", "categories": "A, B", "description": "d"}
             for i in range(n_items)}
    (d / "Toy.inter.json").write_text(json.dumps(inter))
    (d / "Toy.item.json").write_text(json.dumps(items))
    return data_config(name="amazon_processed", path=str(d), file_prefix="Toy", max_history=2), inter


def test_prepare_writes_and_reloads(tmp_path, capsys):
    config, inter = _processed(tmp_path)
    summary = run_prepare(config, str(tmp_path / "w"))
    out = capsys.readouterr().out
    assert "users" in out and "dropped users" in out
    files = sorted(os.listdir(tmp_path / "w" / "data"))
    assert files == ["id_maps.json", "items.jsonl", "split.npz", "stats.json"]
    stats = json.loads((tmp_path / "w" / "data" / "stats.json").read_text())
    n_inter = sum(len(v) for k, v in inter.items() if k != "6")
    assert (stats["n_users"], stats["n_items"], stats["n_interactions"]) == (6, 5, n_inter)
    assert stats["dropped_users"] == 1 and summary["n_users"] == 6
    assert stats["density"] == pytest.approx(n_inter / 30)
    assert stats["history_length_percentiles"]["p0"] == 3 and stats["history_length_percentiles"]["p100"] == 5
    data, split = load_prepared(str(tmp_path / "w"), config)
    assert data.user_ids == ["0", "1", "2", "3", "4", "5"] and split.max_history == 2
    for u, raw in enumerate(data.user_ids):
        np.testing.assert_array_equal(data.sequences[u], inter[raw])
        assert split.test_targets[u] == inter[raw][-1] and split.valid_targets[u] == inter[raw][-2]
    assert data.items[3].title == "Item 3"


def test_refuses_a_workdir_prepared_from_other_data(tmp_path):
    config, _ = _processed(tmp_path)
    run_prepare(config, str(tmp_path / "w"))
    other = data_config(name="amazon_processed", path=config.data.path, file_prefix="Toy", max_history=7)
    with pytest.raises(ValueError, match=r"prepared from a different data config.*max_history.*\(2, 7\)"):
        load_prepared(str(tmp_path / "w"), other)
    with pytest.raises(ValueError, match="different data config"):
        run_prepare(other, str(tmp_path / "w"))
    with pytest.raises(FileNotFoundError, match="run --config.stage=prepare"):
        load_prepared(str(tmp_path / "empty"))


def test_tampered_files_are_detected(tmp_path):
    config, _ = _processed(tmp_path)
    run_prepare(config, str(tmp_path / "w"))
    maps_path = tmp_path / "w" / "data" / "id_maps.json"
    maps = json.loads(maps_path.read_text())
    maps["user_ids"][0], maps["user_ids"][1] = maps["user_ids"][1], maps["user_ids"][0]
    maps_path.write_text(json.dumps(maps))
    with pytest.raises(ValueError, match="content_sha256 differs"):
        load_prepared(str(tmp_path / "w"))


def test_only_training_reviews_are_kept(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    # Users A and B each review X1, X2, X3 in that order: X3 is the test target, X2 the valid one.
    reviews = [{"reviewerID": u, "asin": a, "unixReviewTime": t, "reviewText": f"{u} on {a}"}
               for u in ("A", "B") for t, a in enumerate(("X1", "X2", "X3"))]
    reviews.append({"reviewerID": "C", "asin": "X1", "unixReviewTime": 9, "reviewText": "C on X1"})
    with gzip.open(d / "reviews_Toy_5.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in reviews))
    with gzip.open(d / "meta_Toy.json.gz", "wt") as f:
        f.write("\n".join(repr({"asin": a, "title": a}) for a in ("X1", "X2", "X3")))
    config = data_config(name="amazon2014", path=str(d), file_prefix="Toy", kcore=1)
    run_prepare(config, str(tmp_path / "w"))
    data, _ = load_prepared(str(tmp_path / "w"), config)
    # C has one interaction: dropped from the split, so its review cannot leak any target.
    assert data.user_ids == ["A", "B"]
    assert data.items[0].reviews == ["A on X1", "B on X1", "C on X1"]
    assert data.items[1].reviews == [] and data.items[2].reviews == []
