"""Equinox .eqx: what eqx.tree_serialise_leaves writes, jaxport reads, and
what jaxport writes is byte for byte Equinox's file and loads with
tree_deserialise_leaves, a model's eqx.nn.State included."""

import equinox as eqx
import flax.serialization
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxport
from jaxport import errors, trees
from jaxfixtures import jaxport_copy, mlp, model_with_state, write_eqx, write_flax


def _expected(tree):
    _, leaves = trees.eqx_flatten(tree)
    return [(str(i), np.asarray(x).dtype.name, np.shape(x)) for i, x in enumerate(leaves)]


def _describe(path):
    ix = jaxport.open_index(path)
    assert ix.format == "eqx"
    return [(t["name"], t["dtype"], t["shape"]) for t in ix.tensors()]


def _records_as_msgpack(tmp_path, tree):
    """The leaves Equinox saves, as a flax msgpack file keyed "0", "1", ...,
    each leaf as the numpy array numpy.save would write."""
    _, leaves = trees.eqx_flatten(tree)
    return write_flax(tmp_path / "leaves.msgpack", {str(i): np.asarray(x) for i, x in enumerate(leaves)})


def _assert_same_tree(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert type(x) is type(y)
        if isinstance(x, jax.Array | np.ndarray):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            assert x == y


def test_index_of_mlp(tmp_path):
    model = mlp()
    write_eqx(tmp_path / "m.eqx", model)
    assert _describe(tmp_path / "m.eqx") == _expected(model)


def test_index_of_model_with_state(tmp_path):
    model, state = model_with_state()
    write_eqx(tmp_path / "s.eqx", (model, state))
    got = _describe(tmp_path / "s.eqx")
    assert got == _expected((model, state))
    # Python scalars (BatchNorm's `inference` flag) are 0-d records too.
    assert ("bool", ()) in [(d, s) for _, d, s in got]


def test_scalars_and_bfloat16(tmp_path):
    tree = (jnp.ones((2, 3), jnp.bfloat16), 3, 2.5, True, 1j, np.float32(4), "skipped", np.arange(3))
    write_eqx(tmp_path / "t.eqx", tree)
    got = _describe(tmp_path / "t.eqx")
    assert [d for _, d, _ in got] == ["bfloat16", "int64", "float64", "bool", "complex128", "float32", "int64"]


@pytest.mark.parametrize("which", ["mlp", "state"])
def test_written_bytes_equal_equinox(tmp_path, which):
    tree = mlp(seed=4) if which == "mlp" else model_with_state(seed=5)
    want = write_eqx(tmp_path / "want.eqx", tree)
    # eqx -> eqx and msgpack -> eqx both give Equinox's bytes.
    assert jaxport_copy(tmp_path / "want.eqx", tmp_path / "copy.eqx") == want
    _records_as_msgpack(tmp_path, tree)
    assert jaxport_copy(tmp_path / "leaves.msgpack", tmp_path / "out.eqx") == want
    back = eqx.tree_deserialise_leaves(tmp_path / "out.eqx", tree)
    _assert_same_tree(back, tree)


def test_read_data_through_flax(tmp_path):
    """Records read by jaxport, written as msgpack, restored by flax: the
    leaves Equinox saved, and eqx_unflatten rebuilds the model with them."""
    model, state = model_with_state(seed=6)
    write_eqx(tmp_path / "s.eqx", (model, state))
    restored = flax.serialization.msgpack_restore(jaxport_copy(tmp_path / "s.eqx", tmp_path / "s.msgpack"))
    arrays = [restored[str(i)] for i in range(len(restored))]
    rebuilt = trees.eqx_unflatten((model, state), arrays)
    _assert_same_tree(rebuilt, (model, state))


def test_eqx_unflatten_types():
    like = (jnp.zeros(2), np.zeros(2, np.float32), 0, 0.0, False, ml_dtypes.bfloat16(0), "keep", jax.ShapeDtypeStruct((1,), jnp.float32))
    arrays = [np.ones(2, np.float32), np.ones(2, np.float32), np.array(3), np.array(1.5), np.array(True),
              np.array(2, ml_dtypes.bfloat16), np.ones(1, np.float32)]
    out = trees.eqx_unflatten(like, arrays)
    assert [type(x) for x in out[2:7]] == [int, float, bool, ml_dtypes.bfloat16, str]
    assert isinstance(out[0], jax.Array) and isinstance(out[7], jax.Array) and type(out[1]) is np.ndarray
    assert out[2:7] == (3, 1.5, True, ml_dtypes.bfloat16(2), "keep")
    with pytest.raises(ValueError, match="7 array leaves but the file holds 6"):
        trees.eqx_unflatten(like, arrays[:6])


def test_truncated_record(tmp_path):
    data = write_eqx(tmp_path / "m.eqx", mlp())
    (tmp_path / "cut.eqx").write_bytes(data[:-3])
    with pytest.raises(errors.TruncatedError) as info:
        jaxport.open_index(tmp_path / "cut.eqx")
    last = len(_expected(mlp())) - 1
    assert info.value.member == str(last)
    assert info.value.offset == data.rindex(b"\x93NUMPY") + 128  # the last record's data
