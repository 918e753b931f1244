"""`jaxport convert` and `jaxport.save`, checked against the libraries that
read and write each format: torch.save files converted and read back by
flax.serialization and equinox; jaxport.save's bytes against
flax.serialization.to_bytes and eqx.tree_serialise_leaves; failures and
Ctrl-C leave no file."""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import equinox as eqx
import flax.serialization
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import jaxport
from jaxport import errors
from jaxfixtures import cli_tool, mlp, model_with_state, param_tree, write_eqx


def convert(*args, check=True):
    r = subprocess.run([cli_tool(), "convert", *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)
        self.head = torch.nn.Linear(10, 2, bias=False)


@pytest.fixture
def state(tmp_path):
    torch.manual_seed(0)
    net = Net()
    net.bn.running_mean.uniform_()
    sd = net.state_dict()
    # A transposed view and a half-precision tensor next to the module's own.
    sd["fc_t"] = net.fc.weight.detach().t()
    sd["half"] = torch.randn(4, 5).half()
    sd["mask"] = torch.tensor([True, False, True])
    torch.save(sd, tmp_path / "x.pt")
    return sd


def _files(d):
    return sorted(p.name for p in Path(d).iterdir())


def test_pt_to_msgpack(tmp_path, state):
    r = convert(tmp_path / "x.pt", "-o", tmp_path / "y.msgpack", "--json")
    summary = json.loads(r.stdout)
    assert summary["tensors"] == len(state)
    assert summary["bytes_out"] == sum(t.numel() * t.element_size() for t in state.values())
    got = flax.serialization.msgpack_restore((tmp_path / "y.msgpack").read_bytes())
    assert list(got) == list(state)
    for name, t in state.items():
        assert got[name].dtype == t.numpy().dtype, name
        np.testing.assert_array_equal(got[name], t.numpy(), err_msg=name)


def test_pt_to_msgpack_bf16(tmp_path, state):
    convert(tmp_path / "x.pt", "-o", tmp_path / "y.msgpack", "--dtype", "bf16", "--quiet")
    got = flax.serialization.msgpack_restore((tmp_path / "y.msgpack").read_bytes())
    for name, t in state.items():
        if t.is_floating_point():
            want = t.to(torch.bfloat16).view(torch.int16).numpy()
            assert got[name].dtype == ml_dtypes.bfloat16, name
            np.testing.assert_array_equal(got[name].view(np.int16), want, err_msg=name)
        else:  # integers and bools are left as they are
            assert got[name].dtype == t.numpy().dtype, name
            np.testing.assert_array_equal(got[name], t.numpy(), err_msg=name)


def test_pt_to_eqx(tmp_path, state):
    convert(tmp_path / "x.pt", "-o", tmp_path / "y.eqx", "--dtype", "f32", "--quiet")
    # numpy leaves: Equinox reads them back as numpy, int64 included.
    like = [np.zeros(t.shape, np.float32 if t.is_floating_point() else t.numpy().dtype)
            for t in state.values()]
    got = eqx.tree_deserialise_leaves(tmp_path / "y.eqx", like)
    for (name, t), g in zip(state.items(), got):
        want = t.float().numpy() if t.is_floating_point() else t.numpy()
        np.testing.assert_array_equal(np.asarray(g), want, err_msg=name)


def test_msgpack_to_eqx_is_equinox(tmp_path):
    """A .eqx written by Equinox, through msgpack and back: Equinox's bytes."""
    model = mlp(seed=3)
    want = write_eqx(tmp_path / "m.eqx", model)
    convert(tmp_path / "m.eqx", "-o", tmp_path / "m.msgpack", "--quiet")
    convert(tmp_path / "m.msgpack", "-o", tmp_path / "back.eqx", "--quiet")
    assert (tmp_path / "back.eqx").read_bytes() == want


def test_summary_text(tmp_path, state):
    r = convert(tmp_path / "x.pt", "-o", tmp_path / "y.msgpack")
    assert r.stdout.startswith(f"{tmp_path / 'x.pt'} -> {tmp_path / 'y.msgpack'}: {len(state)} tensors")
    assert r.stderr == ""  # not a terminal: no progress bar


def test_failures_leave_no_file(tmp_path, state):
    # An input that is no checkpoint.
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    r = convert(tmp_path / "bad.pt", "-o", tmp_path / "out.msgpack", check=False)
    assert r.returncode == 1 and r.stderr.startswith("jaxport: ")
    # An output folder that cannot be written.
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = convert(tmp_path / "x.pt", "-o", ro / "y.msgpack", check=False)
        if os.geteuid() != 0:  # root writes anyway
            assert r.returncode == 1 and "cannot create a temporary file" in r.stderr
            assert _files(ro) == []
    finally:
        ro.chmod(0o755)
    # A name flax cannot nest: "a" both a tensor and a map.
    torch.save({"a": torch.zeros(2), "a/b": torch.ones(2)}, tmp_path / "clash.pt")
    r = convert(tmp_path / "clash.pt", "-o", tmp_path / "clash.msgpack", check=False)
    assert r.returncode == 1
    # The output is the input.
    before = (tmp_path / "x.pt").read_bytes()
    r = convert(tmp_path / "x.pt", "-o", tmp_path / "x.pt", "--format", "msgpack", check=False)
    assert r.returncode == 1 and "the output is the input" in r.stderr
    assert (tmp_path / "x.pt").read_bytes() == before
    assert _files(tmp_path) == ["bad.pt", "clash.pt", "ro", "x.pt"]


@pytest.mark.parametrize("args", [[], ["-o"], ["x.pt"], ["x.pt", "-o", "y.msgpack", "--dtype", "i8"],
                                  ["x.pt", "-o", "y.msgpack", "--shard-size", "5GB"],
                                  ["x.pt", "-o", "y.safetensors", "--shard-size", "lots"],
                                  ["x.pt", "-o", "y.msgpack", "--format", "pickle"]])
def test_usage(tmp_path, args):
    assert convert(*args, check=False).returncode == 2


def test_sigint_leaves_no_file(tmp_path):
    """Ctrl-C during a ~300 MB conversion: exit 130, no output, no
    temporary file, the input untouched."""
    big = tmp_path / "big.pt"
    torch.save({"w": torch.ones(75_000_000)}, big)
    digest = hashlib.sha1(big.read_bytes()).hexdigest()
    out = tmp_path / "out" / "big.msgpack"
    out.parent.mkdir()
    p = subprocess.Popen([cli_tool(), "convert", big, "-o", out, "--dtype", "f64", "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not any(out.parent.iterdir()) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err
    assert _files(out.parent) == []
    assert hashlib.sha1(big.read_bytes()).hexdigest() == digest


# ---------------------------------------------------------------- jaxport.save


def test_save_msgpack_is_flax(tmp_path):
    tree = param_tree(seed=2)
    jaxport.save(tree, tmp_path / "p.msgpack")
    assert (tmp_path / "p.msgpack").read_bytes() == flax.serialization.to_bytes(tree)
    # save(load(f)) gives the same bytes back.
    jaxport.save(jaxport.load(tmp_path / "p.msgpack"), tmp_path / "q.msgpack")
    assert (tmp_path / "q.msgpack").read_bytes() == flax.serialization.to_bytes(tree)


def test_save_strided_and_jax_arrays(tmp_path):
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    tree = {"t": base.T, "rev": base[::-1, ::2], "j": jnp.arange(5, dtype=jnp.int16), "s": np.float64(2.5)}
    jaxport.save(tree, tmp_path / "s.msgpack")
    got = flax.serialization.msgpack_restore((tmp_path / "s.msgpack").read_bytes())
    for k, v in tree.items():
        np.testing.assert_array_equal(got[k], np.asarray(v), err_msg=k)
        assert got[k].dtype == np.asarray(v).dtype
    want = {k: np.ascontiguousarray(v) for k, v in tree.items() if k != "s"}
    want["s"] = np.asarray(2.5)
    assert (tmp_path / "s.msgpack").read_bytes() == flax.serialization.to_bytes(want)


def test_save_dtype_casts_floats_only(tmp_path):
    tree = {"w": np.linspace(-3, 3, 7, dtype=np.float32), "h": np.ones(2, np.float16),
            "i": np.arange(3, dtype=np.int32), "m": np.array([True])}
    jaxport.save(tree, tmp_path / "c.msgpack", dtype=jnp.bfloat16)
    got = flax.serialization.msgpack_restore((tmp_path / "c.msgpack").read_bytes())
    assert {k: v.dtype.name for k, v in got.items()} == {"w": "bfloat16", "h": "bfloat16", "i": "int32", "m": "bool"}
    np.testing.assert_array_equal(got["w"], tree["w"].astype(ml_dtypes.bfloat16))
    with pytest.raises(ValueError, match="floats are cast"):
        jaxport.save(tree, tmp_path / "c.msgpack", dtype="int8")


@pytest.mark.parametrize("which", ["mlp", "state"])
def test_save_eqx_is_equinox(tmp_path, which):
    tree = mlp(seed=1) if which == "mlp" else model_with_state(seed=2)
    want = write_eqx(tmp_path / "want.eqx", tree)
    jaxport.save(tree, tmp_path / "m.eqx")
    assert (tmp_path / "m.eqx").read_bytes() == want
    back = eqx.tree_deserialise_leaves(tmp_path / "m.eqx", tree)
    for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(tree)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_errors_leave_no_file(tmp_path):
    with pytest.raises(TypeError, match="bad: numpy dtype <U3|bad: numpy dtype str"):
        jaxport.save({"ok": np.ones(2), "bad": np.array(["abc"])}, tmp_path / "e.msgpack")
    with pytest.raises(ValueError, match="metadata"):
        jaxport.save({"ok": np.ones(2)}, tmp_path / "e.msgpack", metadata={"a": "b"})
    with pytest.raises(errors.UnsupportedError, match="no writer"):
        jaxport.save({"ok": np.ones(2)}, tmp_path / "e.txt")
    with pytest.raises(errors.ArgumentError):  # "a" is a tensor and a map
        jaxport.save({"a": np.ones(2), "a/b": np.ones(2)}, tmp_path / "e.msgpack")
    assert _files(tmp_path) == []


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_pt_to_npz_and_safetensors_whatever_the_threads(tmp_path, ext):
    """Big pieces' checksums are spread over threads (npz); the bytes must not
    depend on how many."""
    import zipfile
    sd = {"big": torch.randn(700, 1000), "t": torch.randn(300, 200).t(), "i": torch.arange(10)}
    torch.save(sd, tmp_path / "x.pt")
    outs = []
    for threads in ("1", "2", "3"):
        out = tmp_path / f"y{threads}.{ext}"
        convert(tmp_path / "x.pt", "-o", out, "--threads", threads, "--quiet")
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    if ext == "npz":
        assert zipfile.ZipFile(tmp_path / "y2.npz").testzip() is None
        got = np.load(tmp_path / "y2.npz")
    else:
        from safetensors.numpy import load_file
        got = load_file(tmp_path / "y2.safetensors")
    for name, t in sd.items():
        np.testing.assert_array_equal(got[name], t.numpy(), err_msg=name)
