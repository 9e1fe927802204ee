"""Logical-axis placement for model weights, activations and the KV cache.

Every weight and activation carries logical axis names (`embed`, `heads`, ...). The mesh
rules in `gream_jax/mesh.py` turn them into PartitionSpecs; this module only adds two
model-specific details:

* `constrain` applies `with_sharding_constraint` to an activation when a mesh is active
  (`jax.set_mesh(mesh)` around the jitted call); with no mesh set, placement simply follows
  the inputs (GSPMD propagation), so the same model code runs on one device unchanged.
* `fit_spec` drops a mesh axis from a dimension it does not divide (e.g. 2 kv heads on a
  tensor axis of 8): such a dimension is replicated instead of failing at `device_put`.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gream_jax import mesh as mesh_lib


def _active_mesh():
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return None
    if not set(mesh.axis_names) >= set(mesh_lib.MESH_AXES):
        return None
    return mesh


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules) -> jax.Array:
    """Sharding constraint on activation `x` from its logical axes (no-op without a mesh)."""
    mesh = _active_mesh()
    if mesh is None:
        return x
    spec = fit_spec(mesh_lib.logical_to_spec(logical_axes, rules, mesh), x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh) -> PartitionSpec:
    """Keeps, per dimension, the longest prefix of mesh axes whose product divides it."""
    out = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if entry is None:
            out.append(None)
            continue
        axes = (entry,) if isinstance(entry, str) else tuple(entry)
        keep = []
        for a in axes:
            if dim % (math.prod(mesh.shape[k] for k in keep) * mesh.shape[a]) == 0:
                keep.append(a)
            else:
                break
        out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    return PartitionSpec(*out)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None], shape: Sequence[int],
                   rules) -> NamedSharding:
    spec = mesh_lib.logical_to_spec(logical_axes, rules, mesh)
    return NamedSharding(mesh, fit_spec(spec, shape, mesh))
