"""Exception classes, one per engine error code, all deriving from JaxportError.

Each carries the engine's message and the attributes ``code`` (the code's
name), ``offset`` (byte position in the file, or None) and ``member`` (the zip
entry, tensor or leaf concerned, or "")."""

from . import _core

JaxportError = _core.JaxportError

__all__ = ["JaxportError"]
for _name in dir(_core):
    _obj = getattr(_core, _name)
    if isinstance(_obj, type) and issubclass(_obj, JaxportError) and _obj is not JaxportError:
        globals()[_name] = _obj
        __all__.append(_name)
del _name, _obj
