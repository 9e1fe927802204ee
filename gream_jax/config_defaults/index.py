"""Config section `config.index`: defaults and validation."""

import ml_collections


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError  # noqa: F401
