"""Open-to-dict time and memory: jaxport.load against torch.load(mmap=True,
weights_only=True), safetensors.numpy.load_file and torch.export.load on the
same tensors.

Builds a stack of 4096x4096 float32 linears (64 MiB each) as a .pt, as a
.safetensors and as a torch.export archive (.pt2) under --dir, warms the page cache, then runs each loader
--repeat times, each in a fresh process so memory numbers are its own, and
prints the best time, the growth of anonymous and total RSS during the call
and the peak RSS growth (VmHWM), with ratios. The files are deleted at the
end unless --keep.

    python bench/load.py --gb 2
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
which, path = sys.argv[1], sys.argv[2]

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out

if which.startswith("jaxport"):
    import jaxport
    load = lambda: jaxport.load(path)
elif which == "torch":
    import torch
    load = lambda: torch.load(path, mmap=True, weights_only=True)
elif which == "torch-export":
    import torch
    load = lambda: torch.export.load(path).state_dict
else:
    from safetensors.numpy import load_file
    load = lambda: load_file(path)

before = status()
t0 = time.perf_counter()
tensors = load()
seconds = time.perf_counter() - t0
after = status()
print(json.dumps({
    "seconds": seconds,
    "tensors": len(tensors),
    "anon": after["RssAnon"] - before["RssAnon"],
    "rss": after["VmRSS"] - before["VmRSS"],
    "peak": after["VmHWM"] - before["VmHWM"],
}))
"""

LOADERS = [
    ("jaxport", "jaxport.load", ".pt"),
    ("jaxport-st", "jaxport.load (the .safetensors)", ".safetensors"),
    ("torch", "torch.load(mmap=True, weights_only=True)", ".pt"),
    ("safetensors", "safetensors.numpy.load_file", ".safetensors"),
    ("jaxport-pt2", "jaxport.load (the .pt2)", ".pt2"),
    ("torch-export", "torch.export.load(...).state_dict", ".pt2"),
]

MIB = 1024 * 1024


def build(folder, gb):
    import torch
    from safetensors.torch import save_file

    n = max(1, round(gb * 1024 / 64))
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(n):
        tensors[f"layers.{i}.weight"] = torch.empty(4096, 4096).uniform_(generator=gen)
        tensors[f"layers.{i}.bias"] = torch.zeros(4096)
    torch.save(tensors, folder / "model.pt")
    save_file(tensors, str(folder / "model.safetensors"))

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(4096, 4096, device="meta") for _ in range(n))
            self.load_state_dict(tensors, assign=True)  # the same tensors, no copy

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    torch.export.save(torch.export.export(Stack(), (torch.zeros(1, 4096),)), folder / "model.pt2")
    return n


def warm(path):
    with open(path, "rb") as f:
        while f.read(64 * MIB):
            pass


def run(which, path, env):
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(path)], capture_output=True,
                         text=True, env=env, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="model size in GiB (default 2)")
    ap.add_argument("--dir", default="/tmp/jaxport-bench", help="where the files go")
    ap.add_argument("--repeat", type=int, default=3, help="runs per loader; the best counts")
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = ap.parse_args()

    import os

    env = dict(os.environ)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        layers = build(folder, args.gb)
        size = (folder / "model.pt").stat().st_size
        print(f"built {layers} layers of 4096x4096 float32, {size / MIB:.0f} MiB, "
              f"in {time.perf_counter() - t0:.1f} s under {folder}")
        results = {}
        for which, _, ext in LOADERS:
            warm(folder / f"model{ext}")
        for _ in range(args.repeat):
            for which, _, ext in LOADERS:
                r = run(which, folder / f"model{ext}", env)
                best = results.get(which)
                if best is None or r["seconds"] < best["seconds"]:
                    results[which] = r
        print()
        print(f"{'loader':44s} {'open-to-dict':>12s} {'anon RSS':>10s} {'RSS':>10s} "
              f"{'peak RSS':>10s}")
        for which, label, _ in LOADERS:
            r = results[which]
            print(f"{label:44s} {r['seconds'] * 1000:9.1f} ms {r['anon'] / MIB:6.1f} MiB "
                  f"{r['rss'] / MIB:6.1f} MiB {r['peak'] / MIB:6.1f} MiB")
        j, t, s, js = (results[w]["seconds"] for w in ("jaxport", "torch", "safetensors", "jaxport-st"))
        print()
        print(f"jaxport.load takes {j / t:.3f}x the time of torch.load and {j / s:.3f}x that of "
              f"safetensors.numpy.load_file ({results['jaxport']['tensors']} tensors each); on the "
              f".safetensors file it takes {js / s:.3f}x the time of safetensors.numpy.load_file")
        jp, te = results["jaxport-pt2"]["seconds"], results["torch-export"]["seconds"]
        print(f"on the .pt2 archive it takes {jp / te:.4f}x the time of torch.export.load")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
