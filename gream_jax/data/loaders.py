"""`load_dataset(config)`: one entry point that dispatches on `config.data.name`."""

from __future__ import annotations

from gream_jax.data.types import InteractionData


def load_dataset(config) -> InteractionData:
    """Loads the dataset named by `config.data.name` (see config_defaults/data.py for the fields)."""
    d = config.data
    if d.name == "ml100k":
        from gream_jax.data.movielens import load_movielens_100k
        return load_movielens_100k(d)
    if d.name == "amazon_processed":
        from gream_jax.data.amazon_processed import load_amazon_processed
        return load_amazon_processed(d)
    if d.name in ("amazon2014", "amazon2018"):
        from gream_jax.data.amazon_raw import load_amazon_raw
        return load_amazon_raw(d, d.name)
    raise ValueError(f"config.data.name={d.name!r}: unknown dataset")
