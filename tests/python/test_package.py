"""The package imports, reports its version, and maps engine errors to classes."""

import pytest

import jaxport
from jaxport import errors


def test_version():
    assert jaxport.__version__ == "0.1.0"


def test_error_classes_cover_every_code():
    names = {n for n in errors.__all__ if n != "JaxportError"}
    assert {"TruncatedError", "UnsafeError", "CorruptError", "NotFoundError"} <= names
    for n in names:
        assert issubclass(getattr(errors, n), errors.JaxportError)


def test_missing_file_raises_io_error(tmp_path):
    with pytest.raises(errors.IoError) as info:
        jaxport.open_index(tmp_path / "absent.pt")
    assert "cannot open" in str(info.value)
    assert info.value.code == "IO"


def test_unknown_bytes_raise_format_error(tmp_path):
    p = tmp_path / "junk.bin"
    p.write_bytes(b"\x00\x01\x02\x03 hello")
    with pytest.raises(errors.FormatError) as info:
        jaxport.open_index(p)
    assert "00 01 02 03" in str(info.value)
    assert info.value.offset == 0
