"""Conversion time and memory: `jaxport convert` against `cp` of the same
file and against the Python a user would write today (torch.load, .numpy(),
then flax.serialization.to_bytes / eqx.tree_serialise_leaves /
safetensors.numpy.save_file / np.savez).

Builds a .pt of 4096x4096 float32 linears (64 MiB each) under --dir with
torch.save, warms the page cache, then runs every route in its own process
(cp and jaxport in --repeat rounds, taking turns; the best time counts; the
slow Python routes once), and prints the time, the throughput, the ratios to cp
and to the Python route of the same format, the peak RSS (VmHWM) and the
peak anonymous RSS (RssAnon) of its processes, sampled from /proc every few
milliseconds. jaxport makes its output durable (fsync before the
rename), so every route is timed up to an fsync of its output as well.
jaxport's formats are those its build has writers for, found by trying.

    python bench/convert.py --gb 1 --dir /tmp/jpbench
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024

PY_ROUTE = r"""
import os, sys
fmt, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
import numpy as np, torch
state = torch.load(src, weights_only=True, map_location="cpu")
arrays = {k: v.numpy() for k, v in state.items()}
if fmt == "msgpack":
    import flax.serialization
    with open(out, "wb") as f:
        f.write(flax.serialization.to_bytes(arrays))
elif fmt == "eqx":
    import equinox as eqx
    eqx.tree_serialise_leaves(out, list(arrays.values()))
elif fmt == "safetensors":
    from safetensors.numpy import save_file
    save_file(arrays, out)
elif fmt == "npz":
    np.savez(out, **arrays)
fd = os.open(out, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
"""

FORMATS = ["msgpack", "eqx", "safetensors", "npz"]


def jaxport_cli():
    here = Path(__file__).resolve().parents[1]
    for p in (here / "build" / "cli" / "jaxport", shutil.which("jaxport")):
        if p and Path(p).exists():
            return str(p)
    sys.exit("jaxport is not built (meson setup build && ninja -C build)")


def build(path, gb):
    """torch.save of n linears, in a child so this process stays small."""
    n = max(1, round(gb * 1024 / 64))
    code = (
        "import sys, torch\n"
        "g = torch.Generator().manual_seed(0)\n"
        f"sd = {{f'layers.{{i}}.weight': torch.empty(4096, 4096).uniform_(generator=g) for i in range({n})}}\n"
        f"sd.update({{f'layers.{{i}}.bias': torch.zeros(4096) for i in range({n})}})\n"
        "torch.save(sd, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return n


def warm(path):
    with open(path, "rb") as f:
        while f.read(64 * MIB):
            pass


def _tree(pid):
    """pid and its descendants, from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _status(pid):
    got = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmHWM", "RssAnon"):
                    got[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return got


def measure(cmd):
    """(seconds, peak RSS, peak anonymous RSS, returncode) of cmd: the
    largest VmHWM and RssAnon any process of its tree showed, sampled every
    few milliseconds (ru_maxrss would count the RSS this process had when it
    forked the child)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = anon = 0
    while True:
        for q in _tree(p.pid):
            st = _status(q)
            peak = max(peak, st.get("VmHWM", 0))
            anon = max(anon, st.get("RssAnon", 0))
        pid, status, _ = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  {' '.join(map(str, cmd))} failed ({code}): {err.strip()}", file=sys.stderr)
    return seconds, peak, anon, code


def has_writer(cli, fmt, folder):
    """Whether this build of jaxport writes fmt: convert a tiny file."""
    tiny = folder / "tiny.pt"
    if not tiny.exists():  # in a child: torch in this process would count in every child's RSS
        code = "import sys, torch; torch.save({'w': torch.ones(2)}, sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, str(tiny)], check=True)
    out = folder / f"tiny.{fmt}"
    r = subprocess.run([cli, "convert", str(tiny), "-o", str(out), "--quiet"], capture_output=True)
    if out.exists():
        out.unlink()
    return r.returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="size of the .pt (GiB)")
    ap.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the .pt afterwards")
    ap.add_argument("--no-python", action="store_true", help="skip the Python routes")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of cp and jaxport (best time); Python runs once")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="jpbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    cli = jaxport_cli()
    src = folder / "model.pt"
    if not src.exists():
        n = build(src, args.gb)
        print(f"built {src}: {n} linears of 4096x4096 float32")
    size = src.stat().st_size
    warm(src)
    formats = [f for f in FORMATS if has_writer(cli, f, folder)]
    print(f"{src}: {size / 1e9:.2f} GB; jaxport writes {', '.join(formats)}; {os.cpu_count()} cores\n")

    rows = {}

    def run(label, cmd, out, fmt=None, kind=None):
        if out.exists():
            out.unlink()
        secs, peak, anon, code = measure(cmd)
        if out.exists():
            out.unlink()
        r = rows.setdefault(label, {"label": label, "secs": secs, "peak": 0, "anon": 0, "ok": True,
                                    "fmt": fmt, "kind": kind})
        r["secs"] = min(r["secs"], secs)
        r["peak"] = max(r["peak"], peak)
        r["anon"] = max(r["anon"], anon)
        r["ok"] = r["ok"] and code == 0

    # cp and jaxport take turns, --repeat rounds, best time of each.
    cp_out = folder / "copy.pt"
    for _ in range(args.repeat):
        run("cp", ["sh", "-c", 'cp --reflink=never "$0" "$1" && sync "$1"', str(src), str(cp_out)], cp_out)
        for fmt in formats:
            out = folder / f"out.{fmt}"
            run(f"jaxport convert -> {fmt}", [cli, "convert", str(src), "-o", str(out), "--quiet"], out, fmt,
                "jaxport")
        if "msgpack" in formats:
            out = folder / "out.msgpack"
            run("jaxport convert --dtype bf16 -> msgpack",
                [cli, "convert", str(src), "-o", str(out), "--quiet", "--dtype", "bf16"], out, None, "jaxport")
    if not args.no_python:
        for fmt in FORMATS:
            out = folder / f"py.{fmt}"
            run(f"python: torch.load + {fmt} writer", [sys.executable, "-c", PY_ROUTE, fmt, str(src), str(out)],
                out, fmt, "python")
    rows = list(rows.values())

    cp_secs = rows[0]["secs"]
    py = {r["fmt"]: r["secs"] for r in rows if r["kind"] == "python" and r["ok"]}
    print(f"{'route':44} {'seconds':>8} {'MB/s':>8} {'vs cp':>7} {'python/x':>9} {'peak RSS':>10} {'peak anon':>10}")
    for r in rows:
        vs_py = f"{py[r['fmt']] / r['secs']:8.1f}x" if r["kind"] == "jaxport" and r["fmt"] in py else ""
        print(f"{r['label']:44} {r['secs']:8.2f} {size / 1e6 / r['secs']:8.0f} {r['secs'] / cp_secs:6.2f}x "
              f"{vs_py:>9} {r['peak'] / MIB:8.0f} Mi {r['anon'] / MIB:8.0f} Mi" + ("" if r["ok"] else "  FAILED"))
    print("\nvs cp: time / cp's time (lower is better); python/x: the Python route's time / jaxport's "
          "for the same format; peak RSS / anon: largest VmHWM / RssAnon seen while it ran.")
    if not args.keep:
        src.unlink()
    (folder / "tiny.pt").unlink(missing_ok=True)
    if args.dir is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
