"""Mesh section: axis sizes (one may be -1 = all remaining devices) and logical-axis rules."""

import jax
import ml_collections

from gream_jax import mesh as mesh_lib


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = -1
    c.fsdp = 1
    c.tensor = 1
    # Sequence of (logical_axis, mesh_axes) pairs; empty = gream_jax.mesh.DEFAULT_RULES.
    c.rules = ()
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    try:
        mesh_lib.resolve_mesh_shape({a: config.mesh.get(a, 1) for a in mesh_lib.MESH_AXES},
                                    jax.device_count())
    except mesh_lib.MeshConfigError as e:
        raise ConfigError(str(e)) from None
    known = {name for name, _ in mesh_lib.DEFAULT_RULES}
    for entry in config.mesh.rules:
        if len(entry) != 2:
            raise ConfigError(f"config.mesh.rules: entry {entry!r} must be (logical_axis, mesh_axes)")
        name, axes = entry
        axes_t = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        for a in axes_t:
            if a not in mesh_lib.MESH_AXES:
                raise ConfigError(f"config.mesh.rules[{name!r}]: unknown mesh axis {a!r}; "
                                  f"known: {mesh_lib.MESH_AXES}")
        if name not in known:
            raise ConfigError(f"config.mesh.rules: unknown logical axis {name!r}; known: {sorted(known)}")
