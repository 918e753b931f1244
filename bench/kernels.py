"""Layout and dtype kernels against memcpy and numpy, on the same buffers.

    PYTHONPATH=build/python python bench/kernels.py [--quick] [--repeat N] [--offset BYTES]

For each shape (Linear weights (out, in) -> (in, out), and conv kernels
(O, I, kh, kw) -> (kh, kw, I, O)) and each of f32 -> f32 and f32 -> bf16, it
times, best of N runs (30 N for tensors moving under 8 MB, whose runs take
microseconds) on the same source and destination buffers, the four
taking turns run by run (so that a busy spell of a shared machine falls on
all of them, not on one):
  memcpy  numpy.copyto between contiguous f32 buffers of the source's size
          (one thread, glibc memcpy)
  numpy   a.transpose(perm).copy(), or .astype(bfloat16, order="C") (one thread)
  jp 1T   jaxport._core.permute_cast on the calling thread
  jp nT   the same with a Pool of one thread per core (started once)
jaxport's destination starts on a 64-byte line, as the arrays jaxport.convert
and the executor's tiles do; numpy's own arrays start 16 bytes into one, and
there (--offset 16) the 64x64x7x7 conv kernel, whose rows are 256 bytes, runs
10 to 15% slower. GB/s counts bytes read plus bytes written. The ratios: jp 1T / memcpy, jp nT
per core / memcpy, and the faster jp over numpy.
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
    ("conv 256x256x3x3", (256, 256, 3, 3), (2, 3, 1, 0)),
    ("conv 512x512x3x3", (512, 512, 3, 3), (2, 3, 1, 0)),
]
QUICK = [
    ("1024x1024", (1024, 1024), (1, 0)),
    ("1024x3584", (1024, 3584), (1, 0)),
    ("conv 64x64x7x7", (64, 64, 7, 7), (2, 3, 1, 0)),
]


def best(fns, repeat, small):
    """The best time of each function, the functions taking turns. A small
    tensor lives in the caches, so there each timed run comes right after an
    untimed one of the same function, as it would in a loop of its own; its
    runs take microseconds, so it gets 30 times as many to find the best."""
    for fn in fns:
        fn()  # warm up: page faults, caches
    times = [float("inf")] * len(fns)
    for _ in range(repeat * (30 if small else 1)):
        for k, fn in enumerate(fns):
            if small:
                fn()
            t = time.perf_counter()
            fn()
            times[k] = min(times[k], time.perf_counter() - t)
    return times


def line_aligned(shape, dt, offset=0):
    """An empty array whose data start `offset` bytes past a 64-byte line:
    on one, as the arrays jaxport.convert fills do (XLA's CPU client then
    takes them without a copy); numpy's own start 16 bytes into one."""
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + 128, np.uint8)
    k = -raw.ctypes.data % 64 + offset
    return raw[k:k + n].view(dt).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--offset", type=int, default=0, choices=range(0, 64, 4), metavar="BYTES",
                    help="start jaxport's destination this many bytes past a 64-byte line "
                         "(a multiple of 4 under 64; numpy's arrays start 16 past one)")
    args = ap.parse_args()
    pool = _core.Pool(0)
    cores = pool.threads
    rng = np.random.default_rng(0)
    print(f"{cores} threads in the pool ({os.cpu_count()} cores); "
          f"GB/s = (bytes read + bytes written) / best of {args.repeat} "
          f"({30 * args.repeat} under 8 MB)")
    head = (f"{'shape':15} {'cast':8} {'memcpy':>7} {'numpy':>7} {'jp 1T':>7} {'jp nT':>7}"
            f"  {'1T/memcpy':>9} {'nT/core/memcpy':>14} {'jp/numpy':>8}")
    print(head)
    print("-" * len(head))
    for name, shape, perm in QUICK if args.quick else SHAPES:
        src = rng.standard_normal(shape, dtype=np.float32)
        copy_dst = np.empty_like(src)
        out_shape = tuple(shape[p] for p in perm)
        for cast, dt in (("f32", np.dtype(np.float32)), ("f32>bf16", np.dtype(ml_dtypes.bfloat16))):
            dst = line_aligned(out_shape, dt, args.offset)
            moved = src.nbytes + dst.nbytes

            def run(**kw):
                _core.permute_cast(src, "float32", shape, None, perm, dt.name, out=dst, **kw)

            if cast == "f32":
                numpy_fn = lambda: src.transpose(perm).copy()  # noqa: E731
            else:
                numpy_fn = lambda: src.transpose(perm).astype(dt, order="C")  # noqa: E731
            t_copy, t_np, t1, tn = best([lambda: np.copyto(copy_dst, src), numpy_fn,
                                         lambda: run(threads=1), lambda: run(pool=pool)],
                                        args.repeat, moved < (8 << 20))
            want = src.transpose(perm).astype(dt, order="C")
            assert dst.tobytes() == want.tobytes(), f"{name} {cast}: wrong result"
            mem = 2 * src.nbytes / t_copy / 1e9
            gb = [moved / t / 1e9 for t in (t_np, t1, tn)]
            print(f"{name:15} {cast:8} {mem:7.2f} {gb[0]:7.2f} {gb[1]:7.2f} {gb[2]:7.2f}"
                  f"  {gb[1] / mem:9.2f} {gb[2] / cores / mem:14.2f} {t_np / min(t1, tn):8.2f}")


if __name__ == "__main__":
    main()
