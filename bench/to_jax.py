"""A PyTorch model into JAX arrays in one process: time and peak memory of
jaxport.convert against what users do today.

    PYTHONPATH=build/python python bench/to_jax.py --gb 1 [--repeat 3]

The model is a stack of 4096x4096 float32 nn.Linear layers with biases (64
MiB each), built in each process with the same seed. Each route runs in a
fresh process of its own (--repeat rounds, the routes taking turns; the best
time counts), after one small conversion that loads and warms up what it
needs, and is timed from the live module to jax arrays that are ready:

  Flax linen target ({"layers_<i>": {"kernel", "bias"}}; jaxport and
  weightbridge get it as jax.eval_shape's ShapeDtypeStructs, which need no
  memory, when they can take them):
    jaxport.convert   jaxport.convert(net, like)
    by hand           the Flax guide's rule, leaf by leaf:
                      jnp.asarray(linear.weight.detach().numpy().T)
    weightbridge      weightbridge.adapt(net.state_dict(), params,
                      in_format="pytorch", out_format="flax") (params made
                      with jnp.zeros: it reads the target's arrays). It
                      returns numpy views of the torch tensors (transposed
                      views, not copies), not jax arrays: its peak is 0, and
                      JAX copies each the first time it is used.
  Equinox target (eqx.nn.Linear layers in a list; the model is built, with
  its own arrays, before the clock starts):
    jaxport.autoconvert   jaxport.autoconvert(model, net.state_dict())
    statedict2pytree      statedict2pytree.autoconvert(model, net.state_dict())

On the 2-core virtual machine this was written on, touching memory new to
a process costs from 0.2 to 2 s a GiB from run to run (numpy alone: 16 fresh
64 MiB arrays, one byte a page: 1.4 s the first time in a process, 0.2 s the
next), and every route allocates its result, so the seconds move by that
much; take the best of several rounds. The peak does not move.

"peak" is how far the process's peak resident memory (VmHWM, reset through
/proc/self/clear_refs before the call) grew over its resident memory before
the call, in units of the converted model's size: 1.0 means the arrays the
call returns and nothing else. Each result's last kernel is checked against
PyTorch's weight. weightbridge and statedict2pytree come from
bench/requirements.txt; without them their rows say "not installed".
"""

import argparse
import json
import subprocess
import sys

N = 4096

CHILD = r"""
import gc, json, sys, time
import numpy as np, torch, jax, jax.numpy as jnp
route, layers = sys.argv[1], int(sys.argv[2])
N = %(N)d

def kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

def torch_net(n, count):
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(n, n) for _ in range(count)])

def flax_like(n, count, abstract):
    make = (lambda s: jax.ShapeDtypeStruct(s, np.float32)) if abstract else (lambda s: jnp.zeros(s, np.float32))
    return {"params": {f"layers_{i}": {"kernel": make((n, n)), "bias": make((n,))} for i in range(count)}}

def eqx_model(n, count):
    import equinox as eqx
    keys = jax.random.split(jax.random.key(0), count)
    return [eqx.nn.Linear(n, n, key=k) for k in keys]

def last_kernel(out):
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(out, list):
        return np.asarray(out[-1].weight).T
    params = out["params"]
    return np.asarray(params[f"layers_{len(params) - 1}"]["kernel"])

def call(route, net, n, count):
    if route == "jaxport.convert":
        import jaxport
        like = flax_like(n, count, True)
        return lambda: jaxport.convert(net, like)
    if route == "by hand":
        def by_hand():
            return {"params": {f"layers_{i}": {"kernel": jnp.asarray(m.weight.detach().numpy().T),
                                               "bias": jnp.asarray(m.bias.detach().numpy())}
                               for i, m in enumerate(net)}}
        return by_hand
    if route == "weightbridge":
        import weightbridge
        params = jax.block_until_ready(flax_like(n, count, False))
        sd = net.state_dict()
        return lambda: weightbridge.adapt(sd, params, in_format="pytorch", out_format="flax")
    model = jax.block_until_ready(eqx_model(n, count))  # made before the clock starts
    sd = net.state_dict()
    if route == "jaxport.autoconvert":
        import jaxport
        return lambda: jaxport.autoconvert(model, sd)
    import statedict2pytree as s2p
    return lambda: s2p.autoconvert(model, sd)

try:
    jax.block_until_ready(call(route, torch_net(64, 2), 64, 2)())  # imports, warm-up
except ImportError:
    print(json.dumps({"error": "not installed"}))
    raise SystemExit
net = torch_net(N, layers)
fn = call(route, net, N, layers)
gc.collect()
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before = kib("VmRSS")
t = time.perf_counter()
out = jax.block_until_ready(fn())
seconds = time.perf_counter() - t
peak = kib("VmHWM") - before
ok = bool(np.array_equal(last_kernel(out), net[-1].weight.detach().numpy().T))
print(json.dumps({"seconds": seconds, "peak_kib": peak, "ok": ok}))
""" % {"N": N}

FLAX = ["jaxport.convert", "by hand", "weightbridge"]
EQX = ["jaxport.autoconvert", "statedict2pytree"]


def run(route, layers, timeout):
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, route, str(layers)], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        return {"error": tail[:60]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="model size in GiB (64 MiB a layer)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=900, help="seconds a route may take")
    ap.add_argument("--only", help="comma-separated routes")
    args = ap.parse_args()
    layers = max(1, round(args.gb * 1024 / 64))
    model_kib = layers * (N * N + N) * 4 / 1024
    routes = FLAX + EQX if not args.only else args.only.split(",")
    best = {r: None for r in routes}
    for _ in range(args.repeat):
        for route in routes:
            if best[route] is not None and "error" in best[route]:
                continue
            got = run(route, layers, args.timeout)
            if best[route] is None or "error" in got or got["seconds"] < best[route]["seconds"]:
                best[route] = got
    print(f"{layers} Linear layers of {N}x{N} float32 with biases: {model_kib / 2**20:.2f} GiB; "
          f"best of {args.repeat}, each run in a fresh process")
    head = f"{'route':22} {'seconds':>8} {'GB/s':>6} {'peak / model':>13} {'vs jaxport':>10}  result"
    print(head)
    print("-" * len(head))
    for group, ref in ((FLAX, "jaxport.convert"), (EQX, "jaxport.autoconvert")):
        base = best.get(ref)
        for route in [r for r in group if r in best]:
            b = best[route]
            if "error" in b:
                print(f"{route:22} {b['error']}")
                continue
            ratio = (f"{b['seconds'] / base['seconds']:9.1f}x" if base and "error" not in base and route != ref
                     else f"{'':10}")
            print(f"{route:22} {b['seconds']:8.3f} {model_kib * 1024 / b['seconds'] / 1e9:6.2f} "
                  f"{b['peak_kib'] / model_kib:13.2f} {ratio}  {'right' if b['ok'] else 'WRONG'}")


if __name__ == "__main__":
    main()
