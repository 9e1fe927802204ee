"""Leave-one-out split contract (docs/DESIGN.md `Split`)."""

import numpy as np
import pytest

from gream_jax.data import InteractionData, ItemText, Split, drop_short_users, leave_one_out
from gream_jax.data.events import build_interaction_data


def _data(seqs, n_items=10):
    return InteractionData(name="toy", item_ids=[str(i) for i in range(n_items)],
                           user_ids=[f"u{k}" for k in range(len(seqs))],
                           items=[ItemText() for _ in range(n_items)],
                           sequences=[np.asarray(s, dtype=np.int32) for s in seqs])


def test_targets_and_histories():
    split = leave_one_out(_data([[1, 2, 3, 4, 5, 6], [7, 8, 9]]), max_history=3)
    np.testing.assert_array_equal(split.train[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(split.valid_targets, [5, 8])
    np.testing.assert_array_equal(split.test_targets, [6, 9])
    np.testing.assert_array_equal(split.valid_history(0), [2, 3, 4])
    np.testing.assert_array_equal(split.test_history(0), [3, 4, 5])
    np.testing.assert_array_equal(split.test_history(1), [7, 8])
    hist, lengths = split.histories("valid")
    assert hist.shape == (2, 3) and hist.dtype == np.int32
    np.testing.assert_array_equal(hist, [[2, 3, 4], [-1, -1, 7]])     # left-padded with -1
    np.testing.assert_array_equal(lengths, [3, 1])
    hist, lengths = split.histories("test")
    np.testing.assert_array_equal(hist, [[3, 4, 5], [-1, 7, 8]])
    np.testing.assert_array_equal(split.targets("test"), [6, 9])
    with pytest.raises(ValueError, match="split must be one of"):
        split.histories("train")


def test_short_users_are_refused_then_dropped():
    data = _data([[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    with pytest.raises(ValueError, match=r"1 users have fewer than 3 interactions .*'u1'"):
        leave_one_out(data, 20)
    kept, dropped = drop_short_users(data)
    assert dropped == 1 and kept.user_ids == ["u0", "u2"] and kept.n_items == 10
    split = leave_one_out(kept, 20)
    assert all(len(t) >= 1 for t in split.train)


def test_npz_arrays_round_trip():
    split = leave_one_out(_data([[1, 2, 3, 4], [5, 6, 7]]), max_history=2)
    back = Split.from_arrays(split.to_arrays())
    assert back.max_history == 2
    for a, b in zip(split.train, back.train):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.full_sequence(0), [1, 2, 3, 4])
    arrays = split.to_arrays()
    del arrays["test_targets"]
    with pytest.raises(ValueError, match="missing arrays"):
        Split.from_arrays(arrays, "x/split.npz")


def test_item_counts_are_training_counts_and_load_split_reads_the_npz(tmp_path):
    """Only the training parts count (targets do not); n_items pads the tail; `load_split` reads
    back what run_prepare writes."""
    from gream_jax.data.prepare import load_split
    split = leave_one_out(_data([[1, 2, 1, 4, 9], [5, 1, 7]]), max_history=2)   # train [1, 2, 1], [5]
    np.testing.assert_array_equal(split.item_counts(), [0, 2, 1, 0, 0, 1])
    np.testing.assert_array_equal(split.item_counts(8), [0, 2, 1, 0, 0, 1, 0, 0])
    path = str(tmp_path / "split.npz")
    np.savez(path, **split.to_arrays())
    back = load_split(path)
    np.testing.assert_array_equal(back.test_targets, split.test_targets)
    np.testing.assert_array_equal(back.item_counts(), split.item_counts())
    # The same counts over plain lists (the chain templates' group examples), empty parts skipped.
    from gream_jax.data.split import training_counts
    np.testing.assert_array_equal(training_counts([[1, 2, 1], [], [5]], 7), [0, 2, 1, 0, 0, 1, 0])
    assert training_counts([], 3).tolist() == [0, 0, 0]


def test_stable_sort_and_deterministic_ids():
    # Events out of order; ties (t=5) keep file order; ids sorted numerically ("10" after "9").
    users = ["10", "9", "10", "10", "9", "9"]
    items = ["b", "a", "c", "a", "b", "c"]
    times = np.array([5, 1, 5, 1, 2, 3])
    data = build_interaction_data("toy", users, items, times, {})
    assert data.user_ids == ["9", "10"] and data.item_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(data.sequences[0], [0, 1, 2])
    np.testing.assert_array_equal(data.sequences[1], [0, 1, 2])   # a (t1), then b, c tied at t5
    shuffled = build_interaction_data("toy", users[::-1], items[::-1], times[::-1], {})
    assert shuffled.user_ids == data.user_ids and shuffled.item_ids == data.item_ids
    np.testing.assert_array_equal(shuffled.sequences[1], [0, 2, 1])  # reversed file: c before b
