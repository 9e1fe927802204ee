"""grain pipeline helpers: determinism, per-process sharding, epochs, resumable iterator state."""

import numpy as np
import pytest

from gream_jax.data import pipeline


def _source(n=23):
    return [{"tokens": np.arange(4, dtype=np.int32) + i, "id": np.int32(i)} for i in range(n)]


def _ids(batches):
    return [b["id"].tolist() for b in batches]


def test_batches_are_dicts_of_stacked_arrays_and_deterministic():
    it = pipeline.make_iterator(_source(), batch_size=4, seed=3)
    batches = list(it)
    assert len(batches) == 5 == pipeline.steps_per_epoch(23, 4, process_count=1)
    assert batches[0]["tokens"].shape == (4, 4) and batches[0]["tokens"].dtype == np.int32
    np.testing.assert_array_equal(batches[0]["tokens"][:, 0], batches[0]["id"])
    again = _ids(pipeline.make_iterator(_source(), batch_size=4, seed=3))
    assert _ids(batches) == again
    assert _ids(pipeline.make_iterator(_source(), batch_size=4, seed=4)) != again
    flat = sum(again, [])
    assert len(set(flat)) == 20          # one epoch: no element twice, remainder dropped


def test_epochs_are_reshuffled_and_complete():
    ids = _ids(pipeline.make_iterator({"id": np.arange(12)}, batch_size=4, seed=0, num_epochs=3))
    assert len(ids) == 9
    epochs = [sorted(sum(ids[3 * e:3 * e + 3], [])) for e in range(3)]
    assert all(e == list(range(12)) for e in epochs)
    assert ids[:3] != ids[3:6]


def test_processes_get_disjoint_equal_shares():
    shares = [sum(_ids(pipeline.make_iterator(_source(), batch_size=4, seed=1, process_index=p,
                                             process_count=2)), []) for p in range(2)]
    assert len(shares[0]) == len(shares[1]) == 10     # local batch 2, 11 elements each -> 5 batches
    assert not set(shares[0]) & set(shares[1])
    with pytest.raises(ValueError, match="multiple of the 2 JAX processes"):
        pipeline.make_dataset(_source(), batch_size=3, seed=0, process_index=0, process_count=2)


def test_restoring_state_mid_epoch_reproduces_the_rest():
    kwargs = dict(batch_size=4, seed=7, num_epochs=2)
    it = pipeline.make_iterator(_source(), **kwargs)
    for _ in range(3):
        next(it)
    state = it.get_state()
    rest = _ids(it)
    fresh = pipeline.make_iterator(_source(), **kwargs)
    fresh.set_state(state)
    assert _ids(fresh) == rest and len(rest) == 46 // 4 - 3   # batches span the epoch boundary


def test_state_file_round_trip(tmp_path):
    it = pipeline.make_iterator({"id": np.arange(40)}, batch_size=4, seed=2, num_epochs=None)
    next(it), next(it)
    pipeline.save_iterator_state(str(tmp_path / "state_0.json"), it)
    expected = [next(it)["id"].tolist() for _ in range(12)]     # crosses into epoch 2
    other = pipeline.make_iterator({"id": np.arange(40)}, batch_size=4, seed=2, num_epochs=None)
    pipeline.restore_iterator_state(str(tmp_path / "state_0.json"), other)
    assert [next(other)["id"].tolist() for _ in range(12)] == expected


def test_bad_inputs():
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.make_dataset(_source(3), batch_size=4, seed=0)
    with pytest.raises(ValueError, match="source is empty"):
        pipeline.make_dataset([], batch_size=1, seed=0)
    with pytest.raises(ValueError, match="equal length"):
        pipeline.ColumnSource({"a": np.arange(3), "b": np.arange(4)})
