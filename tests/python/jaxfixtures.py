"""Fixtures written at test time by the real libraries: Flax msgpack files
(flax.serialization.to_bytes) and Equinox files (eqx.tree_serialise_leaves),
and `jaxport_copy`, which sends every tensor of a file jaxport reads through
one of its C writers (the `copy` mode of build/tests/c/test_msgpack)."""

import contextlib
import subprocess
from pathlib import Path

import equinox as eqx
import flax.serialization
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import linen

import jaxport

def cli_tool():
    """The jaxport command built beside the package the tests import."""
    tool = Path(jaxport.__file__).resolve().parents[2] / "cli" / "jaxport"
    assert tool.exists(), f"{tool} is not built"
    return str(tool)


FLOAT_DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
FLOAT8_DTYPES = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


class LinenNet(linen.Module):
    """torch_fixtures.TorchNet in Flax linen."""

    @linen.compact
    def __call__(self, x):
        x = linen.Conv(8, (3, 3), padding=1)(x)
        x = linen.relu(linen.BatchNorm(use_running_average=True)(x))
        return linen.Dense(4)(x.mean(axis=(1, 2)))


def param_tree(seed=0):
    """Nested Flax-style params of every dtype jaxport writes to msgpack:
    keys in a non-sorted order, empty arrays, 0-d arrays, a list of layers."""
    rng = np.random.default_rng(seed)
    tree = {"Dense_1": {}, "Dense_0": {}, "ints": {}, "misc": {}}
    for i, dt in enumerate(FLOAT_DTYPES):
        tree["Dense_1"][f"kernel_{np.dtype(dt).name}"] = rng.standard_normal((3, 4 + i)).astype(dt)
    tree["Dense_0"]["kernel"] = rng.standard_normal((5, 2)).astype(np.float32)
    tree["Dense_0"]["bias"] = np.zeros((2,), np.float32)
    for dt in INT_DTYPES:
        info = np.iinfo(dt)
        tree["ints"][np.dtype(dt).name] = np.array([info.min, info.max, 1], dt)
    for dt in FLOAT8_DTYPES:
        tree["misc"][np.dtype(dt).name] = np.array([0.5, -2], dt)
    tree["misc"]["mask"] = np.array([[True, False]])
    tree["misc"]["c64"] = (rng.standard_normal(3) + 1j).astype(np.complex64)
    tree["misc"]["c128"] = np.array([1 - 2j], np.complex128)
    tree["misc"]["empty"] = np.zeros((0, 3), np.float32)
    tree["misc"]["scalar"] = np.array(7.25, np.float64)
    tree["layers"] = [{"w": np.arange(4, dtype=np.int32).reshape(2, 2)}, {"w": jnp.ones((3,), jnp.bfloat16)}]
    return tree


def leaf_tree():
    """Leaves that are not arrays: numpy scalars, Python numbers, complex,
    strings, None, an empty dict, next to one array."""
    return {
        "w": np.ones((2, 2), np.float32),
        "np_scalar": np.float32(2.5),
        "np_int": np.int16(-3),
        "step": 1000,
        "lr": 0.001,
        "z": 1 + 2j,
        "name": "adam",
        "none": None,
        "empty": {},
    }


@contextlib.contextmanager
def flax_chunk_size(size):
    """flax.serialization.MAX_CHUNK_SIZE set to `size` for a while."""
    old = flax.serialization.MAX_CHUNK_SIZE
    flax.serialization.MAX_CHUNK_SIZE = size
    try:
        yield
    finally:
        flax.serialization.MAX_CHUNK_SIZE = old


def write_flax(path, tree, max_chunk=None):
    """to_bytes(tree) into path; returns the bytes."""
    with flax_chunk_size(max_chunk or flax.serialization.MAX_CHUNK_SIZE):
        data = flax.serialization.to_bytes(tree)
    Path(path).write_bytes(data)
    return data


def mlp(seed=0):
    return eqx.nn.MLP(3, 2, 8, 2, key=jax.random.PRNGKey(seed))


class Net(eqx.Module):
    """A model with state: Linear -> BatchNorm -> Linear."""

    lin1: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    lin2: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.lin1 = eqx.nn.Linear(3, 4, key=k1)
        self.norm = eqx.nn.BatchNorm(4, axis_name="batch", mode="ema")
        self.lin2 = eqx.nn.Linear(4, 2, key=k2)


def model_with_state(seed=0):
    """(model, state) as eqx.nn.make_with_state makes them, the state moved
    off its initial values so a wrong pairing shows."""
    model, state = eqx.nn.make_with_state(Net)(jax.random.PRNGKey(seed))
    state = jax.tree_util.tree_map(lambda x: x + 0.5, state)
    return model, state


def write_eqx(path, tree):
    """eqx.tree_serialise_leaves(path, tree); returns the file's bytes."""
    eqx.tree_serialise_leaves(path, tree)
    return Path(path).read_bytes()


def _copy_tool():
    # The package is build/python/jaxport; the C tests are build/tests/c.
    tool = Path(jaxport.__file__).resolve().parents[2] / "tests" / "c" / "test_msgpack"
    assert tool.exists(), f"{tool} is not built"
    return tool


def jaxport_copy(src, dst, chunk_bytes=None):
    """Every tensor of src, as jaxport reads it, into dst through jaxport's
    writer for dst's extension."""
    args = [str(_copy_tool()), "copy", str(src), str(dst)]
    if chunk_bytes is not None:
        args.append(str(chunk_bytes))
    subprocess.run(args, check=True, capture_output=True, text=True)
    return Path(dst).read_bytes()
