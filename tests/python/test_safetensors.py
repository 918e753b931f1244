"""safetensors: files written by the real `safetensors` package (numpy and
torch APIs, every dtype) load through jaxport byte for byte; what jaxport's
writer produces is byte for byte what safetensors (and huggingface_hub's
sharded save) produce; jaxport refuses what safetensors refuses."""

import json
import subprocess
from pathlib import Path

import huggingface_hub
import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

import jaxport
from jaxport import errors
from torch_fixtures import random_of

NUMPY_DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64,
                np.int64, np.float16, np.float32, np.float64, np.complex64, ml_dtypes.bfloat16,
                ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fnuz,
                ml_dtypes.float8_e5m2fnuz, ml_dtypes.float8_e8m0fnu]

TORCH_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.uint16, torch.int16, torch.uint32,
                torch.int32, torch.uint64, torch.int64, torch.float16, torch.bfloat16, torch.float32,
                torch.float64, torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2,
                torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.float8_e8m0fnu]


def numpy_tensors(seed=0):
    """Every dtype safetensors.numpy saves, random bytes, names in no order;
    0-d and zero-size arrays."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, dt in enumerate(NUMPY_DTYPES):
        dt = np.dtype(dt)
        raw = rng.integers(0, 256, (3, 2 + i % 3) + (dt.itemsize,), dtype=np.uint8)
        arr = raw.view(dt)[..., 0] if dt != np.bool_ else raw[..., 0] % 2 == 1
        out[f"layer{(7 * i) % 19}.{dt.name}"] = np.ascontiguousarray(arr)
    out["scalar"] = np.array(2.5, np.float32)
    out["empty"] = np.zeros((0, 4), np.int16)
    out["empty_bf16"] = np.zeros((2, 0), ml_dtypes.bfloat16)
    out["héllo \"q\"\n"] = np.arange(3, dtype=np.int32)
    return out


def torch_tensors(seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = {f"t.{str(dt).split('.')[-1]}": random_of(dt, (2, 3), gen) for dt in TORCH_DTYPES}
    out["zero_d"] = torch.tensor(1.5, dtype=torch.bfloat16)
    out["zero_size"] = torch.zeros(0, 5)
    return out


def torch_bytes(t):
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def copy_tool():
    tool = Path(jaxport.__file__).resolve().parents[2] / "tests" / "c" / "test_safetensors"
    assert tool.exists(), f"{tool} is not built"
    return tool


def jaxport_copy(src, dst, shard_bytes=0, meta=None):
    """Every tensor of src through jaxport's writer for dst's extension."""
    args = [str(copy_tool()), "copy", str(src), str(dst), str(shard_bytes)]
    for k, v in (meta or {}).items():
        args += [k, v]
    subprocess.run(args, check=True, capture_output=True, text=True)


# ---------------------------------------------------------------- reading


def check_numpy_equal(got, want):
    assert set(got) == set(want)
    for name, ref in want.items():
        arr = got[name]
        assert arr.dtype == ref.dtype, name
        assert arr.shape == ref.shape, name
        assert arr.tobytes() == ref.tobytes(), name


@pytest.mark.parametrize("metadata", [None, {"format": "np"}, {"a": "1", "b": "x\ny", "c": "é"}])
def test_load_numpy_files(tmp_path, metadata):
    ref = numpy_tensors()
    path = tmp_path / "n.safetensors"
    safetensors.numpy.save_file(ref, path, metadata=metadata)
    ix = jaxport.open_index(path)
    assert ix.format == "safetensors"
    assert ix.meta() == (metadata or {})
    got = jaxport.load(path)
    check_numpy_equal(got, ref)
    # safetensors.numpy cannot load ml_dtypes kinds; its torch loader can.
    back = safetensors.torch.load_file(path)
    assert {k: torch_bytes(t) for k, t in back.items()} == {k: a.tobytes() for k, a in got.items()}


def test_load_torch_files(tmp_path):
    ref = torch_tensors()
    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file(ref, path, metadata={"format": "pt"})
    got = jaxport.load(path)
    assert set(got) == set(ref)
    for name, t in ref.items():
        assert tuple(got[name].shape) == tuple(t.shape), name
        assert got[name].dtype.name == str(t.dtype).split(".")[-1], name
        assert got[name].tobytes() == torch_bytes(t), name
    back = safetensors.torch.load_file(path)
    assert all(torch.equal(back[k].view(torch.uint8) if back[k].dim() else back[k].reshape(1).view(torch.uint8),
                           ref[k].view(torch.uint8) if ref[k].dim() else ref[k].reshape(1).view(torch.uint8))
               for k in ref if ref[k].numel())


def test_float4_pairs(tmp_path):
    """torch's float4_e2m1fn_x2 is "F4" with the last dim doubled on disk;
    jaxport reads it back as pairs of the torch shape."""
    x = torch.arange(12, dtype=torch.uint8).reshape(3, 4).view(torch.float4_e2m1fn_x2)
    path = tmp_path / "f4.safetensors"
    safetensors.torch.save_file({"f": x}, path)
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert header["f"]["dtype"] == "F4" and header["f"]["shape"] == [3, 8]
    (t,) = jaxport.open_index(path).tensors()
    assert t["dtype"] == "float4_e2m1fn_x2" and t["shape"] == (3, 4) and t["nbytes"] == 12
    jaxport_copy(path, tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == path.read_bytes()


def raw_file(path, header, data):
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + data)
    return path


def test_unaligned_data(tmp_path):
    """safetensors does not require aligned data (a header of odd length,
    another writer's order); numpy views of such bytes work, unaligned."""
    vals = np.array([1.5, -2.0, 3.25], np.float32)
    i64 = np.array([1 << 40, -5], np.int64)
    header = {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
              "f": {"dtype": "F32", "shape": [3], "data_offsets": [1, 13]},
              "i": {"dtype": "I64", "shape": [2], "data_offsets": [13, 29]}}
    path = raw_file(tmp_path / "u.safetensors", header, b"\x07" + vals.tobytes() + i64.tobytes())
    ref = safetensors.numpy.load_file(path)
    got = jaxport.load(path)
    check_numpy_equal(got, ref)
    assert not got["f"].flags.aligned or not got["i"].flags.aligned
    np.testing.assert_array_equal(got["f"] * 2, vals * 2)
    assert got["i"].sum() == i64.sum()
    jax = pytest.importorskip("jax")
    np.testing.assert_array_equal(np.asarray(jax.numpy.asarray(got["f"])), vals)


# ---------------------------------------------------------------- refusals

T = lambda dt, shape, b, e: {"dtype": dt, "shape": shape, "data_offsets": [b, e]}  # noqa: E731

# (header, data length): what the reference reads, jaxport reads.
ACCEPTED = [
    ({}, 0),
    (b"{}      ", 0),
    ({"__metadata__": None}, 0),
    ({"a": T("U8", [2], 0, 2), "b": T("U8", [0], 2, 2), "c": T("I64", [3, 0], 2, 2)}, 2),
    ({"b": T("U8", [2], 2, 4), "a": T("U8", [2], 0, 2)}, 4),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "extra": 1}}, 1),
    ({"": T("U8", [1], 0, 1)}, 1),
    ({"f": T("F4", [2, 4], 0, 4)}, 4),
]

# (header, data length, jaxport's code): what the reference refuses.
REFUSED = [
    (b'{"a":', 0, "CORRUPT"),
    (b"{} x", 0, "CORRUPT"),
    (b"{}\0", 0, "CORRUPT"),
    (b'{"\xff":1}', 0, "CORRUPT"),
    ({"a": 1}, 0, "CORRUPT"),
    ({"a": T("F33", [1], 0, 4)}, 4, "DTYPE"),
    ({"a": T("float32", [1], 0, 4)}, 4, "DTYPE"),
    ({"a": T("C128", [1], 0, 16)}, 16, "DTYPE"),
    ({"a": T("F32", [2], 0, 4)}, 4, "CORRUPT"),
    ({"a": T("U8", [4], 0, 4), "b": T("U8", [4], 2, 6)}, 6, "CORRUPT"),
    ({"a": T("U8", [4], 0, 4), "b": T("U8", [4], 5, 9)}, 9, "CORRUPT"),
    ({"a": T("U8", [4], 1, 5)}, 5, "CORRUPT"),
    ({"a": T("U8", [4], 0, 4)}, 5, "CORRUPT"),
    ({"a": T("U8", [8], 0, 8)}, 4, "TRUNCATED"),
    ({"a": T("U8", [0], 4, 0)}, 0, "CORRUPT"),
    ({"__metadata__": {"k": 1}}, 0, "CORRUPT"),
    ({"__metadata__": ["k"]}, 0, "CORRUPT"),
    ({"a": T("U8", [-1], 0, 0)}, 0, "CORRUPT"),
    ({"a": T("U8", [2.0], 0, 2)}, 2, "CORRUPT"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}, 1, "CORRUPT"),
    ({"a": {"dtype": "U8", "shape": [1]}}, 1, "CORRUPT"),
    ({"a": T("F32", [4294967296] * 3, 0, 0)}, 0, "LIMIT"),
    ({"a": T("F4", [3], 0, 2)}, 2, "CORRUPT"),
    (b'{"__metadata__":{},"__metadata__":{}}', 0, "CORRUPT"),
]


def reference_reads(path):
    try:
        safetensors.numpy.load_file(path)
        with safetensors.safe_open(path, "np") as f:
            f.keys()
        return True
    except Exception:  # the reference's SafetensorError, or a numpy dtype it lacks
        return False


@pytest.mark.parametrize(("header", "ndata"), ACCEPTED)
def test_accepted_like_the_reference(tmp_path, header, ndata):
    path = raw_file(tmp_path / "ok.safetensors", header, bytes(range(ndata)))
    with safetensors.safe_open(path, "pt") as f:
        names = set(f.keys())
    assert {t["name"] for t in jaxport.open_index(path).tensors()} == names


@pytest.mark.parametrize(("header", "ndata", "code"), REFUSED)
def test_refused_like_the_reference(tmp_path, header, ndata, code):
    path = raw_file(tmp_path / "bad.safetensors", header, bytes(range(ndata)))
    assert not reference_reads(path)
    with pytest.raises(errors.JaxportError) as info:
        jaxport.open_index(path)
    assert info.value.code == code


def test_error_carries_offset_and_member(tmp_path):
    header = json.dumps({"a": T("U8", [4], 0, 4), "b": T("U8", [4], 5, 9)}, separators=(",", ":")).encode()
    path = raw_file(tmp_path / "gap.safetensors", header, bytes(9))
    with pytest.raises(errors.CorruptError) as info:
        jaxport.load(path)
    assert info.value.offset == 8 + len(header) + 5
    assert info.value.member == "b"
    assert "gap" in str(info.value)


def test_duplicate_names_refused(tmp_path):
    """The reference keeps the last of two equal names; jaxport refuses."""
    header = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    path = raw_file(tmp_path / "dup.safetensors", header, b"\x01")
    with pytest.raises(errors.CorruptError, match="duplicate"):
        jaxport.load(path)


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"k1": "v", "k2": "\x01\"", "k3": "ü"}])
def test_copy_is_byte_identical(tmp_path, metadata):
    """A safetensors file through jaxport's reader and writer comes out the
    same bytes (metadata keep their order, which safetensors chose)."""
    src = tmp_path / "src.safetensors"
    safetensors.numpy.save_file(numpy_tensors(seed=1), src, metadata=metadata)
    jaxport_copy(src, tmp_path / "out.safetensors")
    assert (tmp_path / "out.safetensors").read_bytes() == src.read_bytes()


def numpy_to_torch(a):
    """The same bytes as a torch tensor (ml_dtypes kinds included)."""
    if a.size == 0:
        return torch.zeros(a.shape, dtype=getattr(torch, a.dtype.name))
    flat = torch.from_numpy(np.ascontiguousarray(a).reshape(-1).view(np.uint8).copy())
    return flat.view(getattr(torch, a.dtype.name)).reshape(a.shape)


@pytest.mark.parametrize("api", ["numpy", "torch"])
def test_written_bytes_equal_safetensors(tmp_path, api):
    """From a torch checkpoint (state-dict order, not safetensors' order),
    jaxport writes what safetensors.<api>.save_file writes."""
    want = tmp_path / "want.safetensors"
    if api == "torch":
        ref = torch_tensors(seed=2)
        safetensors.torch.save_file(ref, want, metadata={"format": "pt"})
    else:
        arrays = numpy_tensors(seed=2)
        ref = {k: numpy_to_torch(a) for k, a in arrays.items()}
        safetensors.numpy.save_file(arrays, want, metadata={"format": "pt"})
    torch.save(ref, tmp_path / "sd.pt")
    jaxport_copy(tmp_path / "sd.pt", tmp_path / "got.safetensors", meta={"format": "pt"})
    assert (tmp_path / "got.safetensors").read_bytes() == want.read_bytes()


# ---------------------------------------------------------------- shards


def state_dict(seed=3):
    """Tensors of several sizes and dtypes, in a non-sorted order; one is
    bigger than the shard limit used below."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(40, 8, generator=gen),            # 1280 bytes: alone
        "layers.1.bias": torch.randn(8, generator=gen),
        "layers.0.weight": torch.randn(8, 8, generator=gen).half(),
        "layers.0.bias": torch.arange(8, dtype=torch.int64),
        "layers.1.weight": torch.randn(8, 8, generator=gen),
        "head.weight": torch.randn(4, 8, generator=gen).to(torch.bfloat16),
        "head.mask": torch.ones(3, dtype=torch.bool),
        "step": torch.tensor(7),
    }


def test_read_huggingface_hub_shards(tmp_path):
    sd = state_dict()
    huggingface_hub.save_torch_state_dict(sd, tmp_path, max_shard_size=300)
    index = tmp_path / "model.safetensors.index.json"
    assert len(set(json.loads(index.read_text())["weight_map"].values())) > 2
    got = jaxport.load(index)
    assert set(got) == set(sd)
    for k, t in sd.items():
        assert got[k].tobytes() == torch_bytes(t), k
    assert jaxport.open_index(index).format == "sharded"


def test_read_transformers_save_pretrained(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    model.save_pretrained(tmp_path, max_shard_size="10KB")
    index = tmp_path / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    assert len(shards) > 1
    got = jaxport.load(index)
    want = {}
    for shard in shards:
        want.update(safetensors.numpy.load_file(tmp_path / shard))
    check_numpy_equal(got, want)
    sd = model.state_dict()
    for k, v in got.items():
        np.testing.assert_array_equal(v, sd[k].numpy())


@pytest.mark.parametrize("limit", [300, 600, 10**9, 100])
def test_sharded_write_equals_huggingface_hub(tmp_path, limit):
    """jaxport's shards and index are byte for byte what
    huggingface_hub.save_torch_state_dict writes for the same state dict and
    max_shard_size (its shards carry {"format": "pt"})."""
    sd = state_dict()
    want_dir, got_dir = tmp_path / "want", tmp_path / "got"
    want_dir.mkdir()
    got_dir.mkdir()
    huggingface_hub.save_torch_state_dict(sd, want_dir, max_shard_size=limit)
    torch.save(sd, tmp_path / "sd.pt")
    jaxport_copy(tmp_path / "sd.pt", got_dir / "model.safetensors", shard_bytes=limit, meta={"format": "pt"})
    want = sorted(p.name for p in want_dir.iterdir())
    assert sorted(p.name for p in got_dir.iterdir()) == want
    for name in want:
        assert (got_dir / name).read_bytes() == (want_dir / name).read_bytes(), name
    if len(want) > 1:
        got = jaxport.load(got_dir / "model.safetensors.index.json")
        for k, t in sd.items():
            assert got[k].tobytes() == torch_bytes(t), k
