"""The layout and dtype kernels against numpy and ml_dtypes, byte for byte.

Every cast pair on every 8- and 16-bit pattern and on edge and random wider
values; every permutation of up to five axes on odd, size-1 and empty shapes;
strided (sliced, reversed, transposed) sources; the blocked and streamed paths
on shapes that cross their block edges and on misaligned outputs; thread
counts; and the errors. The layout tests run on every SIMD level this CPU has
(JAXPORT_SIMD lowers it to SSE2 or to portable C), so each kernel is checked.
"""

import itertools
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxport import _core, errors

FLOATS = ["float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2",
          "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"]
INTS = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]
COMPLEX = ["complex64", "complex128"]


SIMD_LEVELS = ["native", "sse2", "portable"]


def set_simd(level):
    if level == "native":
        os.environ.pop("JAXPORT_SIMD", None)
    else:
        os.environ["JAXPORT_SIMD"] = level


@pytest.fixture(params=SIMD_LEVELS)
def simd(request):
    set_simd(request.param)
    yield request.param
    set_simd("native")


def dt(name):
    return np.dtype(getattr(ml_dtypes, name, None) or name)


def reference_cast(x, dst):
    """What numpy/ml_dtypes give; ml_dtypes has no float8 <-> e8m0 cast, and
    the float32 route is the definition jaxport follows there."""
    s = x.dtype.name
    if s != dst and "float8" in s and "float8" in dst and "e8m0" in s + dst:
        return x.astype(np.float32).astype(dt(dst))
    with np.errstate(all="ignore"):
        return x.astype(dt(dst))


def jp(x, dst=None, perm=None, base=None, threads=1, out=None, pool=None):
    """Runs the kernel on the view x of base (x itself when contiguous)."""
    base = x if base is None else base
    size = x.dtype.itemsize
    offset = (x.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // size
    strides = [s // size for s in x.strides]
    raw = base.view(np.uint8).reshape(-1) if base.ndim else base.reshape(1).view(np.uint8)
    got = _core.permute_cast(raw, x.dtype.name, list(x.shape), strides,
                             None if perm is None else list(perm), dst or x.dtype.name,
                             offset=offset, out=out, threads=threads, pool=pool)
    if out is not None:
        return None
    shape = x.shape if perm is None else tuple(x.shape[p] for p in perm)
    return np.frombuffer(got, dtype=dt(dst or x.dtype.name)).reshape(shape)


def dense(v):
    """A row-major copy (np.ascontiguousarray turns 0-d into 1-d)."""
    return np.array(v, order="C", copy=True)


def same_bytes(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------ casts

RNG = np.random.default_rng(20240611)


def patterns(name):
    """Every pattern of a 1- or 2-byte type; edges and random bits of wider ones."""
    d = dt(name)
    if name == "bool":
        return np.array([False, True])
    if d.itemsize == 1:
        return np.arange(256, dtype=np.uint8).view(d)
    if d.itemsize == 2:
        return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(d)
    if d.kind in "iu":
        info = np.iinfo(d)
        edges = [0, 1, -1, 2, 127, 128, 255, 256, 32767, 32768, 65535, 65536, 2**24 + 1,
                 2**31 - 1, 2**31, 2**32 - 1, 2**53 + 1, 2**60 + 2**52 + 2**36 + 1, info.min,
                 info.max, info.max - 1, info.min + 1]
        edges = [v for v in edges if info.min <= v <= info.max]
        rand = RNG.integers(info.min, info.max, 3000, dtype=d, endpoint=True)
        return np.concatenate([np.array(edges, dtype=d), rand])
    if d.kind == "c":
        part = patterns("float32" if d.itemsize == 8 else "float64").astype(d.type(0).real.dtype)
        return np.stack([part, part[::-1]], axis=-1).reshape(-1).view(d)
    # float32/64: every bf16 and f16 value with rounding-sensitive low bits,
    # the e8m0 and float8 boundaries, special values, and random patterns.
    hi = np.arange(65536, dtype=np.uint32) << 16
    f32 = np.concatenate([hi, hi | 0x8000, hi | 0x7FFF, hi | 0x8001, hi | 0x400000 | 0x1000,
                          np.arange(0, 0x800000, 0x1001, dtype=np.uint32),
                          RNG.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)])
    f32 = f32.view(np.float32)
    if name == "float32":
        return f32
    with np.errstate(all="ignore"):
        f64 = f32.astype(np.float64).view(np.uint64)
    rand = RNG.integers(0, 2**64, 20000, dtype=np.uint64)
    return np.concatenate([f64, f64 + 1, f64 - 1, f64 ^ (1 << 28), rand,
                           np.array([0x7FF0000000000001, 0xFFF4000000000000], np.uint64)]
                          ).view(np.float64)


def fits(x, dst):
    """Which elements of x jaxport converts to the integer type dst (the rest
    it refuses, where numpy would wrap)."""
    if dst == "bool" or dt(dst).kind not in "iu":
        return np.ones(x.shape, bool)
    info = np.iinfo(dt(dst))
    if x.dtype.kind in "iub":
        return np.array([info.min <= int(v) <= info.max for v in x])
    with np.errstate(all="ignore"):
        t = np.trunc(x.astype(np.float64))
        return np.isfinite(t) & (t >= float(info.min)) & (t < float(info.max) + 1.0)


PAIRS = [(s, d) for s in FLOATS + INTS for d in FLOATS + INTS] + [
    (s, d) for s in COMPLEX for d in COMPLEX]


@pytest.mark.parametrize("src,dst", PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
def test_cast_matches_numpy_bit_for_bit(src, dst):
    x = patterns(src)
    ok = fits(x, dst)
    x_ok = x[ok]
    assert same_bytes(jp(x_ok, dst), reference_cast(x_ok, dst))
    if not ok.all():
        first = int(np.argmax(~ok))
        with pytest.raises(errors.RangeError) as info:
            jp(x, dst)
        assert f"element [{first}] is " in str(info.value)
        assert f"which {dst} cannot hold" in str(info.value)


def test_cast_edge_values():
    # Rounding ties, overflow, NaN payloads and negative zero, spelled out.
    f = np.array([1 + 2**-8, 1 + 3 * 2**-8, 3.4028235e38, -0.0, np.inf, 1e-45], np.float32)
    assert jp(f, "bfloat16").view(np.uint16).tolist() == [
        0x3F80, 0x3F82, 0x7F80, 0x8000, 0x7F80, 0x0000]
    h = np.array([1 + 2**-11, 1 + 3 * 2**-11, 65520.0, 65519.99, 2**-25, 2**-25 * 1.5], np.float32)
    assert jp(h, "float16").view(np.uint16).tolist() == [
        0x3C00, 0x3C02, 0x7C00, 0x7BFF, 0x0000, 0x0001]
    assert jp(np.array([464.0, 465.0, -np.inf, -0.0], np.float32), "float8_e4m3fn"
              ).view(np.uint8).tolist() == [0x7E, 0x7F, 0xFF, 0x80]
    assert jp(np.array([-0.0, -1e-30, np.nan], np.float32), "float8_e4m3fnuz"
              ).view(np.uint8).tolist() == [0x00, 0x00, 0x80]
    assert jp(np.array([1.5, 3.0, 0.0, -1.0], np.float32), "float8_e8m0fnu"
              ).view(np.uint8).tolist() == [128, 129, 255, 255]
    nan = np.array([0x7F800001, 0xFFA00000], np.uint32).view(np.float32)
    assert jp(nan, "float16").view(np.uint16).tolist() == [0x7C01, 0xFD00]
    assert jp(nan, "bfloat16").view(np.uint16).tolist() == [0x7FC0, 0xFFC0]


def test_float_to_int_refuses_what_numpy_would_garble():
    for bad in [np.nan, np.inf, 256.0, -1.0]:
        with pytest.raises(errors.RangeError) as info:
            jp(np.array([1.5, bad], np.float32), "uint8")
        assert "element [1] is" in str(info.value) and "(0 to 255)" in str(info.value)
    assert jp(np.array([255.9, -0.9], np.float32), "uint8").tolist() == [255, 0]


def test_unsupported_pairs_raise_dtype_error():
    for src, dst in [("complex64", "float32"), ("float32", "complex64"),
                     ("float4_e2m1fn_x2", "float32")]:
        with pytest.raises(errors.DtypeError):
            _core.permute_cast(b"\0" * 16, src, [1], None, None, dst)


# ------------------------------------------------------------------ layouts

# One dtype per element size, and casts that widen, narrow and fuse.
LAYOUT_CASES = [("uint8", None), ("bfloat16", None), ("float32", None), ("float64", None),
                ("complex128", None), ("float32", "bfloat16"), ("float64", "float16"),
                ("float16", "float64"), ("int64", "int32"), ("uint8", "float32")]


def sample(shape, name):
    x = np.asarray(RNG.standard_normal(shape) * 100)
    if name == "complex128":
        return np.asarray(x + 1j * np.sqrt(np.abs(x)))
    if dt(name).kind in "iu":
        x = np.abs(x)
    return np.asarray(x).astype(dt(name))  # np.abs makes a 0-d array a scalar


@pytest.mark.parametrize("src,dst", LAYOUT_CASES, ids=[f"{s}-{d}" for s, d in LAYOUT_CASES])
def test_every_permutation_up_to_five_axes(src, dst, simd):
    for nd in range(6):
        x = sample((3, 5, 7, 1, 9)[:nd], src)
        for perm in itertools.permutations(range(nd)):
            want = reference_cast(dense(x.transpose(perm)), dst or src)
            assert same_bytes(jp(x, dst, perm), want), (x.shape, perm)


def test_empty_and_scalar_shapes():
    for shape in [(0,), (3, 0, 5), (0, 0), ()]:
        x = sample(shape, "float32")
        perm = tuple(reversed(range(len(shape))))
        assert same_bytes(jp(x, "bfloat16", perm),
                          dense(x.transpose(perm)).astype(ml_dtypes.bfloat16))


@st.composite
def strided_views(draw):
    nd = draw(st.integers(0, 5))
    shape = draw(st.lists(st.sampled_from([0, 1, 2, 3, 5, 7, 17]), min_size=nd, max_size=nd))
    steps = draw(st.lists(st.sampled_from([1, 1, 2, 3, -1]), min_size=nd, max_size=nd))
    pre = draw(st.permutations(range(nd)))  # the source is itself a transposed view
    perm = draw(st.permutations(range(nd)))
    src, dst = draw(st.sampled_from(LAYOUT_CASES))
    return shape, steps, pre, perm, src, dst


@settings(max_examples=150, deadline=None, database=None)
@given(strided_views(), st.sampled_from(SIMD_LEVELS))
def test_strided_views_match_numpy(case, level):
    set_simd(level)
    shape, steps, pre, perm, src, dst = case
    base = sample([n * abs(s) + 1 for n, s in zip(shape, steps)], src)
    view = base[tuple(slice(None, n * s, s) if s > 0 else slice(n - 1, None, -1) if n else
                      slice(0, 0) for n, s in zip(shape, steps))] if shape else base[...]
    view = view.transpose(pre)
    want = reference_cast(dense(view.transpose(perm)), dst or src)
    try:
        assert same_bytes(jp(view, dst, perm, base=base), want)
    finally:
        set_simd("native")


# The 2-d transpose fast paths: one case per element size and the fused
# float32 -> bfloat16 kernel, on shapes around the micro-tiles (8 and 16
# rows, ragged edges, 1 x n and n x 1, empty), from dense sources, sources
# with padded rows, rows in reverse order (a negative stride, which the tile
# kernels take as it is), columns in reverse order (which no tile kernel can
# take: the gather walk does it) and a source that starts one element in.
FAST_CASES = [("uint8", None), ("bfloat16", None), ("float32", None), ("float64", None),
              ("complex128", None), ("float32", "bfloat16")]
# Rows 512 bytes apart (or a multiple) take the staged path even when small.
FAST_SHAPES = [(1, 1), (1, 37), (37, 1), (0, 9), (9, 0), (7, 9), (8, 8), (16, 16), (17, 33),
               (64, 64), (65, 130), (300, 257), (4, 1000), (37, 128), (130, 256), (70, 512)]


@pytest.mark.parametrize("src,dst", FAST_CASES, ids=[f"{s}-{d}" for s, d in FAST_CASES])
def test_transpose_fast_paths(src, dst, simd):
    for rows, cols in FAST_SHAPES:
        base = sample((rows + 2, cols + 5), src)
        views = {"dense": dense(base[:rows, :cols]), "padded": base[1:rows + 1, 2:cols + 2],
                 "rows reversed": base[rows - 1::-1, :cols] if rows else base[:0, :cols],
                 "columns reversed": base[:rows, cols - 1::-1] if cols else base[:rows, :0]}
        for name, view in views.items():
            want = reference_cast(dense(view.T), dst or src)
            b = view if name == "dense" else base
            assert same_bytes(jp(view, dst, (1, 0), base=b), want), (rows, cols, name)


@pytest.mark.parametrize("src,dst", [("float32", "float16"), ("float16", "float32"),
                                     ("float64", "float16"), ("float32", "bfloat16"),
                                     ("bfloat16", "float32")])
def test_half_casts_on_every_level(src, dst, simd):
    # float16 has its own F16C kernels; the portable and SSE2 levels skip them.
    x = patterns(src)
    assert same_bytes(jp(x, dst), reference_cast(x, dst))
    y = x[: 1000 * (len(x) // 1000)].reshape(1000, -1)
    assert same_bytes(jp(y, dst, (1, 0)), reference_cast(dense(y.T), dst))


BLOCK_SHAPES = [(4100, 40), (40, 4100), (33, 65), (17, 9, 31)]


@pytest.mark.parametrize("src,dst", [("float32", None), ("float32", "bfloat16"),
                                     ("bfloat16", None), ("float64", None), ("uint8", None),
                                     ("float32", "float16"), ("int32", "int64")])
def test_block_edges(src, dst, simd):
    for shape in BLOCK_SHAPES:
        x = sample(shape, src)
        perm = tuple(reversed(range(len(shape))))
        want = reference_cast(dense(x.transpose(perm)), dst or src)
        assert same_bytes(jp(x, dst, perm), want), shape


@pytest.mark.parametrize("src,dst", [("float32", None), ("float32", "bfloat16"),
                                     ("bfloat16", None), ("float64", None)])
def test_large_transpose_threads_and_misaligned_output(src, dst, simd):
    # An output over 8 MiB streams around the cache; it is split across threads.
    x = sample((1030, (8 << 20) // (1030 * dt(dst or src).itemsize) + 8), src)
    want = reference_cast(dense(x.T), dst or src)
    pool = _core.Pool(2)
    assert pool.threads == 2
    for threads, shared in ((1, None), (0, None), (3, None), (1, pool)):
        for shift in (0, want.dtype.itemsize):
            buf = bytearray(want.nbytes + 64 + shift)
            start = (64 - np.frombuffer(buf, np.uint8).ctypes.data % 64) % 64 + shift
            out = memoryview(buf)[start:start + want.nbytes]
            jp(x, dst, (1, 0), threads=threads, out=out, pool=shared)
            assert bytes(out) == want.tobytes(), (threads, shift)


@pytest.mark.parametrize("src,dst", [("float32", None), ("float32", "bfloat16"),
                                     ("bfloat16", None), ("float64", None)])
def test_large_transpose_source_off_its_cache_lines(src, dst, simd):
    # Source rows a multiple of 64 bytes apart, all starting the same number
    # of bytes into a cache line: the streamed blocks along the source rows
    # then start on line boundaries, after a first narrower block.
    rows = 1030
    cols = -(-(9 << 20) // (rows * dt(dst or src).itemsize * 64)) * 64  # output over 8 MiB
    base = sample((rows, cols + 64 // dt(src).itemsize), src)
    for skip in (0, 1, 3):
        start = (64 - base.ctypes.data % 64) // base.itemsize + skip
        view = base[:, start:start + cols - 16]
        want = reference_cast(dense(view.T), dst or src)
        assert same_bytes(jp(view, dst, (1, 0), base=base), want), skip


def test_conv_kernel_to_hwio(simd):
    # (256, 256, 3, 3) and (8, 64, 3, 3) have rows 512 bytes apart, so their
    # nine-element rows are grouped with the input channels.
    for shape in [(64, 3, 7, 5), (64, 64, 7, 7), (32, 16, 3, 3), (8, 4, 1, 1), (256, 256, 3, 3),
                  (8, 64, 3, 3)]:
        w = sample(shape, "float32")
        for dst in ("float32", "bfloat16", "float16"):
            want = dense(w.transpose(2, 3, 1, 0)).astype(dt(dst))
            assert same_bytes(jp(w, dst, (2, 3, 1, 0), threads=0), want), (shape, dst)


@pytest.mark.parametrize("src,dst", [("float32", None), ("float32", "bfloat16"),
                                     ("bfloat16", None)])
def test_large_conv_kernel_grouped_rows(src, dst, simd):
    # Over 8 MiB of output: streamed, the nine-element rows grouped with the
    # input channels, from sources that start on and off a cache line, over
    # two threads.
    base = sample((512 * 256 * 9 + 64,), src)
    for skip in (0, 1, 5):
        start = (64 - base.ctypes.data % 64) // base.itemsize + skip
        w = base[start:start + 512 * 256 * 9].reshape(512, 256, 3, 3)
        want = reference_cast(dense(w.transpose(2, 3, 1, 0)), dst or src)
        assert same_bytes(jp(w, dst, (2, 3, 1, 0), base=base, threads=2), want), skip


# ------------------------------------------------------------------ errors


def test_range_error_names_first_element_in_source_order():
    x = np.array([[1, 2, 3], [4, 300, -200]], np.int32)
    with pytest.raises(errors.RangeError) as info:
        jp(x, "int8", (1, 0))
    assert str(info.value) == "element [1, 1] is 300, which int8 cannot hold (-128 to 127)"
    assert info.value.code == "RANGE"
    with pytest.raises(errors.RangeError) as info:
        jp(np.array([5, 2**63 + 7], np.uint64), "int64")
    assert "element [1] is 9223372036854775815, which int64" in str(info.value)


def test_bad_arguments():
    buf = np.zeros(12, np.float32)
    with pytest.raises(errors.ArgumentError):
        _core.permute_cast(buf, "float32", [3, 4], None, [0, 0], "float32")
    with pytest.raises(errors.ArgumentError):
        _core.permute_cast(buf, "float32", [3, 4], None, [0, 2], "float32")
    with pytest.raises(ValueError, match="outside the source buffer"):
        _core.permute_cast(buf, "float32", [3, 5], None, None, "float32")
    with pytest.raises(ValueError, match="outside the source buffer"):
        _core.permute_cast(buf, "float32", [3], [-1], None, "float32")
    with pytest.raises(ValueError, match="outside the source buffer"):
        _core.permute_cast(buf, "float32", [2], [2**62], None, "float32", offset=2**62)
    with pytest.raises(ValueError, match="unknown dtype"):
        _core.permute_cast(buf, "float33", [3], None, None, "float32")
    with pytest.raises(ValueError, match="bytes"):
        _core.permute_cast(buf, "float32", [3, 4], None, None, "float32", out=bytearray(8))
