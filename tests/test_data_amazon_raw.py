"""Amazon 2014 / 2018 raw formats on small hand-written gzip files: parsing, k-core, broken lines."""

import gzip
import json

import numpy as np
import pytest
from data_fixtures import data_config

from gream_jax.data import DataFormatError, load_dataset
from gream_jax.data.events import kcore_mask


def _review_2014(user, asin, t, text="Great product, works as described."):
    return {"reviewerID": user, "asin": asin, "reviewerName": "A. Buyer", "helpful": [0, 0],
            "reviewText": text, "overall": 5.0, "summary": "Five Stars",
            "unixReviewTime": t, "reviewTime": "01 2, 2014"}


def _meta_2014(asin, title):
    # The 2014 meta files are Python literals: single quotes, written with repr().
    return repr({"asin": asin, "title": title, "price": 9.99, "imUrl": "http://x/y.jpg",
                 "related": {"also_bought": ["B000X"]}, "salesRank": {"Beauty": 1000},
                 "categories": [["Beauty", "Makeup", "Nails"], ["Beauty", "Tools"]],
                 "brand": "OPI", "description": "A  nail\npolish."})


def _review_2018(user, asin, t):
    return {"overall": 4.0, "verified": True, "reviewTime": "01 2, 2018", "reviewerID": user,
            "asin": asin, "style": {"Size:": " 1 Pack"}, "reviewerName": "B", "reviewText": "Solid.",
            "summary": "Good", "unixReviewTime": t}


def _meta_2018(asin, title):
    return json.dumps({"category": ["Industrial & Scientific", "Lab Supplies"], "tech1": "",
                       "description": ["Sturdy gloves.", "Pack of 100."], "fit": "", "title": title,
                       "also_buy": [], "brand": "Acme", "feature": [], "rank": "1 in X",
                       "main_cat": "Industrial & Scientific", "date": "", "price": "$5", "asin": asin})


def _write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def _grid_events(users, items, t0=1000):
    """Every user reviews every item, item order rotated per user: a dense core."""
    events = []
    for k, u in enumerate(users):
        for j in range(len(items)):
            events.append((u, items[(j + k) % len(items)], t0 + 86400 * j))
    return events


def _write_2014(tmp_path, events, metas, cat="Beauty"):
    _write_gz(tmp_path / f"reviews_{cat}_5.json.gz", [json.dumps(_review_2014(*e)) for e in events])
    _write_gz(tmp_path / f"meta_{cat}.json.gz", metas)


def test_2014_kcore_meta_and_text(tmp_path):
    core_users = [f"U{k}" for k in range(3)]
    core_items = ["B001", "B002", "B003"]
    events = _grid_events(core_users, core_items)
    events += [("U0", "B009", 5000),          # item with a single review: removed by the 3-core
               ("U0", "B777", 5000),          # item without metadata: dropped before the k-core
               ("U9", "B001", 6000)]          # user with a single review: removed
    metas = [_meta_2014(a, f"Polish {a}") for a in core_items + ["B009"]]
    _write_2014(tmp_path, events, metas)
    data = load_dataset(data_config(name="amazon2014", path=str(tmp_path), file_prefix="Beauty", kcore=3))
    assert data.item_ids == core_items and data.user_ids == core_users
    assert data.n_interactions == 9
    np.testing.assert_array_equal(data.sequences[1], [1, 2, 0])   # U1 starts at B002 (rotated)
    t = data.items[0]
    assert t.title == "Polish B001" and t.brand == "OPI"
    assert t.categories == "Beauty, Makeup, Nails"          # first category path only
    assert t.description == "A nail polish."                  # whitespace collapsed
    assert len(t.reviews) == 3 and t.review_users == core_users
    assert data.name == "amazon2014_Beauty"


def test_2014_ties_keep_file_order_and_duplicates_keep_the_earliest(tmp_path):
    users, items = ["A", "B"], ["X1", "X2", "X3"]
    events = [("A", "X3", 10), ("A", "X1", 10), ("A", "X2", 5), ("A", "X1", 20),   # X1 repeated
              ("B", "X1", 1), ("B", "X2", 2), ("B", "X3", 3)]
    _write_2014(tmp_path, events, [_meta_2014(a, a) for a in items])
    data = load_dataset(data_config(name="amazon2014", path=str(tmp_path), file_prefix="Beauty", kcore=1))
    assert data.user_ids == users
    np.testing.assert_array_equal(data.sequences[0], [1, 2, 0])   # X2 (t5), then X3, X1 tied at t10
    assert data.n_interactions == 6


def test_2018_json_lines(tmp_path):
    users, items = ["AU1", "AU2", "AU3"], ["I1", "I2", "I3"]
    events = _grid_events(users, items)
    cat = "Industrial_and_Scientific"
    _write_gz(tmp_path / f"{cat}_5.json.gz", [json.dumps(_review_2018(*e)) for e in events])
    _write_gz(tmp_path / f"meta_{cat}.json.gz", [_meta_2018(a, f"Gloves {a}") for a in items])
    data = load_dataset(data_config(name="amazon2018", path=str(tmp_path), file_prefix=cat, kcore=3))
    assert (data.n_users, data.n_items, data.n_interactions) == (3, 3, 9)
    t = data.items[2]
    assert t.title == "Gloves I3" and t.categories == "Industrial & Scientific, Lab Supplies"
    assert t.description == "Sturdy gloves. Pack of 100." and t.reviews == ["Solid."] * 3


def test_kcore_is_iterative():
    # Removing user 2 (1 event) leaves item 2 with 1 event, which must then go too.
    users = np.array([0, 0, 1, 1, 2, 3, 3])
    items = np.array([0, 1, 0, 1, 2, 2, 0])
    keep = kcore_mask(users, items, 2)
    np.testing.assert_array_equal(keep, [1, 1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("bad_line,message", [
    ("{'reviewerID': 'U1', 'asin': ", r"reviews_Beauty_5\.json\.gz:2: neither JSON nor a Python literal"),
    ('{"asin": "B001", "unixReviewTime": 5}', r"reviews_Beauty_5\.json\.gz:2: field 'reviewerID' missing"),
    ('{"reviewerID": "U1", "asin": "B001", "unixReviewTime": "soon"}',
     r"reviews_Beauty_5\.json\.gz:2: field 'unixReviewTime' must be an integer"),
    ('{"reviewerID": "U1", "asin": "B001", "unixReviewTime": 1.5}', r":2: field 'unixReviewTime'"),
    ('["U1", "B001"]', r"reviews_Beauty_5\.json\.gz:2: expected an object"),
])
def test_broken_review_lines(tmp_path, bad_line, message):
    good = json.dumps(_review_2014("U0", "B001", 1))
    _write_gz(tmp_path / "reviews_Beauty_5.json.gz", [good, bad_line])
    _write_gz(tmp_path / "meta_Beauty.json.gz", [_meta_2014("B001", "x")])
    with pytest.raises(DataFormatError, match=message):
        load_dataset(data_config(name="amazon2014", path=str(tmp_path), file_prefix="Beauty", kcore=1))


def test_broken_meta_and_missing_files(tmp_path):
    _write_gz(tmp_path / "reviews_Beauty_5.json.gz", [json.dumps(_review_2014("U0", "B001", 1))])
    _write_gz(tmp_path / "meta_Beauty.json.gz", [_meta_2014("B001", "x"), "{'title': 'no asin'}"])
    cfg = data_config(name="amazon2014", path=str(tmp_path), file_prefix="Beauty", kcore=1)
    with pytest.raises(DataFormatError, match=r"meta_Beauty\.json\.gz:2: field 'asin' missing"):
        load_dataset(cfg)
    (tmp_path / "meta_Beauty.json.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"meta_Beauty\.json\.gz: cannot read"):
        load_dataset(cfg)
    (tmp_path / "meta_Beauty.json.gz").unlink()
    with pytest.raises(DataFormatError, match=r"meta_Beauty\.json\.gz: file not found"):
        load_dataset(cfg)


def test_everything_filtered_is_an_error(tmp_path):
    _write_2014(tmp_path, [("U0", "B001", 1)], [_meta_2014("B001", "x")])
    with pytest.raises(DataFormatError, match="nothing left after .* 5-core"):
        load_dataset(data_config(name="amazon2014", path=str(tmp_path), file_prefix="Beauty", kcore=5))
