"""Device mesh and logical-axis sharding, declared once for every stage.

Model, trainer and decoder code names array dimensions with *logical* axes
(`batch`, `embed`, `heads`, ...). One rules table in the config (`config.mesh.rules`)
maps each logical axis to zero or more mesh axes (`data`, `fsdp`, `tensor`).
Nothing outside this module decides placement, so changing a parallelism strategy
is a config edit, not a code edit (the MaxText pattern).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. `None` replicates. Data-parallel batch is split over
# data and fsdp; weights are split over fsdp (ZeRO-3 style) and tensor (Megatron).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("items", ("data", "fsdp")),
    ("features", None),
    ("codes", None),
    ("cache_length", None),
    ("lora_rank", None),
)


class MeshConfigError(ValueError):
    """A mesh shape that cannot be built on the available devices."""


def resolve_mesh_shape(shape: dict[str, int], n_devices: int) -> tuple[int, ...]:
    """Returns (data, fsdp, tensor) sizes, filling one -1 so the product is n_devices."""
    unknown = [a for a in MESH_AXES if int(shape.get(a, 1)) == -1]
    if len(unknown) > 1:
        raise MeshConfigError(f"config.mesh: at most one axis may be -1, got {unknown}")
    sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise MeshConfigError(f"config.mesh.{a}={s}: axis sizes must be positive or -1")
    known = math.prod(s for s in sizes.values() if s != -1)
    if unknown:
        if n_devices % known:
            raise MeshConfigError(
                f"config.mesh: fixed axes {sizes} multiply to {known}, which does not divide "
                f"the {n_devices} available devices")
        sizes[unknown[0]] = n_devices // known
    if math.prod(sizes.values()) != n_devices:
        raise MeshConfigError(
            f"config.mesh: shape data={sizes['data']} fsdp={sizes['fsdp']} tensor={sizes['tensor']} "
            f"needs {math.prod(sizes.values())} devices but {n_devices} are available")
    return tuple(sizes[a] for a in MESH_AXES)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ('data', 'fsdp', 'tensor') mesh from `config.mesh`."""
    devices = list(devices if devices is not None else jax.devices())
    shape = resolve_mesh_shape(
        {a: mesh_config.get(a, 1) for a in MESH_AXES}, len(devices))
    try:
        device_array = jax.experimental.mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # Non-TPU/odd topologies: fall back to a plain reshape.
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def rules_from_config(mesh_config) -> tuple[tuple[str, Any], ...]:
    rules = mesh_config.get("rules", None)
    if not rules:
        return DEFAULT_RULES
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


def logical_to_spec(logical_axes: Sequence[str | None], rules=DEFAULT_RULES,
                    mesh: Mesh | None = None) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec; each mesh axis is used at most once.

    Mesh axes of size 1 are dropped, so specs stay readable and identical across
    meshes that differ only in trivial axes.
    """
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in logical_axes:
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(table)}")
        axes = table[name]
        if axes is None:
            out.append(None)
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        keep = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape[a] > 1))
        used.update(keep)
        out.append(None if not keep else keep[0] if len(keep) == 1 else keep)
    return PartitionSpec(*out)


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None], rules=DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes, rules, mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
    """Sharding for a `[batch, ...]` array: batch split over the data-parallel axes."""
    return logical_sharding(mesh, ("batch",) + (None,) * (ndim - 1), rules)


def data_parallel_size(mesh: Mesh, rules=DEFAULT_RULES) -> int:
    spec = logical_to_spec(("batch",), rules, mesh)[0]
    if spec is None:
        return 1
    axes = (spec,) if isinstance(spec, str) else spec
    return math.prod(mesh.shape[a] for a in axes)


def _int_env(environ, name: str, default: int = 0) -> int:
    try:
        return int(environ.get(name, default))
    except ValueError:
        raise MeshConfigError(f"environment variable {name}={environ.get(name)!r} is not an integer") from None


def _has_tpu_chips() -> bool:
    """True on a Cloud TPU VM (TPU chips on the PCI bus); cheap and does not start a backend."""
    try:
        from jax._src import hardware_utils  # private, so guarded: only a fast path for TPU VMs
        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except Exception:
        return False


def distributed_launch(environ=None, has_tpu_chips=None) -> tuple[str, dict] | None:
    """Decides how (and whether) this process joins a multi-process JAX job.

    Pure function of the environment so that every launcher path is testable. Returns
    None for a single process, else (kind, kwargs for `jax.distributed.initialize`):
      - "explicit": JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID), as set by
        `launch/slurm_gpu.sh` or by hand; all three given means no auto-detection at all.
      - "slurm": inside an `srun` step with more than one task (SLURM_STEP_NUM_TASKS > 1).
        A plain `sbatch` batch script (SLURM_NTASKS > 1 but a single process) is NOT
        multi-process, which is why SLURM_NTASKS alone is not trusted (it would hang).
      - "ompi": mpirun with more than one rank.
      - "tpu": a Cloud TPU VM (GCE pod slice via `gcloud ... ssh --worker=all`, whose
        topology lives in the metadata server, not in env vars) or GKE TPU
        (TPU_WORKER_HOSTNAMES). Initialising on a single-host TPU VM is harmless.
    GREAM_DISTRIBUTED=0 forces single-process; GREAM_DISTRIBUTED=1 forces auto-detection.
    """
    environ = os.environ if environ is None else environ
    force = environ.get("GREAM_DISTRIBUTED", "").strip().lower()
    if force in ("0", "false", "no", "off"):
        return None
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs = {"coordinator_address": environ["JAX_COORDINATOR_ADDRESS"]}
        if environ.get("JAX_NUM_PROCESSES") is not None or environ.get("JAX_PROCESS_ID") is not None:
            if environ.get("JAX_NUM_PROCESSES") is None or environ.get("JAX_PROCESS_ID") is None:
                raise MeshConfigError("set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (or neither) "
                                      "together with JAX_COORDINATOR_ADDRESS")
            kwargs["num_processes"] = _int_env(environ, "JAX_NUM_PROCESSES")
            kwargs["process_id"] = _int_env(environ, "JAX_PROCESS_ID")
            if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
                raise MeshConfigError(f"JAX_PROCESS_ID={kwargs['process_id']} is outside "
                                      f"[0, JAX_NUM_PROCESSES={kwargs['num_processes']})")
        return "explicit", kwargs
    if _int_env(environ, "SLURM_STEP_NUM_TASKS", 1) > 1:
        return "slurm", {}
    if _int_env(environ, "OMPI_COMM_WORLD_SIZE", 1) > 1:
        return "ompi", {}
    tpu_hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    if tpu_hosts.count(",") > 0:
        return "tpu", {}
    if force in ("1", "true", "yes", "on"):
        return "auto", {}
    if environ.get("TPU_SKIP_MDS_QUERY") is None and environ.get("JAX_PLATFORMS", "") in ("", "tpu"):
        if has_tpu_chips is None:
            has_tpu_chips = _has_tpu_chips()
        if has_tpu_chips:
            return "tpu", {}
    return None


def maybe_initialize_distributed() -> str | None:
    """Calls `jax.distributed.initialize()` when launched as one of several processes.

    Must run before anything touches a JAX backend (gream_jax.main calls it first).
    Harmless single-host; see `distributed_launch` for what is detected. Returns the kind.
    """
    if getattr(maybe_initialize_distributed, "_done", False):
        return getattr(maybe_initialize_distributed, "_kind", None)
    launch = distributed_launch()
    kind = None
    if launch is not None:
        kind, kwargs = launch
        jax.distributed.initialize(**kwargs)
    maybe_initialize_distributed._done = True
    maybe_initialize_distributed._kind = kind
    return kind
