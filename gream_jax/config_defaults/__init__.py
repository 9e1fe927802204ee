"""Default values for every config section, one module per stage.

`configs/<experiment>.py` files call `base_config()` and override what their
experiment needs. Each section module owns `defaults()` (a ConfigDict) and
`validate(config)` (raises `ConfigError` with the offending field's dotted name).
"""

from gream_jax.config_defaults.base import ConfigError, base_config, validate_config  # noqa: F401
