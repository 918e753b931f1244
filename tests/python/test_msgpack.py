"""Flax msgpack: what flax.serialization writes, jaxport reads, and what
jaxport writes is byte for byte what flax writes and loads with from_bytes."""

import flax.serialization
import jax
import numpy as np
import pytest
from flax.core import FrozenDict

import jaxport
from jaxport import errors, trees
from jaxfixtures import jaxport_copy, leaf_tree, param_tree, write_flax


def _describe(tensors):
    return [(t["name"], t["dtype"], t["shape"]) for t in tensors]


def _expected(tree):
    names, leaves = trees.state_dict_flatten(tree)
    return [(n, np.asarray(x).dtype.name, np.shape(x)) for n, x in zip(names, leaves)]


def test_index_of_flax_params(tmp_path):
    tree = param_tree()
    write_flax(tmp_path / "p.msgpack", tree)
    ix = jaxport.open_index(tmp_path / "p.msgpack")
    assert ix.format == "msgpack"
    assert _describe(ix.tensors()) == _expected(tree)
    assert "Dense_1/kernel_bfloat16" in [t["name"] for t in ix.tensors()]


def test_only_arrays_become_tensors(tmp_path):
    write_flax(tmp_path / "l.msgpack", leaf_tree())
    got = _describe(jaxport.open_index(tmp_path / "l.msgpack").tensors())
    assert got == [("w", "float32", (2, 2)), ("np_scalar", "float32", ()), ("np_int", "int16", ())]


@pytest.mark.parametrize("frozen", [False, True])
def test_written_bytes_equal_flax(tmp_path, frozen):
    tree = param_tree(seed=1)
    want = write_flax(tmp_path / "src.msgpack", FrozenDict(tree) if frozen else tree)
    got = jaxport_copy(tmp_path / "src.msgpack", tmp_path / "out.msgpack")
    assert got == want
    back = flax.serialization.from_bytes(tree, got)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(tree)):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_chunked_arrays(tmp_path):
    """flax splits arrays above MAX_CHUNK_SIZE; with a small limit, small data
    show it: jaxport joins the chunks on reading and splits the same way."""
    tree = param_tree(seed=2)
    tree["big"] = {"table": np.arange(5 * 13, dtype=np.float32).reshape(5, 13)}
    want = write_flax(tmp_path / "c.msgpack", tree, max_chunk=24)
    assert b"__msgpack_chunked_array__" in want
    ix = jaxport.open_index(tmp_path / "c.msgpack")
    assert _describe(ix.tensors()) == _expected(tree)
    assert jaxport_copy(tmp_path / "c.msgpack", tmp_path / "out.msgpack", chunk_bytes=24) == want
    # Without the small limit nothing is chunked, as flax does by default.
    assert jaxport_copy(tmp_path / "c.msgpack", tmp_path / "plain.msgpack") == flax.serialization.to_bytes(tree)
    restored = flax.serialization.msgpack_restore(want)
    np.testing.assert_array_equal(restored["big"]["table"], tree["big"]["table"])


def test_names_pair_with_like(tmp_path):
    """Index names are the paths trees.unflatten pairs with a `like` tree."""
    tree = param_tree(seed=3)
    write_flax(tmp_path / "p.msgpack", tree)
    names = {t["name"] for t in jaxport.open_index(tmp_path / "p.msgpack").tensors()}
    like_names, _ = trees.flatten(tree)
    assert set(like_names) == names


@pytest.mark.parametrize(
    ("cut", "code", "offset"),
    [
        (1, "TRUNCATED", 0),       # the top map's entries are missing
        (30, "TRUNCATED", 25),     # inside Dense_1/kernel_float16's extension
        (-1, "TRUNCATED", None),   # the last array's data cut short
    ],
)
def test_truncated_files(tmp_path, cut, code, offset):
    data = write_flax(tmp_path / "p.msgpack", param_tree())
    (tmp_path / "cut.msgpack").write_bytes(data[:cut])
    with pytest.raises(errors.JaxportError) as info:
        jaxport.open_index(tmp_path / "cut.msgpack")
    assert info.value.code == code
    if offset is not None:
        assert info.value.offset == offset
    assert "cut.msgpack" in str(info.value)
    if cut == 30:
        assert info.value.member == "Dense_1/kernel_float16"


def test_corrupt_array_payload(tmp_path):
    tree = {"a": np.zeros(3, np.float32)}
    data = bytearray(write_flax(tmp_path / "a.msgpack", tree))
    at = data.index(b"float32")
    data[at : at + 7] = b"float33"
    (tmp_path / "bad.msgpack").write_bytes(bytes(data))
    with pytest.raises(errors.DtypeError) as info:
        jaxport.open_index(tmp_path / "bad.msgpack")
    assert info.value.offset == at - 1
    assert info.value.member == "a"
