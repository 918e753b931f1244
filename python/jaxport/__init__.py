"""jaxport: port PyTorch checkpoints to JAX, with the engine in C."""

from . import _core
from .errors import JaxportError
from .io import load, save

__version__ = _core.version

__all__ = ["JaxportError", "load", "open_index", "save", "__version__"]


def open_index(path, *, allow_unsafe=False):
    """Open any file jaxport reads and return its index of tensors."""
    return _core.open(path, allow_unsafe=allow_unsafe)
