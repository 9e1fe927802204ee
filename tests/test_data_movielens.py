"""MovieLens-100k loader: the real data (via the recbole wheel) and deliberately broken files."""

import os
import shutil
import zipfile

import numpy as np
import pytest
from data_fixtures import data_config, ml100k_cache_dir

from gream_jax.data import DataFormatError, load_dataset, movielens


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    cache = ml100k_cache_dir(tmp_path_factory)
    return load_dataset(data_config(name="ml100k", cache_dir=cache)), cache


def test_real_counts_and_texts(ml100k):
    data, cache = ml100k
    assert (data.n_users, data.n_items, data.n_interactions) == (943, 1682, 100000)
    # The wheel was extracted into the cache and verified.
    assert os.path.isfile(os.path.join(cache, "ml-100k", "ml-100k.inter"))
    assert data.item_ids[:3] == ["1", "2", "3"] and data.user_ids[-1] == "943"
    toy = data.items[0]
    assert toy.title == "Toy Story"
    assert toy.categories == "Animation, Children's, Comedy"
    assert toy.description == "Released in 1995."
    # Item 267 is "unknown" in the source (spelt "unkonwn" by RecBole): empty, not a fake title.
    assert data.items[266].title == "" and data.items[266].categories == ""
    assert min(len(s) for s in data.sequences) == 20


def test_real_sequences_are_stably_sorted_by_timestamp(ml100k):
    data, cache = ml100k
    with open(os.path.join(cache, "ml-100k", "ml-100k.inter")) as f:
        rows = [line.split("\t") for line in f.read().splitlines()[1:]]
    user = "196"
    events = [(int(r[3]), pos, r[1]) for pos, r in enumerate(rows) if r[0] == user]
    expected = [int(item) - 1 for _, _, item in sorted(events)]   # timestamp, then file position
    u = data.user_ids.index(user)
    np.testing.assert_array_equal(data.sequences[u], expected)
    assert data.sequences[u].dtype == np.int32


def test_cached_copy_is_used_and_a_corrupt_cache_is_refused(ml100k, tmp_path):
    _, cache = ml100k
    copy = tmp_path / "cache"
    shutil.copytree(os.path.join(cache, "ml-100k"), copy / "ml-100k")
    # No wheel in this cache: it must read the extracted files, never download.
    data = load_dataset(data_config(cache_dir=str(copy)))
    assert data.n_interactions == 100000
    with open(copy / "ml-100k" / "ml-100k.item", "a") as f:
        f.write("9999\tExtra\t2000\tDrama\n")
    with pytest.raises(DataFormatError, match=r"ml-100k\.item: sha256 .* does not match"):
        load_dataset(data_config(cache_dir=str(copy)))


def test_path_may_be_the_wheel_or_its_folder(ml100k):
    _, cache = ml100k
    wheel = os.path.join(cache, movielens.RECBOLE_WHEEL)
    assert load_dataset(data_config(path=wheel)).n_users == 943
    assert load_dataset(data_config(path=cache)).n_items == 1682


def test_wrong_wheel_is_refused(tmp_path):
    fake = tmp_path / movielens.RECBOLE_WHEEL
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", "x")
    with pytest.raises(DataFormatError, match="sha256"):
        load_dataset(data_config(path=str(fake)))


GROUPLENS_ITEMS = [
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
    "3|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
]


def _grouplens_dir(tmp_path, data_lines, item_lines=GROUPLENS_ITEMS):
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.data").write_text("\n".join(data_lines) + "\n", encoding="latin-1")
    (d / "u.item").write_text("\n".join(item_lines) + "\n", encoding="latin-1")
    return d


def test_grouplens_folder_and_ties_keep_file_order(tmp_path):
    lines = ["7\t2\t4\t100", "7\t1\t5\t100", "7\t3\t5\t50", "8\t1\t3\t10"]
    d = _grouplens_dir(tmp_path, lines)
    data = load_dataset(data_config(path=str(tmp_path)))   # parent folder with ml-100k/ inside
    assert data.user_ids == ["7", "8"] and data.item_ids == ["1", "2", "3"]
    # user 7: item 3 (t=50), then items 2 and 1 tied at t=100 in file order.
    np.testing.assert_array_equal(data.sequences[0], [2, 1, 0])
    assert data.items[1].title == "GoldenEye" and data.items[1].categories == "Action, Adventure, Thriller"
    assert data.items[2].title == "" and data.items[2].description == ""
    assert load_dataset(data_config(path=str(d))).n_interactions == 4


@pytest.mark.parametrize("lines,message", [
    (["7\t2\t4\tlater"], r"u\.data:1: timestamp 'later' is not an integer"),
    (["7\t2\t4\t100", "7\t2\t100"], r"u\.data:2: expected 4"),
    (["7\t9\t4\t100"], r"u\.item: 1 rated item ids have no entry"),
    ([""], r"u\.data: no interactions"),
])
def test_broken_grouplens_files(tmp_path, lines, message):
    _grouplens_dir(tmp_path, lines)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(data_config(path=str(tmp_path)))


def test_broken_grouplens_item_line(tmp_path):
    _grouplens_dir(tmp_path, ["7\t1\t4\t100"], GROUPLENS_ITEMS[:1] + ["2|GoldenEye (1995)|x"])
    with pytest.raises(DataFormatError, match=r"u\.item:2: expected 24"):
        load_dataset(data_config(path=str(tmp_path)))


def test_broken_recbole_files(tmp_path):
    (tmp_path / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                            "1\t1\t3\t1.5\n")
    (tmp_path / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\t"
                                           "class:token_seq\n1\tToy Story\t1995\tComedy\n")
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter:2: timestamp '1\.5' is not an integer"):
        load_dataset(data_config(path=str(tmp_path)))
    (tmp_path / "ml-100k.inter").write_text("user\titem\n1\t1\n")
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter:1: unexpected header"):
        load_dataset(data_config(path=str(tmp_path)))


def test_grouplens_zip_must_match_the_pinned_checksum(tmp_path):
    z = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("ml-100k/u.data", "1\t1\t1\t1\n")
    with pytest.raises(DataFormatError, match=r"ml-100k\.zip: sha256"):
        load_dataset(data_config(path=str(z)))


def test_unknown_path_layout(tmp_path):
    with pytest.raises(DataFormatError, match="not a MovieLens-100k source"):
        load_dataset(data_config(path=str(tmp_path)))


def test_integer_timestamps_differ_from_recbole_float32_order_as_documented(ml100k):
    """baselines.md: RecBole's float32 min-max timestamps move 5 valid and 4 test targets."""
    data, cache = ml100k
    with open(os.path.join(cache, "ml-100k", "ml-100k.inter")) as f:
        rows = np.array([line.split("\t") for line in f.read().splitlines()[1:]])
    users, items, t = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 3].astype(np.int64)
    t32 = ((t - t.min()) / (t.max() - t.min())).astype(np.float32)
    order = np.lexsort((np.arange(len(t)), t32, users))
    bounds = np.searchsorted(users[order], np.arange(1, 945))
    seqs = np.split(items[order] - 1, bounds[1:-1])
    valid_diff = sum(s[-2] != ours[-2] for s, ours in zip(seqs, data.sequences))
    test_diff = sum(s[-1] != ours[-1] for s, ours in zip(seqs, data.sequences))
    assert (valid_diff, test_diff) == (5, 4)
