"""Shared helpers for the data tests (not a test module).

`ml100k_cache_dir` gives a cache dir holding the recbole 1.2.1 wheel: copied from a local
pre-download when one exists (/tmp/recbole_dl, or $GREAM_RECBOLE_WHEEL_DIR), else fetched once
with pip (what a clean CI machine does).
"""

import os
import shutil

import ml_collections

from gream_jax.config_defaults import base_config
from gream_jax.data import movielens

LOCAL_WHEEL_DIRS = (os.environ.get("GREAM_RECBOLE_WHEEL_DIR", ""), "/tmp/recbole_dl")


def ml100k_cache_dir(tmp_path_factory) -> str:
    cache = os.path.join(str(tmp_path_factory.getbasetemp()), "ml100k_cache")
    wheel = os.path.join(cache, movielens.RECBOLE_WHEEL)
    if os.path.isfile(wheel):
        return cache
    os.makedirs(cache, exist_ok=True)
    for d in LOCAL_WHEEL_DIRS:
        src = os.path.join(d, movielens.RECBOLE_WHEEL) if d else ""
        if src and os.path.isfile(src) and movielens.sha256_file(src) == movielens.RECBOLE_WHEEL_SHA256:
            shutil.copy(src, wheel)
            return cache
    movielens.pip_download_recbole(cache)
    return cache


def data_config(**fields) -> ml_collections.ConfigDict:
    """A full base config with `config.data` fields overridden."""
    config = base_config()
    config.data.download_timeout_s = 0.0
    for k, v in fields.items():
        config.data[k] = v
    return config
