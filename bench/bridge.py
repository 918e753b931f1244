"""Per-call overhead of the runtime bridge (jaxport.wrap_module) beside a plain
torch call and a plain jax call of the same small model, in one run.

    PYTHONPATH=build/python python bench/bridge.py [--batch B] [--width W] [--calls N] [--repeat R]
                                                   [--torch-threads T]

The model is an MLP (W -> 4W -> W, tanh) on a (B, W) float32 input. Rows:
  forward        torch: m(x) under no_grad; jax: jax.jit of the same MLP
                 in jnp with the weights copied; bridge: jax.jit(apply)
                 and apply called outside jit (eager)
  fwd+bwd        torch: loss.backward() (params and input grads); jax and
                 bridge: jax.jit(jax.grad(loss, argnums=(0, 1)))
  jvp            forward mode in the params and the input at once: torch:
                 torch.func.jvp of torch.func.functional_call; jax and
                 bridge: jax.jit(jax.jvp(...))
  callback floor jax.jit of a jax.pure_callback that returns its input
                 (numpy), the least any callback costs
Each time is microseconds per call: N calls back to back (each waited for
with block_until_ready), best of R runs, the contenders taking turns.
"overhead" is bridge - torch.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxport


def per_call(fns, calls, repeat):
    """Best time per call of each function, the functions taking turns (so a
    busy machine slows them alike)."""
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()
        fn()
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t) / calls)
    return {k: v * 1e6 for k, v in best.items()}


def jax_mlp(p, x):
    h = jnp.tanh(x @ p["0.weight"].T + p["0.bias"])
    return h @ p["2.weight"].T + p["2.bias"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (1: no OpenMP spinning against XLA's threads)")
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    torch.manual_seed(0)
    w = a.width
    m = torch.nn.Sequential(torch.nn.Linear(w, 4 * w), torch.nn.Tanh(), torch.nn.Linear(4 * w, w))
    apply, v = jaxport.wrap_module(m)
    p = v["params"]
    x = jax.random.normal(jax.random.key(0), (a.batch, w), jnp.float32)
    xt = torch.from_numpy(np.array(x))
    assert np.allclose(np.asarray(jax.jit(apply)(v, x)), m(xt).detach().numpy(), atol=1e-5)

    def torch_fwd():
        with torch.no_grad():
            m(xt)

    xg = xt.clone().requires_grad_(True)

    def torch_bwd():
        m.zero_grad(set_to_none=True)
        xg.grad = None
        (m(xg) ** 2).mean().backward()

    params_t = {k: t.detach() for k, t in m.named_parameters()}
    tangents_t = {k: torch.full_like(t, 0.1) for k, t in params_t.items()}

    def torch_jvp():
        with torch.no_grad():
            torch.func.jvp(lambda q, x: torch.func.functional_call(m, q, (x,)), (params_t, xt),
                           (tangents_t, xt))

    tv = jax.tree_util.tree_map(lambda a: jnp.full_like(a, 0.1), v)
    jax_j = jax.jit(lambda p, x, tp, tx: jax.jvp(jax_mlp, (p, x), (tp, tx)))
    bridge_j = jax.jit(lambda v, x, tv, tx: jax.jvp(apply, (v, x), (tv, tx)))
    jax_f = jax.jit(jax_mlp)
    bridge_f = jax.jit(apply)
    jax_g = jax.jit(jax.grad(lambda p, x: (jax_mlp(p, x) ** 2).mean(), argnums=(0, 1)))
    bridge_g = jax.jit(jax.grad(lambda v, x: (apply(v, x) ** 2).mean(), argnums=(0, 1)))
    floor = jax.jit(lambda x: jax.pure_callback(np.asarray, jax.ShapeDtypeStruct(x.shape, x.dtype), x,
                                                vmap_method="sequential"))
    ready = jax.block_until_ready
    t = per_call({
        "torch fwd": torch_fwd,
        "jax fwd": lambda: ready(jax_f(p, x)),
        "bridge fwd": lambda: ready(bridge_f(v, x)),
        "bridge eager": lambda: ready(apply(v, x)),
        "torch bwd": torch_bwd,
        "jax bwd": lambda: ready(jax_g(p, x)),
        "bridge bwd": lambda: ready(bridge_g(v, x)),
        "torch jvp": torch_jvp,
        "jax jvp": lambda: ready(jax_j(p, x, tv["params"], x)),
        "bridge jvp": lambda: ready(bridge_j(v, x, tv, x)),
        "floor": lambda: ready(floor(x)),
    }, a.calls, a.repeat)
    print(f"MLP {w}->{4 * w}->{w}, tanh, batch {a.batch}, float32; jax {jax.__version__} on "
          f"{jax.default_backend()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} cores; us per call, best of {a.repeat} x {a.calls} calls")
    print(f"{'':14} {'torch':>8} {'jax':>8} {'bridge':>8} {'overhead':>9} {'bridge/torch':>13} {'bridge/jax':>11}")
    for row, b, k in (("forward", "bridge fwd", "fwd"), ("forward eager", "bridge eager", "fwd"),
                      ("fwd+bwd", "bridge bwd", "bwd"), ("jvp", "bridge jvp", "jvp")):
        tt, tj, tb = t[f"torch {k}"], t[f"jax {k}"], t[b]
        print(f"{row:14} {tt:8.1f} {tj:8.1f} {tb:8.1f} {tb - tt:9.1f} {tb / tt:13.2f} {tb / tj:11.2f}")
    print(f"{'callback floor':14} {'':8} {'':8} {t['floor']:8.1f}   (jit of a pure_callback returning its input)")


if __name__ == "__main__":
    main()
