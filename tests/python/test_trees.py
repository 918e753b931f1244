"""jaxport.trees: named leaves of Flax, NNX, Equinox and Haiku trees, and
trees rebuilt from arrays by name."""

import flax.serialization
import jax
import numpy as np
import pytest
from flax import nnx
from flax.core import FrozenDict

import jaxport
from jaxport import trees
from jaxfixtures import mlp, model_with_state, param_tree, write_flax


def test_flax_and_haiku_names():
    params = {"Dense_0": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}, "layers": [{"w": np.ones(1)}]}
    names, leaves = trees.flatten(params)
    assert names == ["Dense_0/bias", "Dense_0/kernel", "layers/0/w"]  # jax sorts dict keys
    assert trees.flatten(FrozenDict(params))[0] == names
    haiku = {"mlp/~/linear_0": {"w": np.zeros((2, 2)), "b": np.zeros(2)}}
    assert trees.flatten(haiku)[0] == ["mlp/~/linear_0/b", "mlp/~/linear_0/w"]


def test_state_dict_order_is_what_to_bytes_writes(tmp_path):
    """Flax writes dict keys in insertion order (kernel before bias); the
    msgpack reader keeps file order; state_dict_flatten gives the same."""
    tree = param_tree()
    write_flax(tmp_path / "p.msgpack", tree)
    file_order = [t["name"] for t in jaxport.open_index(tmp_path / "p.msgpack").tensors()]
    names, _ = trees.state_dict_flatten(FrozenDict(tree))
    assert names == file_order
    assert names != sorted(names)


def test_nnx_state_names_and_rebuild():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    names, leaves = trees.flatten(state)
    assert names == ["bias", "kernel"]
    assert trees.state_dict_flatten(state)[0] == ["bias", "kernel"]
    new = trees.unflatten(state, {"bias": np.full(3, 2.0, np.float32), "kernel": np.ones((2, 3), np.float32)})
    nnx.update(model, new)
    np.testing.assert_array_equal(np.asarray(model.bias.get_value()), np.full(3, 2.0))
    assert isinstance(new["kernel"], nnx.Param)


def test_equinox_names_and_rebuild():
    model, state = model_with_state()
    names, leaves = trees.flatten((model, state))
    assert names[:2] == ["0/lin1/weight", "0/lin1/bias"]
    arrays = {n: np.asarray(x) + 1 if isinstance(x, jax.Array) else x for n, x in zip(names, leaves)}
    rebuilt = trees.unflatten((model, state), arrays)
    np.testing.assert_array_equal(np.asarray(rebuilt[0].lin1.weight), np.asarray(model.lin1.weight) + 1)
    eqx_names, _ = trees.eqx_flatten(mlp())
    assert eqx_names[:2] == ["layers/0/weight", "layers/0/bias"]


def test_unflatten_names_missing_leaves():
    with pytest.raises(KeyError, match="2 leaves of `like` are not in the file: a/x, b"):
        trees.unflatten({"a": {"x": 1}, "b": 2, "c": 3}, {"c": 4})


def test_load_flax_file_into_like(tmp_path):
    """Arrays named as the reader names them rebuild the tree flax saved."""
    tree = param_tree(seed=7)
    data = write_flax(tmp_path / "p.msgpack", tree)
    restored = flax.serialization.msgpack_restore(data)
    names, leaves = trees.state_dict_flatten(restored)
    rebuilt = trees.unflatten(tree, dict(zip(names, leaves)))
    for a, b in zip(jax.tree_util.tree_leaves(rebuilt), jax.tree_util.tree_leaves(tree)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
