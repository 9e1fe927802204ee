import jax
import pytest
from jax.sharding import PartitionSpec as P

from gream_jax import mesh as mesh_lib


def test_eight_fake_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("shape,expected", [
    ({"data": -1, "fsdp": 1, "tensor": 1}, (8, 1, 1)),
    ({"data": 2, "fsdp": -1, "tensor": 2}, (2, 2, 2)),
    ({"data": 1, "fsdp": 1, "tensor": 8}, (1, 1, 8)),
])
def test_resolve_mesh_shape(shape, expected):
    assert mesh_lib.resolve_mesh_shape(shape, 8) == expected


@pytest.mark.parametrize("shape,message", [
    ({"data": 3, "fsdp": 1, "tensor": 1}, "needs 3 devices but 8"),
    ({"data": -1, "fsdp": -1, "tensor": 1}, "at most one axis"),
    ({"data": -1, "fsdp": 3, "tensor": 1}, "does not divide"),
    ({"data": 0, "fsdp": 1, "tensor": 1}, "positive"),
])
def test_impossible_mesh_shapes(shape, message):
    with pytest.raises(mesh_lib.MeshConfigError, match=message):
        mesh_lib.resolve_mesh_shape(shape, 8)


def test_logical_rules_drop_trivial_axes_and_never_reuse_an_axis():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    assert mesh_lib.logical_to_spec(("batch", "length"), mesh=mesh) == P(("data", "fsdp"), None)
    assert mesh_lib.logical_to_spec(("embed", "mlp"), mesh=mesh) == P("fsdp", None)
    # batch takes data+fsdp; embed would also want fsdp and must not get it twice.
    assert mesh_lib.logical_to_spec(("batch", "embed"), mesh=mesh) == P(("data", "fsdp"), None)
    assert mesh_lib.data_parallel_size(mesh) == 8
    with pytest.raises(KeyError, match="no sharding rule"):
        mesh_lib.logical_to_spec(("nonsense",))
