"""Top-level config assembly and validation."""

from __future__ import annotations

import importlib

import ml_collections

STAGES = ("prepare", "index", "sft", "rl", "eval", "export", "all")
# section name -> module under gream_jax.config_defaults providing defaults()/validate().
SECTIONS = {
    "mesh": "mesh",
    "data": "data",
    "index": "index",
    "model": "model",
    "tasks": "tasks",
    "train": "train",
    "rl": "rl",
    "eval": "eval",
}


class ConfigError(ValueError):
    """A config that cannot run; the message names the field (e.g. `config.mesh.tensor`)."""


def _section(name: str):
    return importlib.import_module(f"gream_jax.config_defaults.{SECTIONS[name]}")


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.stage = "all"
    # Human-readable experiment name, used in logs and results tables.
    config.name = "unnamed"
    for name in SECTIONS:
        config[name] = _section(name).defaults()
    return config


def validate_config(config) -> None:
    """Checks the whole config before any work starts; raises ConfigError naming the field."""
    if config.stage not in STAGES:
        raise ConfigError(f"config.stage={config.stage!r}: must be one of {STAGES}")
    if not isinstance(config.seed, int) or config.seed < 0:
        raise ConfigError(f"config.seed={config.seed!r}: must be a non-negative int")
    for name in SECTIONS:
        if name not in config:
            raise ConfigError(f"config.{name}: section missing")
        _section(name).validate(config)
