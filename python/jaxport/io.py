"""Loading checkpoints as numpy arrays that view the file without copying it,
and saving pytrees of arrays in every format jaxport writes."""

import functools
import os
from collections.abc import Mapping

import numpy as np

from . import _core

try:
    import ml_dtypes
except ImportError:  # bfloat16, float8 and complex32 tensors then raise DtypeError
    ml_dtypes = None


@functools.cache
def numpy_dtypes():
    """numpy dtypes by jaxport's numpy name; ml_dtypes supplies bfloat16,
    the float8 kinds and complex32. Names numpy cannot express are left out."""
    table = {}
    for name in _core.dtype_names:
        kind = getattr(ml_dtypes, name, None)
        try:
            table[name] = np.dtype(kind if kind is not None else name)
        except TypeError:
            pass
    return table


def load(path, *, allow_unsafe=False):
    """Read every tensor of a checkpoint as a read-only numpy array.

    The arrays view the file's mapping (tensors that had to be inflated or
    byte-swapped view a buffer of their own); the file stays mapped while any
    of them is alive. Nothing in the file runs: a file that would run code
    under torch.load raises jaxport.errors.UnsafeError unless allow_unsafe
    is true, and then its tensors are read all the same."""
    return _core.open(path, allow_unsafe=allow_unsafe).arrays(numpy_dtypes())


def _named_leaves(tree, path):
    """(names, leaves) in the order and with the names each format wants:
    Equinox's records for .eqx; for a dict (Flax params, FrozenDict,
    nnx.State) the key order flax.serialization.to_bytes writes; for other
    pytrees jax.tree_util's order. Nested names are '/'-joined in every
    format, as jaxport.load gives msgpack names back, so save(load(f)) keeps
    the names and a nested dict comes back nested from msgpack."""
    from . import trees  # imports jax, which loading does not need

    if path.endswith(".eqx"):
        return trees.eqx_flatten(tree)
    if isinstance(tree, Mapping) or _is_nnx_state(tree):
        return trees.state_dict_flatten(tree)
    return trees.flatten(tree)


def _is_nnx_state(tree):
    try:
        from flax import nnx
    except ImportError:
        return False
    return isinstance(tree, nnx.State)


def save(tree, path, *, metadata=None, dtype=None):
    """Write every array of a pytree (or a dict of arrays, as jaxport.load
    returns) to `path`, in the format its extension names: .msgpack (what
    flax.serialization.to_bytes writes, byte for byte, for a dict of
    arrays), .eqx (what eqx.tree_serialise_leaves writes), and any other
    format jaxport has a writer for (.safetensors, .npz).

    jax arrays are read without a copy where they live on the CPU; Python
    numbers become 0-d arrays. `dtype` (e.g. "bfloat16", jnp.bfloat16) casts
    float16/bfloat16/float32/float64 arrays, in C; other arrays keep their
    dtype. `metadata` ({str: str}) goes to a .safetensors header. The file
    appears whole or not at all."""
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    names, leaves = _named_leaves(tree, path)
    arrays = [np.asarray(x) for x in leaves]
    if dtype is not None and not isinstance(dtype, str):
        dtype = np.dtype(dtype).name
    _core.save(names, arrays, path, metadata, dtype)
