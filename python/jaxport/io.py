"""Loading checkpoints as numpy arrays that view the file without copying it."""

import functools

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
