"""The PyTorch reader against torch itself: every tensor jaxport reads must be
byte-identical to what torch.load returns, with the same shape and strides,
named as torch names it; hostile files must be refused without running
anything; broken files must fail with a jaxport error, never a crash."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import jaxport
from jaxport import errors

sys.path.insert(0, str(Path(__file__).parent))
import torch_fixtures as F  # noqa: E402


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    return F.build_all(tmp_path_factory.mktemp("torch"))


def flatten(obj):
    """torch.load's result as {dotted name: tensor}, named the way jaxport
    names it: dict keys and sequence indices joined by dots, modules by their
    state_dict()."""
    out = {}

    def walk(o, path):
        if isinstance(o, torch.Tensor):
            out[path] = o
        elif isinstance(o, torch.nn.Module):
            for k, v in o.state_dict().items():
                out[f"{path}.{k}" if path else k] = v
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{path}.{i}" if path else str(i))

    walk(obj, "")
    return out


def torch_bytes(t):
    """Row-major bytes of t, gathered from its storage by its offset and
    strides, so every dtype (float4 and complex32 included) compares."""
    isz = t.element_size()
    if t.numel() == 0:
        return b""
    store = torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()).numpy()
    view = np.lib.stride_tricks.as_strided(
        store[t.storage_offset() * isz:],
        shape=tuple(t.shape) + (isz,),
        strides=tuple(s * isz for s in t.stride()) + (1,),
    )
    return view.tobytes()


# Byte-level dtypes for what numpy cannot hold (packed fp4).
RAW = {**jaxport.io.numpy_dtypes(), "float4_e2m1fn_x2": np.dtype(np.uint8)}


def check_same(path, ref, **kw):
    """Every tensor of `ref` (torch's names and tensors) read by jaxport:
    same names in the same order, shapes, strides, dtypes and bytes."""
    ix = jaxport.open_index(path, **kw)
    arrays = ix.arrays(RAW)
    info = {t["name"]: t for t in ix.tensors()}
    assert list(arrays) == list(ref)
    for name, t in ref.items():
        a = arrays[name]
        assert a.shape == tuple(t.shape), name
        assert info[name]["strides"] == tuple(t.stride()), name
        assert info[name]["dtype"] == str(t.dtype).removeprefix("torch."), name
        assert a.tobytes() == torch_bytes(t), name
        assert not a.flags.writeable
    return ix, arrays


@pytest.mark.parametrize("case", ["plain", "dtypes", "views", "training", "legacy", "deflated",
                                  "renamed", "zip64"])
def test_same_as_torch(files, case):
    ref = flatten(torch.load(files[case], weights_only=True))
    check_same(files[case], ref)


@pytest.mark.parametrize("case", ["module", "legacy_module"])
def test_whole_module_named_as_state_dict(files, case):
    ref = torch.load(files[case], weights_only=False).state_dict()
    ix, _ = check_same(files[case], dict(ref))
    kinds = {f["global"]: f["kind"] for f in ix.findings()}
    assert kinds["torch_fixtures.Block"] == "import"
    assert "call" not in kinds.values()


def test_module_read_without_its_class(tmp_path):
    path, ref = F.unimportable_module(tmp_path)
    with pytest.raises(ModuleNotFoundError):
        torch.load(path, weights_only=False)
    check_same(path, dict(ref))


def test_big_endian_archives(files):
    bigs = [k for k in files if k.startswith("big_")]
    assert len(bigs) == 5
    for k in bigs:
        ref = flatten(torch.load(files[k], weights_only=True))
        ix, _ = check_same(files[k], ref)
        assert all(t["owned"] for t in ix.tensors())
    ix = jaxport.open_index(files["deflated"])
    assert all(t["owned"] for t in ix.tensors())
    assert not any(t["owned"] for t in jaxport.open_index(files["views"]).tensors())


def test_views_share_the_mapping(files):
    a = jaxport.load(files["views"])
    assert np.shares_memory(a["base"], a["row"])
    assert np.shares_memory(a["base"], a["t"])
    assert np.shares_memory(a["cube"], a["perm"])
    assert a["t"].strides == (4, 16)
    info = {t["name"]: t for t in jaxport.open_index(files["views"]).tensors()}
    assert info["base"]["shared"] and not info["alone"]["shared"]
    assert not info["t"]["contiguous"] and info["row"]["contiguous"]
    # Arrays keep the file mapped after the index object is gone.
    row = jaxport.load(files["views"])["row"]
    assert row.tobytes() == a["row"].tobytes()


def test_tied_weights(files):
    a = jaxport.load(files["plain"])
    assert np.shares_memory(a["embed.weight"], a["head.weight"])


def test_training_checkpoint_values(files):
    meta = jaxport.open_index(files["training"]).meta()
    assert meta["epoch"] == "3"
    assert meta["lr"] == "0.001"
    assert meta["name"] == "'run-7'"
    assert meta["best"] == "None"
    assert meta["history"] == "[0.5, 0.25]"
    assert meta["optimizer.param_groups.0.betas"] == "(0.9, 0.999)"
    assert "model.layers.0.proj.weight" in jaxport.load(files["training"])


def test_load_returns_numpy_dtypes(files):
    a = jaxport.load(files["views"])
    assert a["base"].dtype == np.float32
    ix = jaxport.open_index(files["dtypes"])
    with pytest.raises(errors.DtypeError, match="float4_e2m1fn_x2"):
        jaxport.load(files["dtypes"])
    arrays = ix.arrays(RAW)
    assert arrays["bfloat16"].dtype.name == "bfloat16"
    assert arrays["complex32"].dtype.name == "complex32"
    ref = torch.load(files["dtypes"], weights_only=True)
    np.testing.assert_array_equal(arrays["float64"], ref["float64"].numpy())
    np.testing.assert_array_equal(arrays["bool"], ref["bool"].numpy())
    np.testing.assert_array_equal(arrays["bfloat16"].astype(np.float32),
                                  ref["bfloat16"].float().numpy())


# ------------------------------------------------------------ hostile files

# The GLOBAL opcode each file holds (protocol 2 writes Python 2 module names,
# which the unpickler maps back: __builtin__ is builtins, commands is
# subprocess) and the names a report may give it.
GLOBALS = {
    "os_system": (b"cposix\nsystem\n", ("posix.system",)),
    "eval": (b"c__builtin__\neval\n", ("builtins.eval", "__builtin__.eval")),
    "popen": (b"ccommands\nPopen\n", ("subprocess.Popen", "commands.Popen")),
    "legacy": (b"cposix\nsystem\n", ("posix.system",)),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "ran"
    return F.hostile(d, marker), marker


@pytest.mark.parametrize("case", list(GLOBALS))
def test_hostile_refused(hostile, case):
    paths, marker = hostile
    path = paths[case]
    data = path.read_bytes()
    with pytest.raises(errors.UnsafeError) as info:
        jaxport.load(path)
    opcode, names = GLOBALS[case]
    msg = str(info.value)
    assert any(n in msg for n in names) and "would run code under torch.load" in msg
    assert msg.startswith(str(path))
    assert info.value.offset == data.index(opcode)
    arrays = jaxport.load(path, allow_unsafe=True)
    assert list(arrays) == ["w"]
    np.testing.assert_array_equal(arrays["w"], np.arange(4.0, dtype=np.float32))
    found = jaxport.open_index(path, allow_unsafe=True).findings()
    assert any(f["global"] in names and f["kind"] in ("call", "denied") for f in found)
    assert not marker.exists()


def test_hostile_fixture_really_runs_code(tmp_path):
    """The fixture is not a dud: torch.load(weights_only=False) runs it."""
    marker = tmp_path / "ran"
    path = F.hostile(tmp_path, marker)["os_system"]
    jaxport.load(path, allow_unsafe=True)
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------ broken files


@pytest.mark.parametrize("case", ["views", "legacy", "deflated", "zip64"])
def test_truncated_files_fail_cleanly(files, tmp_path, case):
    data = files[case].read_bytes()
    cuts = sorted(set(range(0, len(data), max(1, len(data) // 50))) |
                  set(range(max(0, len(data) - 40), len(data))))
    p = tmp_path / "cut.pt"
    for n in cuts:
        p.write_bytes(data[:n])
        with pytest.raises(errors.JaxportError) as info:
            jaxport.load(p)
        assert str(p) in str(info.value)


@pytest.mark.parametrize("case", ["views", "legacy", "deflated", "module"])
def test_corrupted_files_never_crash(files, tmp_path, case):
    data = files[case].read_bytes()
    rng = random.Random(case)
    p = tmp_path / "bad.pt"
    failures = 0
    for _ in range(250):
        b = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 8])):
            b[rng.randrange(len(b))] = rng.randrange(256)
        p.write_bytes(b)
        try:
            jaxport.load(p, allow_unsafe=rng.random() < 0.5)
        except errors.JaxportError:
            failures += 1
    assert failures > 0


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.zip"
    import zipfile

    with zipfile.ZipFile(p, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(errors.FormatError, match="not in a folder"):
        jaxport.load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a/notes.txt", "hello")
    with pytest.raises(errors.FormatError, match="a/data.pkl"):
        jaxport.load(p)


# ------------------------------------------------------------ the CLI


def cli():
    from jaxport.align import executable
    return executable()


def run_cli(*args):
    return subprocess.run([cli(), "inspect", *map(str, args)], capture_output=True, text=True)


def test_cli_table(files):
    r = run_cli(files["training"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(line for line in lines if line.startswith("model.embed.weight "))
    assert row.split()[:4] == ["model.embed.weight", "float32", "[10,", "6]"]
    assert row.split()[4:] == ["240", "shared"]
    assert "20 tensors, 1548 bytes (0.0 MiB), 19 storages" in r.stdout
    assert "  epoch = 3" in lines and "  name = 'run-7'" in lines
    r = run_cli(files["views"])
    assert next(line for line in r.stdout.splitlines() if line.startswith("t ")).split()[-2:] == \
        ["view", "shared"]


def test_cli_json(files):
    r = run_cli("--json", files["training"])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ref = flatten(torch.load(files["training"], weights_only=True))
    assert [t["name"] for t in doc["tensors"]] == list(ref)
    for t in doc["tensors"]:
        assert t["shape"] == list(ref[t["name"]].shape)
        assert t["strides"] == list(ref[t["name"]].stride())
        assert t["bytes"] == ref[t["name"]].numel() * ref[t["name"]].element_size()
    assert doc["totals"] == {"tensors": len(ref), "bytes": 1548, "storages": 19}
    assert doc["meta"]["lr"] == "0.001"
    assert doc["format"] == "torch-zip" and doc["findings"] == []
    doc = json.loads(run_cli("--json", files["module"]).stdout)
    assert {"kind": "import", "global": "torch_fixtures.Block"} in \
        [{k: f[k] for k in ("kind", "global")} for f in doc["findings"]]


def test_cli_unsafe(hostile):
    paths, marker = hostile
    r = run_cli(paths["os_system"])
    assert r.returncode == 1
    assert "posix.system is not allowed" in r.stderr and "--allow-unsafe" in r.stderr
    assert r.stdout == ""
    r = run_cli("--allow-unsafe", paths["os_system"])
    assert r.returncode == 0
    assert "posix.system" in r.stdout and r.stdout.splitlines()[2].startswith("name")
    doc = json.loads(run_cli("--json", "--allow-unsafe", paths["os_system"]).stdout)
    assert doc["findings"][0]["global"] == "posix.system"
    assert [t["name"] for t in doc["tensors"]] == ["w"]
    assert not marker.exists()


def test_cli_usage():
    assert run_cli().returncode == 2
    assert run_cli("--bogus", "x").returncode == 2


# ---- torch.export archives (torch.export.save): raw weights and JSON, no pickle

class Exported(torch.nn.Module):
    """Tied weights, a transposed parameter, bfloat16, batch statistics and a
    non-persistent buffer (which torch.export keeps as a constant)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 6)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight
        self.t = torch.nn.Parameter(torch.randn(5, 7).t())
        self.h = torch.nn.Parameter(torch.randn(4, 4).to(torch.bfloat16))
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x, ids):
        y = self.bn(self.conv(x)).mean() * self.scale + self.t.sum() + self.h.float().sum()
        return self.head(self.emb(ids)) + y


def export(model, args, path):
    import warnings
    ep = torch.export.export(model.eval(), args)
    with warnings.catch_warnings():  # torch's note that tied weights share one file
        warnings.filterwarnings("ignore", "No complete tensor found")
        torch.export.save(ep, path)
    return ep


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pt2") / "m.pt2"
    ep = export(F.randomise_bn(Exported()), (torch.randn(1, 3, 8, 8), torch.tensor([[1, 2]])), path)
    return path, {**ep.state_dict, **ep.constants}


def test_torch_export_archive_as_torch_exported_it(pt2):
    path, ref = pt2
    ix = jaxport.open_index(path)
    assert ix.format == "torch-export"
    names = [t["name"] for t in ix.tensors()]
    assert sorted(names) == sorted(ref)
    check_same(path, {n: ref[n] for n in names})
    a = jaxport.load(path)
    assert np.shares_memory(a["emb.weight"], a["head.weight"])
    info = {t["name"]: t for t in ix.tensors()}
    assert info["emb.weight"]["shared"] and not info["t"]["contiguous"]


def test_torch_export_archive_of_two_models(tmp_path):
    from torch.export.pt2_archive._package import package_pt2
    torch.manual_seed(2)
    enc, dec = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    eps = {"enc": torch.export.export(enc.eval(), (torch.zeros(1, 3),)),
           "dec": torch.export.export(dec.eval(), (torch.zeros(1, 4),))}
    package_pt2(tmp_path / "two.pt2", exported_programs=eps)
    ref = {f"{m}/{k}": v for m, ep in eps.items() for k, v in ep.state_dict.items()}
    names = [t["name"] for t in jaxport.open_index(tmp_path / "two.pt2").tensors()]
    assert sorted(names) == sorted(ref)
    check_same(tmp_path / "two.pt2", {n: ref[n] for n in names})


def test_torch_export_archive_converts(tmp_path):
    """A CNN exported by torch.export, converted into Flax from the archive
    and checked by outputs."""
    import jax
    import jax.numpy as jnp
    from jaxfixtures import LinenNet

    torch.manual_seed(1)
    tm = F.randomise_bn(F.TorchNet()).eval()
    x = torch.randn(2, 3, 6, 6)
    ep = export(tm, (x,), tmp_path / "net.pt2")
    like = LinenNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    with torch.no_grad():
        want = tm(x).numpy()
    # From the archive, and from the ExportedProgram itself.
    for src in (tmp_path / "net.pt2", ep):
        variables = jaxport.convert(src, like)
        got = LinenNet().apply(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def _edit_config(name, data, edit):
    if not name.endswith("_weights_config.json"):
        return data
    doc = json.loads(data)
    edit(doc["config"])
    return json.dumps(doc).encode()


@pytest.mark.parametrize("case, error, words", [
    ("pickled", errors.UnsupportedError, "saved with pickle"),
    ("symbolic", errors.UnsupportedError, "is symbolic"),
    ("sparse", errors.UnsupportedError, "not strided"),
    ("dtype", errors.DtypeError, "ScalarType 99"),
    ("no member", errors.CorruptError, "has no member"),
    ("past the end", errors.CorruptError, "needs bytes up to"),
    ("not json", errors.CorruptError, "not valid JSON"),
    ("not pt2", errors.FormatError, "not a torch.export file"),
    ("big endian", errors.UnsupportedError, "byte order"),
])
def test_torch_export_archive_refused(pt2, tmp_path, case, error, words):
    path, _ = pt2

    def meta(c):
        return c["conv.weight"]["tensor_meta"]

    edits = {
        "pickled": lambda c: c["conv.weight"].update(use_pickle=True),
        "symbolic": lambda c: meta(c)["sizes"].__setitem__(0, {"as_expr": {"expr_str": "s0"}}),
        "sparse": lambda c: meta(c).update(layout=1),
        "dtype": lambda c: meta(c).update(dtype=99),
        "no member": lambda c: c["conv.weight"].update(path_name="weight_99"),
        "past the end": lambda c: meta(c).update(storage_offset={"as_int": 1}),
    }

    def transform(name, data):
        if case in edits:
            return _edit_config(name, data, edits[case])
        if case == "not json" and name.endswith("_weights_config.json"):
            return data[:-2]
        if case == "not pt2" and name.endswith("/archive_format"):
            return b"pt3"
        if case == "big endian" and name.endswith("/byteorder"):
            return b"big"
        return data

    bad = F._rewrite(path, tmp_path / "bad.pt2", transform=transform)
    with pytest.raises(error, match=words):
        jaxport.load(bad)
