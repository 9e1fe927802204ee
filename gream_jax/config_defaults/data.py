"""Config section `config.data`: which dataset, where it lives, how it is split."""

import os

import ml_collections

DATASETS = ("ml100k", "amazon_processed", "amazon2014", "amazon2018")


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "ml100k"            # one of DATASETS
    c.path = ""                  # local file/dir of the raw data; "" = dataset's default source
    c.cache_dir = os.path.expanduser("~/.cache/gream_jax")  # downloads (ml100k) land here
    c.file_prefix = ""           # Amazon: e.g. "Beauty" for Beauty.inter.json / reviews_Beauty_5.json.gz
    c.kcore = 5                  # Amazon raw formats: k-core filter on users and items
    c.max_history = 20           # most recent items kept as model input
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    d = config.data
    if d.name not in DATASETS:
        raise ConfigError(f"config.data.name={d.name!r}: unknown dataset; known: {DATASETS}")
    if d.name != "ml100k" and not d.path:
        raise ConfigError(f"config.data.path: required for dataset {d.name!r}")
    if d.path and not os.path.exists(d.path):
        raise ConfigError(f"config.data.path={d.path!r}: no such file or directory")
    if d.max_history < 1:
        raise ConfigError(f"config.data.max_history={d.max_history}: must be >= 1")
