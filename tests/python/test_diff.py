"""jaxport diff: two files' tensors compared by name, against numpy's
reading of the same tensors, across formats the real libraries wrote."""

import json
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from test_torch_reader import cli


def diff(*args):
    r = subprocess.run([cli(), "diff", *map(str, args)], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def state():
    torch.manual_seed(0)
    return {"fc.weight": torch.randn(6, 5), "fc.bias": torch.randn(6),
            "conv.weight": torch.randn(4, 3, 3, 3).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),  # strided
            "nan": torch.tensor([float("nan"), 1.0, -0.0]), "steps": torch.tensor(7)}


def test_the_same_tensors_in_three_formats(tmp_path):
    sd = state()
    torch.save(sd, tmp_path / "m.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "m.safetensors")
    status, out, _ = diff(tmp_path / "m.pt", tmp_path / "m.safetensors")
    assert status == 0 and "5 tensors: 5 the same, 0 differ" in out
    # jaxport's own converter, checked by the same tool
    subprocess.run([cli(), "convert", tmp_path / "m.pt", "-o", tmp_path / "m.msgpack", "--quiet"], check=True)
    assert diff(tmp_path / "m.pt", tmp_path / "m.msgpack")[0] == 0
    subprocess.run([cli(), "convert", tmp_path / "m.pt", "-o", tmp_path / "h.msgpack", "--dtype", "bf16", "--quiet"],
                   check=True)
    status, out, _ = diff(tmp_path / "m.pt", tmp_path / "h.msgpack")
    assert status == 1 and "float32 against bfloat16" in out
    # bfloat16 keeps 8 bits: every value within 2**-8 of float32's
    assert diff(tmp_path / "m.pt", tmp_path / "h.msgpack", "--ignore-dtype", "--rtol", 2 ** -8)[0] == 0
    assert diff(tmp_path / "m.pt", tmp_path / "h.msgpack", "--ignore-dtype", "--rtol", 2 ** -12)[0] == 1


def test_what_differs_and_by_how_much(tmp_path):
    a = state()
    b = dict(a)
    b["fc.weight"] = a["fc.weight"].clone()
    b["fc.weight"][2, 3] += 0.125
    b["fc.weight"][4, 1] -= 1e-3
    b["nan"] = torch.tensor([float("nan"), float("nan"), 0.0])  # NaN against 1, and 0 against -0
    b["conv.weight"] = a["conv.weight"][:, :2]
    del b["steps"]
    b["extra"] = torch.zeros(3, dtype=torch.int64)
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    status, out, _ = diff(tmp_path / "a.pt", tmp_path / "b.pt", "--json")
    assert status == 1
    report = json.loads(out)
    rows = {t["name"]: t for t in report["tensors"]}
    assert report["count"] == 6 and report["differ"] == 5 and report["one_side"] == 2
    fc = rows["fc.weight"]
    want = np.abs(a["fc.weight"].double().numpy() - b["fc.weight"].double().numpy())
    assert fc["status"] == "values" and fc["differing"] == 2 and fc["first"] == 2 * 5 + 3
    assert fc["max_abs"] == want.max()
    assert rows["fc.bias"]["same"]
    assert rows["nan"]["status"] == "values" and rows["nan"]["differing"] == 1 and rows["nan"]["first"] == 1
    assert rows["conv.weight"]["status"] == "shape"
    assert rows["steps"]["status"] == "only in A" and rows["extra"]["status"] == "only in B"
    # within a tolerance the small change is the same, the large one not
    status, out, _ = diff(tmp_path / "a.pt", tmp_path / "b.pt", "--atol", "0.01")
    assert status == 1 and "1 of 30 elements differ" in out
    # -0 against 0 is the same value in other bits: a difference only when exact
    c = dict(a, nan=torch.tensor([float("nan"), 1.0, 0.0]))
    torch.save(c, tmp_path / "c.pt")
    status, out, _ = diff(tmp_path / "a.pt", tmp_path / "c.pt")
    assert status == 1 and "same values, other bits" in out
    assert diff(tmp_path / "a.pt", tmp_path / "c.pt", "--atol", "0")[0] == 1
    assert diff(tmp_path / "a.pt", tmp_path / "c.pt", "--rtol", "1e-9")[0] == 0


def test_usage_and_unreadable_files(tmp_path):
    assert diff(tmp_path / "a.pt")[0] == 2
    assert diff("--atol", "-1", "a", "b")[0] == 2
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    torch.save({"x": torch.zeros(1)}, tmp_path / "ok.pt")
    status, _, err = diff(tmp_path / "ok.pt", tmp_path / "bad.pt")
    assert status == 1 and err.startswith("jaxport: ")


def test_a_conversion_against_its_source_through_the_plan(tmp_path):
    # --like: each leaf is made again from the checkpoint (kernels
    # transposed, conv kernels permuted) and compared with the converted file
    import flax.serialization
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(8, (3, 3), name="conv")(x)
            return nn.Dense(4, name="fc")(x.mean(axis=(1, 2)))
    torch.manual_seed(1)
    tm = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(3, 8, 3, padding=1), "fc": torch.nn.Linear(8, 4)})
    torch.save(tm.state_dict(), tmp_path / "m.pt")
    params = Net().init(jax.random.key(0), jnp.zeros((1, 5, 5, 3)))["params"]
    (tmp_path / "t.msgpack").write_bytes(flax.serialization.to_bytes(params))
    like = ["--like", tmp_path / "t.msgpack"]
    subprocess.run([cli(), "convert", tmp_path / "m.pt", *like, "-o", tmp_path / "out.msgpack", "--quiet"], check=True)
    status, out, err = diff(tmp_path / "m.pt", tmp_path / "out.msgpack", *like)
    assert status == 0 and "4 tensors: 4 the same" in out, (out, err)
    # a file from another checkpoint of the same model differs in every leaf
    torch.manual_seed(2)
    other = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(3, 8, 3), "fc": torch.nn.Linear(8, 4)})
    torch.save(other.state_dict(), tmp_path / "o.pt")
    status, out, _ = diff(tmp_path / "o.pt", tmp_path / "out.msgpack", *like, "--json")
    assert status == 1 and {t["status"] for t in json.loads(out)["tensors"]} == {"values"}
    # a template the checkpoint cannot fill: its leaves are reported, not made
    (tmp_path / "wide.json").write_text(json.dumps({"library": "flax", "leaves": [
        {"path": "conv/kernel", "shape": [3, 3, 3, 8], "dtype": "float32"},
        {"path": "conv/bias", "shape": [8], "dtype": "float32"},
        {"path": "fc/kernel", "shape": [8, 4], "dtype": "float32"},
        {"path": "fc/bias", "shape": [4], "dtype": "float32"},
        {"path": "head/kernel", "shape": [4, 2], "dtype": "float32"}]}))
    status, out, _ = diff(tmp_path / "m.pt", tmp_path / "out.msgpack", "--like", tmp_path / "wide.json", "--json")
    rows = {t["name"]: t for t in json.loads(out)["tensors"]}
    assert status == 1 and rows["head/kernel"]["status"] == "unpaired" and "no source" in rows["head/kernel"]["why"]
    assert [n for n, t in rows.items() if t["same"]] == ["conv/kernel", "conv/bias", "fc/kernel", "fc/bias"]
    # the plain name comparison would see nothing in common: the names differ
    status, out, _ = diff(tmp_path / "m.pt", tmp_path / "out.msgpack")
    assert status == 1 and "(8 on one side only)" in out


def test_from_python_a_live_module_against_its_conversions(tmp_path):
    # jaxport.diff: the same report as a dict; a live module and a pytree
    # stand for the checkpoint and the template
    import flax.serialization
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    import jaxport

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4, name="fc")(nn.Conv(8, (3, 3), name="conv")(x).mean(axis=(1, 2)))
    torch.manual_seed(3)
    tm = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(3, 8, 3, padding=1), "fc": torch.nn.Linear(8, 4)})
    params = Net().init(jax.random.key(0), jnp.zeros((1, 5, 5, 3)))["params"]
    for name, dtype in (("f32", None), ("bf16", "bfloat16")):
        (tmp_path / f"{name}.msgpack").write_bytes(flax.serialization.to_bytes(jaxport.convert(tm, params, dtype=dtype)))
    report = jaxport.diff(tm, tmp_path / "f32.msgpack", like=params)
    assert report["same"] and report["count"] == 4 and {t["status"] for t in report["tensors"]} == {"same"}
    report = jaxport.diff(tm, tmp_path / "bf16.msgpack", like=params)
    assert not report["same"] and {t["status"] for t in report["tensors"]} == {"dtype"}
    assert jaxport.diff(tm, tmp_path / "bf16.msgpack", like=params, ignore_dtype=True, rtol=2 ** -8)["same"]
    assert not jaxport.diff(tm, tmp_path / "bf16.msgpack", like=params, ignore_dtype=True, rtol=2 ** -12)["same"]
    # a Plan in place of matching again
    plan = jaxport.match(tm, params)
    assert jaxport.diff(tm, tmp_path / "f32.msgpack", like=params, mapping=plan)["same"]
    # two files by name: a checkpoint against itself
    torch.save(tm.state_dict(), tmp_path / "m.pt")
    report = jaxport.diff(tmp_path / "m.pt", tmp_path / "m.pt")
    assert report["same"] and [t["name"] for t in report["tensors"]][:2] == ["conv.weight", "conv.bias"]
    with pytest.raises(jaxport.JaxportError, match="nope.pt"):
        jaxport.diff(tmp_path / "nope.pt", tmp_path / "m.pt")
    with pytest.raises(ValueError, match="pass like too"):
        jaxport.diff(tmp_path / "m.pt", tmp_path / "m.pt", hints=["a=b"])
