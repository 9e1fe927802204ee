"""Processed LC-Rec/GREAM format: the real shared datasets and deliberately broken files."""

import json

import numpy as np
import pytest
from data_fixtures import data_config

from gream_jax.data import DataFormatError, load_dataset


@pytest.mark.parametrize("folder,prefix,counts", [
    ("beauty", "Beauty", (22363, 12101, 198502)),
    ("industrial", "Industrial", (8317, 4344, 58492)),
    ("office", "Office", (4905, 2420, 53258)),
])
def test_real_shared_datasets(shared_data_dir, folder, prefix, counts):
    path = shared_data_dir / folder
    data = load_dataset(data_config(name="amazon_processed", path=str(path), file_prefix=prefix))
    assert (data.n_users, data.n_items, data.n_interactions) == counts
    # Internal ids equal the file's 0-based ids, and sequences keep the file order.
    assert data.item_ids[:3] == ["0", "1", "2"] and data.user_ids[:2] == ["0", "1"]
    with open(path / f"{prefix}.inter.json", encoding="utf-8") as f:
        inter = json.load(f)
    np.testing.assert_array_equal(data.sequences[7], inter["7"])
    with open(path / f"{prefix}.item.json", encoding="utf-8") as f:
        item5 = json.load(f)["5"]
    assert data.items[5].title == " ".join(item5["title"].split())
    assert data.items[5].categories == " ".join(item5["categories"].split())
    assert all(t.title for t in data.items)
    assert min(len(s) for s in data.sequences) >= 5


def test_prefix_is_found_when_unique(shared_data_dir):
    data = load_dataset(data_config(name="amazon_processed", path=str(shared_data_dir / "office")))
    assert data.name == "Office" and data.n_items == 2420


ITEM = {"title": "Lip balm", "description": "", "brand": "Acme", "categories": "Beauty, Lips", "asin": "B1"}


def _write(tmp_path, inter, items, raw_inter=None, raw_items=None):
    (tmp_path / "Toy.inter.json").write_text(raw_inter if raw_inter is not None else json.dumps(inter))
    (tmp_path / "Toy.item.json").write_text(raw_items if raw_items is not None else json.dumps(items))
    return data_config(name="amazon_processed", path=str(tmp_path), file_prefix="Toy")


def test_small_valid_file(tmp_path):
    items = {str(i): dict(ITEM, title=f"Item {i}") for i in range(4)}
    cfg = _write(tmp_path, {"1": [3, 2, 1], "0": [0, 1, 2, 3]}, items)
    data = load_dataset(cfg)
    assert data.user_ids == ["0", "1"]
    np.testing.assert_array_equal(data.sequences[1], [3, 2, 1])
    assert data.items[3].title == "Item 3" and data.items[0].brand == "Acme"


GOOD_ITEMS = {"0": ITEM, "1": ITEM}


@pytest.mark.parametrize("inter,items,raw_inter,raw_items,message", [
    ({"0": [0, 1]}, GOOD_ITEMS, '{"0": [0, 1],\n "1": [0 1]}', None,
     r"Toy\.inter\.json:2: invalid JSON"),
    ({"0": [0, 5]}, GOOD_ITEMS, None, None,
     r"Toy\.inter\.json \[key '0'\]: item 5 at position 1 is not in Toy\.item\.json"),
    ({"0": []}, GOOD_ITEMS, None, None, r"Toy\.inter\.json \[key '0'\]: empty history"),
    ({"0": "0 1"}, GOOD_ITEMS, None, None, r"\[key '0'\]: history must be a list"),
    ({"0": [0, 1.5]}, GOOD_ITEMS, None, None, r"\[key '0'\]: item at position 1 must be an int id"),
    ({"0": [0, True]}, GOOD_ITEMS, None, None, r"item at position 1 must be an int id"),
    ([[0, 1]], GOOD_ITEMS, None, None, r"Toy\.inter\.json: top level must be a JSON object"),
    ({}, GOOD_ITEMS, None, None, r"Toy\.inter\.json: empty object"),
    ({"0": [0]}, GOOD_ITEMS, '{"0": [0], "0": [1]}', None, r"Toy\.inter\.json \[key '0'\]: duplicate key"),
    ({"0": [0]}, {"0": {"title": "x", "brand": "", "categories": ""}}, None, None,
     r"Toy\.item\.json \[key '0'\]: field 'description' missing"),
    ({"0": [0]}, {"0": dict(ITEM, brand=None)}, None, None,
     r"Toy\.item\.json \[key '0'\]: field 'brand' must be a string"),
    ({"0": [0]}, {"0": "Lip balm"}, None, None, r"Toy\.item\.json \[key '0'\]: item record must be an object"),
    ({"0": [0]}, None, None, '{"0": {"title": "x"', r"Toy\.item\.json:1: invalid JSON"),
])
def test_broken_files(tmp_path, inter, items, raw_inter, raw_items, message):
    cfg = _write(tmp_path, inter, items, raw_inter, raw_items)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(cfg)


def test_missing_and_ambiguous_files(tmp_path):
    cfg = _write(tmp_path, {"0": [0]}, {"0": ITEM})
    (tmp_path / "Toy.item.json").unlink()
    with pytest.raises(DataFormatError, match=r"Toy\.item\.json: file not found"):
        load_dataset(cfg)
    (tmp_path / "Other.inter.json").write_text("{}")
    with pytest.raises(DataFormatError, match=r"expected exactly one \*\.inter\.json"):
        load_dataset(data_config(name="amazon_processed", path=str(tmp_path)))
