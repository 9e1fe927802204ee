"""grain input pipelines: seeded shuffle, per-process sharding, epochs, batching, resumable state.

Elements are dicts of numpy arrays of a fixed shape (e.g. {"tokens": [seq], "loss_mask": [seq]});
a batch is the same dict with a leading `[batch_per_process, ...]` axis.

Order of operations (all deterministic given `seed`):
  source -> global shuffle (every process computes the same permutation)
         -> drop the last n % process_count elements so every process gets the same count
         -> this process's strided share [process_index::process_count]
         -> repeat for `num_epochs` (each epoch reshuffled with a seed folded with the epoch)
         -> optional per-element transform -> batch (batches may span an epoch boundary).
Because all processes get equally many elements, they take equally many steps (no collective hangs).
The returned iterator supports `get_state()` / `set_state(state)`; restoring a saved state
reproduces the remaining batches exactly (see `save_iterator_state` / `restore_iterator_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grain
import jax
import numpy as np

from gream_jax.utils import io


class ColumnSource(Sequence):
    """Random-access view of a dict of equal-length arrays: element i = {k: v[i]}."""

    def __init__(self, columns: Mapping[str, np.ndarray]):
        lengths = {k: len(v) for k, v in columns.items()}
        if not columns or len(set(lengths.values())) != 1:
            raise ValueError(f"ColumnSource: columns must be non-empty and of equal length, got {lengths}")
        self._columns = {k: np.asarray(v) for k, v in columns.items()}
        self._n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("ColumnSource supports integer indices only")
        return {k: v[i] for k, v in self._columns.items()}


def _process(process_index, process_count) -> tuple[int, int]:
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= pi < pc:
        raise ValueError(f"process_index={pi} must be in [0, process_count={pc})")
    return pi, pc


def per_process_batch_size(batch_size: int, process_count: int) -> int:
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(f"global batch_size={batch_size} must be a positive multiple of the "
                         f"{process_count} JAX processes")
    return batch_size // process_count


def steps_per_epoch(n_elements: int, batch_size: int, process_count: int | None = None) -> int:
    """Full global batches in one epoch. With several epochs, batches run across epoch boundaries,
    so `num_epochs` epochs yield (num_epochs * per-process elements) // local batch batches."""
    pc = jax.process_count() if process_count is None else process_count
    return (n_elements // pc) // per_process_batch_size(batch_size, pc)


def make_dataset(source, *, batch_size: int, seed: int, shuffle: bool = True,
                 num_epochs: int | None = 1, drop_remainder: bool = True,
                 transform: Callable[[dict], dict] | None = None,
                 process_index: int | None = None, process_count: int | None = None) -> grain.MapDataset:
    """MapDataset of this process's batches. `source`: a sequence of dicts or a dict of arrays.

    batch_size is GLOBAL (summed over processes). num_epochs=None repeats forever.
    """
    if isinstance(source, Mapping):
        source = ColumnSource(source)
    n = len(source)
    if n == 0:
        raise ValueError("make_dataset: the source is empty")
    pi, pc = _process(process_index, process_count)
    local_batch = per_process_batch_size(batch_size, pc)
    per_process = n // pc
    if drop_remainder and per_process < local_batch:
        raise ValueError(f"make_dataset: {n} elements give {per_process} per process, fewer than one "
                         f"batch of {local_batch}; lower batch_size or set drop_remainder=False")
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=int(seed))
    ds = ds[:per_process * pc][pi::pc]
    if num_epochs is None or num_epochs > 1:
        ds = ds.repeat(num_epochs)
    if transform is not None:
        ds = ds.map(transform)
    return ds.batch(local_batch, drop_remainder=drop_remainder)


def make_iterator(source, *, batch_size: int, seed: int, num_threads: int = 0,
                  prefetch_buffer_size: int = 16, **kwargs) -> grain.DatasetIterator:
    """Iterator over `make_dataset(...)` with checkpointable state (get_state / set_state).

    num_threads=0 reads in the calling thread, best for in-memory sources (no GIL contention).
    """
    ds = make_dataset(source, batch_size=batch_size, seed=seed, **kwargs)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    return iter(ds.to_iter_dataset(read_options=options))


def save_iterator_state(path: str, iterator: grain.DatasetIterator) -> None:
    """Writes the iterator position atomically as JSON (one file per process: put the index in path)."""
    io.write_json(path, iterator.get_state())


def restore_iterator_state(path: str, iterator: grain.DatasetIterator) -> None:
    iterator.set_state(io.read_json(path))
