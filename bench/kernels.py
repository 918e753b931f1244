"""Layout and dtype kernels against memcpy and numpy, on the same buffers.

    PYTHONPATH=build/python python bench/kernels.py [--quick] [--repeat N]

For each shape (a Linear weight (out, in) -> (in, out), and a conv kernel
(O, I, kh, kw) -> (kh, kw, I, O)) and each of f32 -> f32 and f32 -> bf16, it
times, best of N:
  memcpy    numpy copy of a contiguous f32 buffer of the source's size (one thread)
  numpy     a.transpose(perm).copy() or .astype(bf16, order='C') (one thread)
  jp 1T     jaxport._core.permute_cast on this thread
  jp nT     the same with a pool of one thread per core
GB/s counts bytes read plus bytes written. Ratios: jp 1T / memcpy, jp nT per
core / memcpy, and the faster jp / numpy.
"""

import argparse
import os
import time

import ml_dtypes
import numpy as np

from jaxport import _core

SHAPES = [
    ("4096x4096", (4096, 4096), (1, 0)),
    ("4096x14336", (4096, 14336), (1, 0)),
    ("14336x4096", (14336, 4096), (1, 0)),
    ("conv 64x64x7x7", (64, 64, 7, 7), (2, 3, 1, 0)),
]
QUICK = [
    ("1024x1024", (1024, 1024), (1, 0)),
    ("1024x3584", (1024, 3584), (1, 0)),
    ("conv 64x64x7x7", (64, 64, 7, 7), (2, 3, 1, 0)),
]


def best(fn, repeat):
    fn()  # warm: page faults, caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    print(f"{cores} cores; GB/s = (bytes read + bytes written) / best of {args.repeat}")
    head = f"{'shape':16} {'cast':9} {'memcpy':>7} {'numpy':>7} {'jp 1T':>7} {'jp nT':>7}  {'1T/memcpy':>9} {'nT/core/memcpy':>14} {'jp/numpy':>8}"
    print(head)
    print("-" * len(head))
    for name, shape, perm in QUICK if args.quick else SHAPES:
        src = rng.standard_normal(shape, dtype=np.float32)
        copy_dst = np.empty_like(src)
        out_shape = tuple(shape[p] for p in perm)
        for cast, dt in (("f32", np.float32), ("f32>bf16", ml_dtypes.bfloat16)):
            dt = np.dtype(dt)
            dst = np.empty(out_shape, dt)
            moved = src.nbytes + dst.nbytes
            t_copy = best(lambda: np.copyto(copy_dst, src), args.repeat)
            if dt == np.float32:
                t_np = best(lambda: src.transpose(perm).copy(), args.repeat)
            else:
                t_np = best(lambda: src.transpose(perm).astype(dt, order="C"), args.repeat)
            call = lambda threads: _core.permute_cast(
                src, "float32", shape, None, perm, dt.name, out=dst, threads=threads)
            t1 = best(lambda: call(1), args.repeat)
            tn = best(lambda: call(0), args.repeat)
            ref = src.transpose(perm).astype(dt)
            assert dst.tobytes() == ref.tobytes(), f"{name} {cast}: wrong result"
            gb = lambda t, n=moved: n / t / 1e9
            mem = gb(t_copy, 2 * src.nbytes)
            print(f"{name:16} {cast:9} {mem:7.2f} {gb(t_np):7.2f} {gb(t1):7.2f} {gb(tn):7.2f}"
                  f"  {gb(t1) / mem:9.2f} {gb(tn) / cores / mem:14.2f} {min(t_np / t1, t_np / tn) if False else t_np / min(t1, tn):8.2f}")


if __name__ == "__main__":
    main()
