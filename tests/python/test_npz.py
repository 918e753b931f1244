"""numpy .npy and .npz: what numpy.save, numpy.savez, numpy.savez_compressed
and jnp.save write, jaxport reads byte for byte; what jaxport writes is
numpy.savez's archive byte for byte and numpy.load reads it back."""

import io
import os
import subprocess
import zipfile
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxport
from jaxport import errors
from jaxfixtures import jaxport_copy

DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64, np.complex64, np.complex128, ml_dtypes.bfloat16]


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    return (rng.standard_normal(shape) * 100).astype(dt)


def assert_same(got, want):
    """Same dtype (native byte order), shape and bytes."""
    want = np.asarray(want)
    want = want.astype(want.dtype.newbyteorder("=")) if want.dtype.byteorder == ">" else want
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def as_jnp_load(arr):
    """numpy.load gives bfloat16 as void 'V2'; jnp.load views it as bfloat16."""
    return arr.view(ml_dtypes.bfloat16) if arr.dtype == np.dtype("V2") else arr


def one(path):
    ix = jaxport.open_index(path)
    (info,) = ix.tensors()
    (arr,) = jaxport.load(path).values()
    return ix.format, info, arr


# ------------------------------------------------------------ .npy


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_npy_each_dtype(tmp_path, dtype):
    want = sample(dtype, (3, 5), seed=1)
    np.save(tmp_path / "a.npy", want)
    fmt, info, got = one(tmp_path / "a.npy")
    assert fmt == "npy" and info["name"] == "arr_0"
    assert not info["owned"]  # a view of the file
    assert_same(got, want)
    assert_same(got, as_jnp_load(np.load(tmp_path / "a.npy")))


@pytest.mark.parametrize("descr", [">f4", ">i8", ">u2", ">f2", ">c8", ">c16", ">f8"])
def test_npy_big_endian(tmp_path, descr):
    want = sample(np.dtype(descr).newbyteorder("="), (4, 3), seed=2).astype(descr)
    np.save(tmp_path / "b.npy", want)
    assert descr.encode() in (tmp_path / "b.npy").read_bytes()[:128]
    _, info, got = one(tmp_path / "b.npy")
    assert info["owned"]  # swapped into a buffer of the index
    assert_same(got, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 5), (1, 6), (4, 1)])
def test_npy_fortran_order(tmp_path, shape):
    want = np.asfortranarray(sample(np.float32, shape, seed=3))
    np.save(tmp_path / "f.npy", want)
    if want.ndim > 1 and min(shape) > 1:
        assert b"'fortran_order': True" in (tmp_path / "f.npy").read_bytes()[:128]
    _, info, got = one(tmp_path / "f.npy")
    assert not info["owned"]  # strides over the same bytes
    assert got.strides == want.strides
    assert_same(got, want)


def test_npy_fortran_big_endian(tmp_path):
    want = np.asfortranarray(sample(np.int32, (3, 4), seed=4)).astype(">i4", order="F")
    np.save(tmp_path / "fb.npy", want)
    _, _, got = one(tmp_path / "fb.npy")
    np.testing.assert_array_equal(got, want)
    assert got.flags.f_contiguous


@pytest.mark.parametrize("want", [np.array(3.5), np.array(7, np.int16), np.zeros((0, 3), np.float32),
                                  np.zeros((2, 0, 4), np.int8, order="F"), np.zeros((0,), ml_dtypes.bfloat16)],
                         ids=["0d-f64", "0d-i16", "empty", "empty-fortran", "empty-bf16"])
def test_npy_0d_and_empty(tmp_path, want):
    np.save(tmp_path / "z.npy", want)
    _, _, got = one(tmp_path / "z.npy")
    assert_same(got, want)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_header_versions(tmp_path, version):
    want = sample(np.float64, (2, 3), seed=5)
    with open(tmp_path / "v.npy", "wb") as f:
        np.lib.format.write_array(f, want, version=version)
    assert (tmp_path / "v.npy").read_bytes()[6:8] == bytes(version)
    _, _, got = one(tmp_path / "v.npy")
    assert_same(got, want)


def test_bfloat16_from_ml_dtypes_and_jnp_save(tmp_path):
    want = sample(ml_dtypes.bfloat16, (5, 2), seed=6)
    np.save(tmp_path / "m.npy", want)
    jnp.save(tmp_path / "j.npy", jnp.asarray(want))
    for name in ["m.npy", "j.npy"]:
        assert b"'descr': '<V2'" in (tmp_path / name).read_bytes()[:128]
        _, info, got = one(tmp_path / name)
        assert info["dtype"] == "bfloat16"
        assert_same(got, want)
        assert_same(got, jnp.load(tmp_path / name))


def test_float8_e5m2_read(tmp_path):
    """ml_dtypes.float8_e5m2 is saved as '<f1', the only 1-byte float: jaxport
    reads it (numpy.load cannot)."""
    want = sample(ml_dtypes.float8_e5m2, (6,), seed=7)
    np.save(tmp_path / "e.npy", want)
    assert b"'<f1'" in (tmp_path / "e.npy").read_bytes()[:128]
    _, _, got = one(tmp_path / "e.npy")
    assert_same(got, want)


@pytest.mark.parametrize("kind", ["object", "float8_e4m3fn", "int4", "plain void", "structured", "string", "datetime"])
def test_npy_refusals(tmp_path, kind):
    arrays = {
        "object": (np.array([1, "a", None], dtype=object), errors.UnsupportedError, "allow_pickle"),
        "float8_e4m3fn": (np.ones(3, ml_dtypes.float8_e4m3fn), errors.DtypeError, r"view\(np.uint8\)"),
        "int4": (np.ones(3, ml_dtypes.int4), errors.DtypeError, "is lost"),
        "plain void": (np.zeros(3, "V2"), errors.DtypeError, r"view\(ml_dtypes.bfloat16\)"),
        "structured": (np.zeros(3, [("a", "<f4"), ("b", "<i2")]), errors.UnsupportedError, "structured"),
        "string": (np.array(["ab", "c"]), errors.DtypeError, "<U2"),
        "datetime": (np.array(["2024-01-01"], "datetime64[D]"), errors.DtypeError, "<M8"),
    }
    arr, exc, words = arrays[kind]
    np.save(tmp_path / "r.npy", arr, allow_pickle=True)
    with pytest.raises(exc, match=words) as info:
        jaxport.load(tmp_path / "r.npy")
    assert info.value.offset == 20  # the descr's place in the header


def test_npy_truncated(tmp_path):
    data = io.BytesIO()
    np.save(data, np.arange(10, dtype=np.float32))
    (tmp_path / "t.npy").write_bytes(data.getvalue()[:-3])
    with pytest.raises(errors.TruncatedError) as info:
        jaxport.load(tmp_path / "t.npy")
    assert info.value.offset == 128


# ------------------------------------------------------------ .npz


def tree():
    """Arrays as a checkpoint has them: every dtype, nested names with '/',
    a 0-d and an empty array, a non-ASCII name."""
    arrays = {f"dtypes/{np.dtype(dt).name}": sample(dt, (2, 3), seed=i) for i, dt in enumerate(DTYPES)}
    arrays["layer/0/kernel"] = sample(np.float32, (4, 8), seed=20)
    arrays["layer/0/bias"] = sample(np.float32, (8,), seed=21)
    arrays["step"] = np.array(1000, np.int64)
    arrays["empty"] = np.zeros((0, 4), np.float16)
    arrays["grüße"] = np.arange(3)
    return arrays


@pytest.mark.parametrize("compressed", [False, True])
def test_npz(tmp_path, compressed):
    want = tree()
    save = np.savez_compressed if compressed else np.savez
    positional = [np.arange(4, dtype=np.int16), sample(np.float64, (2, 2))]
    save(tmp_path / "a.npz", *positional, **want)
    want.update({"arr_0": positional[0], "arr_1": positional[1]})
    ix = jaxport.open_index(tmp_path / "a.npz")
    assert ix.format == "npz"
    got = jaxport.load(tmp_path / "a.npz")
    assert list(got) == list(np.load(tmp_path / "a.npz").keys())
    assert sorted(got) == sorted(want)
    for name, arr in want.items():
        assert_same(got[name], arr)
    owned = {t["name"]: t["owned"] for t in ix.tensors()}
    assert all(owned[n] == compressed for n in want)  # inflated into buffers of the index


def test_npz_big_endian_and_fortran(tmp_path):
    want = {"be": sample(np.float32, (3, 2), seed=8).astype(">f4"),
            "f": np.asfortranarray(sample(np.int64, (3, 4), seed=9))}
    np.savez(tmp_path / "m.npz", **want)
    got = jaxport.load(tmp_path / "m.npz")
    assert_same(got["be"], want["be"])
    assert_same(got["f"], want["f"])
    assert got["f"].strides == want["f"].strides


def test_npz_empty(tmp_path):
    np.savez(tmp_path / "e.npz")
    assert jaxport.load(tmp_path / "e.npz") == {}


def test_npz_refusals(tmp_path):
    np.savez(tmp_path / "o.npz", w=np.ones(2), o=np.array([{}], dtype=object))
    with pytest.raises(errors.UnsupportedError, match="allow_pickle") as info:
        jaxport.load(tmp_path / "o.npz")
    assert info.value.member == "o.npy"
    np.savez(tmp_path / "x.npz", w=np.ones(2))
    with zipfile.ZipFile(tmp_path / "x.npz", "a") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(errors.UnsupportedError, match="not an .npy") as info:
        jaxport.load(tmp_path / "x.npz")
    assert info.value.member == "notes.txt"


def test_npz_corrupt_crc(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", w=np.arange(1000, dtype=np.float32))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 16] ^= 0xFF
    (tmp_path / "c.npz").write_bytes(bytes(data))
    with pytest.raises(errors.CorruptError, match="crc32") as info:
        jaxport.load(tmp_path / "c.npz")
    assert info.value.member == "w.npy" and info.value.offset == 0


# ------------------------------------------------------------ the writer


def test_written_bytes_equal_numpy_savez(tmp_path):
    """Every array of an np.savez archive, through jaxport's npz writer: the
    same bytes as numpy.savez."""
    np.savez(tmp_path / "src.npz", *[np.arange(3)], **tree())
    assert jaxport_copy(tmp_path / "src.npz", tmp_path / "out.npz") == (tmp_path / "src.npz").read_bytes()


@pytest.mark.parametrize("source", ["npz_compressed", "npy", "eqx", "msgpack"])
def test_written_npz_loads_in_numpy(tmp_path, source):
    """From other formats: numpy.load gives the arrays jaxport read."""
    want = tree()
    if source == "npz_compressed":
        np.savez_compressed(tmp_path / "src", **want)
        src = tmp_path / "src.npz"
    elif source == "npy":
        want = {"arr_0": want["layer/0/kernel"]}
        np.save(tmp_path / "src.npy", want["arr_0"])
        src = tmp_path / "src.npy"
    elif source == "eqx":
        import equinox as eqx
        leaves = [want["layer/0/kernel"], want["dtypes/bfloat16"], want["step"]]
        eqx.tree_serialise_leaves(tmp_path / "src.eqx", leaves)
        want = {str(i): x for i, x in enumerate(leaves)}
        src = tmp_path / "src.eqx"
    else:
        import flax.serialization
        nested = {"layer": {"0": {"kernel": want["layer/0/kernel"]}}, "step": want["step"]}
        (tmp_path / "src.msgpack").write_bytes(flax.serialization.to_bytes(nested))
        want = {"layer/0/kernel": want["layer/0/kernel"], "step": want["step"]}
        src = tmp_path / "src.msgpack"
    jaxport_copy(src, tmp_path / "out.npz")
    with zipfile.ZipFile(tmp_path / "out.npz") as z:
        assert z.testzip() is None  # every crc32 right
    back = np.load(tmp_path / "out.npz")
    assert sorted(back.keys()) == sorted(want)
    for name, arr in want.items():
        assert_same(as_jnp_load(back[name]), arr)


def _c_tool():
    tool = Path(jaxport.__file__).resolve().parents[2] / "tests" / "c" / "test_npz"
    assert tool.exists(), f"{tool} is not built"
    return tool


def _c_fixture():
    """What `test_npz write` writes (fixture() in tests/c/test_npz.c)."""
    specs = [("w", np.float32, (2, 3, 4)), ("layer/0/b", np.int64, (5,)), ("scalar", np.float64, ()),
             ("empty", np.uint16, (0, 3)), ("bf16", ml_dtypes.bfloat16, (3, 2)), ("c128", np.complex128, (2,)),
             ("flags", np.bool_, (7,)), ("ü/x", np.int8, (1, 1, 1))]
    out = {}
    for i, (name, dt, shape) in enumerate(specs):
        n = int(np.prod(shape)) * np.dtype(dt).itemsize
        b = np.arange(n, dtype=np.uint64)
        raw = (b % 3 == 0).astype(np.uint8) if dt is np.bool_ else ((b * 7 + i) & 0xFF).astype(np.uint8)
        out[name] = raw.view(dt).reshape(shape)
    return out


def test_c_writer_output_loads_in_numpy(tmp_path):
    subprocess.run([str(_c_tool()), "write", str(tmp_path / "c.npz")], check=True, capture_output=True)
    back = np.load(tmp_path / "c.npz")
    want = _c_fixture()
    assert list(back.keys()) == list(want)
    for name, arr in want.items():
        assert_same(as_jnp_load(back[name]), arr)
    assert jaxport.load(tmp_path / "c.npz").keys() == want.keys()


@pytest.mark.skipif(not os.environ.get("JAXPORT_BIG_TESTS"), reason="writes 2 GiB; set JAXPORT_BIG_TESTS=1")
def test_zip64_archive_equals_numpy_savez(tmp_path):
    """Past 2**31 - 1 bytes: zip64 sizes, offsets and end records as zipfile
    writes them; numpy.load reads the archive and numpy.savez of the same
    arrays writes the same bytes."""
    subprocess.run([str(_c_tool()), "zip64", str(tmp_path / "big.npz")], check=True, capture_output=True)
    back = np.load(tmp_path / "big.npz")
    big, after = back["big"], back["after"]
    assert after.tolist() == [[1, 2], [3, 4]] and big.size == (1 << 31) + 40
    (tmp_path / "big.npz").rename(tmp_path / "ours.npz")
    np.savez(tmp_path / "ref.npz", big=big, after=after)
    del back, big
    with open(tmp_path / "ours.npz", "rb") as a, open(tmp_path / "ref.npz", "rb") as b:
        while True:
            x, y = a.read(1 << 24), b.read(1 << 24)
            assert x == y
            if not x:
                break
