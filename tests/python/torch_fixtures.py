"""PyTorch checkpoints for the reader's tests, made with the real torch.

Every builder writes one file into a folder and returns its path; `build_all`
makes them all. Each case is a shape of file users hand us: plain state
dicts, every dtype torch saves, views and tied weights sharing storages,
transposed tensors, training checkpoints, whole pickled modules, the legacy
format, archives rewritten by other zip tools (deflated, zip64, another
folder name, big-endian byte order) and hostile pickles.

Run as a script to refresh the fuzz seeds:
    python tests/python/torch_fixtures.py fuzz/corpus/torch
"""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

SEED = 7

# Every dtype torch.save writes, with the item size jaxport must report.
DTYPES = {
    torch.float64: 8,
    torch.float32: 4,
    torch.float16: 2,
    torch.bfloat16: 2,
    torch.float8_e4m3fn: 1,
    torch.float8_e5m2: 1,
    torch.float8_e4m3fnuz: 1,
    torch.float8_e5m2fnuz: 1,
    torch.float8_e8m0fnu: 1,
    torch.float4_e2m1fn_x2: 1,
    torch.complex32: 4,
    torch.complex64: 8,
    torch.complex128: 16,
    torch.int64: 8,
    torch.int32: 4,
    torch.int16: 2,
    torch.int8: 1,
    torch.uint8: 1,
    torch.uint16: 2,
    torch.uint32: 4,
    torch.uint64: 8,
    torch.bool: 1,
}


class TorchNet(nn.Module):
    """A small CNN: conv, BatchNorm, ReLU, global mean, Linear (LinenNet in
    jaxfixtures is its Flax twin)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean(dim=(2, 3)))


def randomise_bn(model):
    """model with every BatchNorm's running statistics, scale and shift
    drawn at random (fresh ones are 0 and 1, which hide swapped or dropped
    statistics), in eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return model.eval()


def random_of(dtype, shape, gen):
    """A tensor of `dtype` filled with random bytes (valid bools)."""
    n = DTYPES[dtype]
    count = 1
    for s in shape:
        count *= s
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    raw = torch.randint(0, 256, (count * n,), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)


class Block(nn.Module):
    """A module pickled whole by torch.save(model)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(6)
        self.proj = nn.Linear(6, 6)
        self.register_buffer("scale", torch.full((6,), 0.5))
        self.register_buffer("cache", torch.zeros(3), persistent=False)
        self.register_parameter("unused", None)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.layers = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.bn = nn.BatchNorm1d(6)


def model():
    torch.manual_seed(SEED)
    return Tiny()


def state_dict():
    return model().state_dict()


# ------------------------------------------------------------ plain files


def plain(d):
    p = d / "plain.pt"
    torch.save(state_dict(), p)
    return p


def dtypes(d):
    gen = torch.Generator().manual_seed(SEED)
    sd = {str(dt).removeprefix("torch."): random_of(dt, (3, 4), gen) for dt in DTYPES}
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    p = d / "dtypes.pt"
    torch.save(sd, p)
    return p


def views(d):
    gen = torch.Generator().manual_seed(SEED)
    base = torch.randn(6, 4, generator=gen)
    cube = torch.randn(2, 3, 4, generator=gen)
    sd = {
        "base": base,
        "row": base[1],            # offset 4, contiguous
        "col": base[:, 2],         # offset 2, stride 4
        "rows": base[2:5],         # offset 8
        "flat": base.view(-1),
        "t": base.t(),             # transposed
        "every_other": base[::2, 1::2],
        "cube": cube,
        "perm": cube.permute(2, 0, 1),
        "alone": torch.arange(10.0)[3:7],  # a slice saved without its base
    }
    p = d / "views.pt"
    torch.save(sd, p)
    return p


def training(d):
    m = model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss = m.head(m.embed(torch.tensor([1, 2]))).sum()
    loss.backward()
    opt.step()
    ckpt = {
        "epoch": 3,
        "step": 1200,
        "lr": 0.001,
        "name": "run-7",
        "best": None,
        "history": [0.5, 0.25],
        "model": m.state_dict(),
        "optimizer": opt.state_dict(),
    }
    p = d / "training.pt"
    torch.save(ckpt, p)
    return p


def module(d):
    p = d / "module.pt"
    torch.save(model(), p)
    return p


def unimportable_module(d):
    """torch.save(model) of a class whose module no longer exists, so only a
    reader that never imports can get at the tensors. Returns the path and
    the model's state dict."""
    name = "jaxport_fixture_gone"
    mod = type(sys)(name)
    cls = type("Gone", (nn.Module,), {"__module__": name})
    mod.Gone = cls
    sys.modules[name] = mod
    try:
        torch.manual_seed(SEED)
        m = cls()
        m.inner = nn.Linear(3, 2)
        m.register_buffer("steps", torch.tensor(5))
        p = d / "gone.pt"
        torch.save(m, p)
    finally:
        del sys.modules[name]
    return p, m.state_dict()


def legacy(d):
    gen = torch.Generator().manual_seed(SEED)
    base = torch.randn(4, 5, generator=gen)
    sd = {
        "base": base,
        "t": base.t(),
        "row": base[2],
        "half": torch.randn(3, generator=gen).half(),
        "bf16": torch.randn(3, generator=gen).bfloat16(),
        "long": torch.arange(4),
        "mask": torch.tensor([True, False, True]),
        "model": state_dict(),
    }
    p = d / "legacy.pt"
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    return p


def legacy_module(d):
    p = d / "legacy_module.pt"
    torch.save(model(), p, _use_new_zipfile_serialization=False)
    return p


# ------------------------------------------------------------ rewritten archives


def _rewrite(src, dst, *, compression=zipfile.ZIP_STORED, rename=None, transform=None):
    """Copy a torch zip member by member with Python's zipfile."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            name = info.filename
            if rename:
                name = rename + name[name.index("/"):]
            if transform:
                data = transform(name, data)
            zout.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return dst


def deflated(d):
    src = views(d)
    return _rewrite(src, d / "deflated.pt", compression=zipfile.ZIP_DEFLATED)


def renamed(d):
    return _rewrite(plain(d), d / "renamed.pt", rename="my-model_v2")


def zip64(d):
    """Zip64 end records and extra fields in every header, forced small."""
    saved = (zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT)
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 1, 1
    try:
        return _rewrite(views(d), d / "zip64.pt")
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved


def big_endian(d):
    """An archive as a big-endian machine writes it: byteorder 'big' and every
    storage's elements byte-swapped (complex numbers half by half). One dtype
    per file keeps the storages' element sizes known."""
    gen = torch.Generator().manual_seed(SEED)
    paths = []
    for dt, swap in [(torch.float32, 4), (torch.float64, 8), (torch.int16, 2),
                     (torch.complex64, 4), (torch.bfloat16, 2)]:
        base = random_of(dt, (4, 3), gen)
        name = str(dt).removeprefix("torch.")
        src = d / f"little_{name}.pt"
        torch.save({"w": base, "t": base.t(), "row": base[1]}, src)

        def swapped(member, data, swap=swap):
            if member.endswith("/byteorder"):
                return b"big"
            if "/data/" not in member:
                return data
            return b"".join(data[i:i + swap][::-1] for i in range(0, len(data), swap))

        paths.append(_rewrite(src, d / f"big_{name}.pt", transform=swapped))
    return paths


# ------------------------------------------------------------ hostile pickles


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def hostile(d, marker):
    """Checkpoints that would run code under torch.load(weights_only=False):
    each would create `marker`. Returns {name: path}."""
    import builtins

    cmd = f"touch {marker}"
    cases = {
        "os_system": _Reduce(os.system, (cmd,)),
        "eval": _Reduce(builtins.eval, (f"open({str(marker)!r}, 'w').close()",)),
        "popen": _Reduce(subprocess.Popen, (["touch", str(marker)],)),
    }
    out = {}
    for name, payload in cases.items():
        p = d / f"hostile_{name}.pt"
        torch.save({"w": torch.arange(4.0), "payload": payload}, p)
        out[name] = p
    p = d / "hostile_legacy.pt"
    torch.save({"w": torch.arange(4.0), "payload": cases["os_system"]}, p,
               _use_new_zipfile_serialization=False)
    out["legacy"] = p
    return out


# ------------------------------------------------------------ all of them


def build_all(d):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "plain": plain(d),
        "dtypes": dtypes(d),
        "views": views(d),
        "training": training(d),
        "module": module(d),
        "legacy": legacy(d),
        "legacy_module": legacy_module(d),
        "deflated": deflated(d),
        "renamed": renamed(d),
        "zip64": zip64(d),
    }
    for p in big_endian(d):
        files[p.stem] = p
    return files


def write_seeds(folder):
    """Small real files for the fuzz corpus (each under 20 KB)."""
    import tempfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        picks = [views(tmp), legacy(tmp), deflated(tmp), zip64(tmp), big_endian(tmp)[3],
                 hostile(tmp, tmp / "never")["os_system"], unimportable_module(tmp)[0]]
        gen = torch.Generator().manual_seed(SEED)
        small = {str(dt).removeprefix("torch."): random_of(dt, (2,), gen) for dt in DTYPES}
        torch.save(small, tmp / "dtypes_small.pt")
        picks.append(tmp / "dtypes_small.pt")
        for p in picks:
            data = p.read_bytes()
            assert len(data) < 20_000, (p, len(data))
            (folder / p.name).write_bytes(data)


if __name__ == "__main__":
    write_seeds(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus/torch")
