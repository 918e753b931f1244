"""jaxport: port PyTorch checkpoints to JAX, with the engine in C."""

from . import _core
from .errors import JaxportError
from .io import load, save
from .convert import autoconvert, convert
from .match import Plan, match
from .align import align
from .diff import diff

__version__ = _core.version

__all__ = ["JaxportError", "Plan", "align", "autoconvert", "convert", "diff", "load", "match", "open_index", "save", "__version__",
           "wrap", "wrap_module", "wrap_nnx", "wrap_eqx", "verify", "VerifyError"]

# The runtime bridge imports jax (and torch, flax, equinox when used) only
# when one of its names is first asked for.
_BRIDGE = ("wrap", "wrap_module", "wrap_nnx", "wrap_eqx", "BridgeError")
_VERIFY = ("verify", "VerifyError")


def __getattr__(name):
    if name in _BRIDGE:
        from . import bridge
        return getattr(bridge, name)
    if name in _VERIFY:
        from . import verification
        return getattr(verification, name)
    raise AttributeError(f"module 'jaxport' has no attribute {name!r}")


def open_index(path, *, allow_unsafe=False):
    """Open any file jaxport reads and return its index of tensors."""
    return _core.open(path, allow_unsafe=allow_unsafe)
