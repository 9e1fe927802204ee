"""Atomic model directories and host gathering of sharded weights.

A model directory (export or checkpoint) is written into a temporary sibling and renamed
into place; an existing directory is first renamed aside and deleted only after the new one
is in place, so readers see either the old or the new model, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

import jax
import numpy as np


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def atomic_directory(out_dir: str) -> Iterator[str]:
    """Yields a temporary directory; on success it replaces `out_dir` atomically.

    The temporary name is deterministic so that every process of a multi-host job writes into
    the same directory (orbax saves collectively); process 0 alone creates and renames it."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp")
    if jax.process_index() == 0:
        os.makedirs(parent, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier(f"atomic_directory:start:{out_dir}")
    try:
        yield tmp
        _barrier(f"atomic_directory:written:{out_dir}")
        if jax.process_index() != 0:
            return
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.", suffix=".old")
            os.rmdir(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def to_host(x) -> np.ndarray:
    """Full value of a (possibly sharded, possibly multi-host) array as numpy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
