"""The runtime bridge: torch code called from JAX gives the values and the
gradients (first and second order) of the same computation written in JAX,
under jit and outside it, under vmap, and inside Flax NNX and Equinox models."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxport
from jaxport.bridge import BridgeError

RTOL, ATOL = 1e-5, 1e-5


def close(a, b, rtol=RTOL, atol=ATOL):
    ja, jb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    assert ja == jb, (ja, jb)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.shape(x) == np.shape(y)
        assert jnp.result_type(x) == jnp.result_type(y)
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)


def rand(key, *shape):
    return jax.random.normal(jax.random.key(key), shape, jnp.float32)


both_jit = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def maybe_jit(f, jit):
    return jax.jit(f) if jit else f


# --- a function --------------------------------------------------------------


def torch_fn(x, pair):
    y, z = pair
    return {"a": torch.sin(x) * y, "b": (x ** 2 * torch.exp(z)).sum()}


def jax_fn(x, pair):
    y, z = pair
    return {"a": jnp.sin(x) * y, "b": (x ** 2 * jnp.exp(z)).sum()}


def fn_args():
    return rand(0, 3, 4), (rand(1, 3, 4), rand(2, 4))


def loss_of(f):
    return lambda x, pair: (f(x, pair)["a"] ** 2).sum() + f(x, pair)["b"]


@both_jit
def test_function_values_and_first_order(jit):
    f = jaxport.wrap(torch_fn)
    x, pair = fn_args()
    close(maybe_jit(f, jit)(x, pair), jax_fn(x, pair))
    g = maybe_jit(jax.grad(loss_of(f), argnums=(0, 1)), jit)
    close(g(x, pair), jax.grad(loss_of(jax_fn), argnums=(0, 1))(x, pair))
    # jax.vjp with a pytree cotangent
    out, pull = jax.vjp(f, x, pair)
    ref_out, ref_pull = jax.vjp(jax_fn, x, pair)
    ct = {"a": rand(3, 3, 4), "b": jnp.float32(0.5)}
    close(out, ref_out)
    close(pull(ct), ref_pull(ct))


@both_jit
def test_function_second_order(jit):
    f = jaxport.wrap(torch_fn)
    x, pair = fn_args()

    def gnorm(f):
        # grad of a function of a gradient: needs the backward pass's own VJP
        return lambda x, pair: (jax.grad(loss_of(f), argnums=(0, 1))(x, pair)[0] ** 2).sum()

    got = maybe_jit(jax.grad(gnorm(f), argnums=(0, 1)), jit)(x, pair)
    close(got, jax.grad(gnorm(jax_fn), argnums=(0, 1))(x, pair), rtol=1e-4, atol=1e-4)
    # third order, on a scalar function
    s = jaxport.wrap(lambda t: torch.sin(t) * t)
    d3 = maybe_jit(jax.grad(jax.grad(jax.grad(s))), jit)(jnp.float32(0.7))
    close(d3, jax.grad(jax.grad(jax.grad(lambda t: jnp.sin(t) * t)))(jnp.float32(0.7)))


def test_public_pure_callback_path(monkeypatch):
    # the bridge's host call uses JAX internals when present, else
    # jax.pure_callback; both give the same values and gradients
    from jaxport import bridge
    monkeypatch.setattr(bridge, "_PRIM", [bridge._make_primitive(None)])
    f = jaxport.wrap(torch_fn)
    x, pair = fn_args()
    close(jax.jit(f)(x, pair), jax_fn(x, pair))
    close(jax.grad(jax.grad(lambda t: f(t, pair)["b"]))(x[0, 0]),
          jax.grad(jax.grad(lambda t: jax_fn(t, pair)["b"]))(x[0, 0]))
    close(jax.vmap(f, in_axes=(0, None))(x[None], pair), jax.vmap(jax_fn, in_axes=(0, None))(x[None], pair))
    forward_mode_checks(jaxport.wrap(lambda x: torch.sin(x) * x.sum()), lambda x: jnp.sin(x) * x.sum(),
                        rand(0, 4, 3))
    h = jaxport.wrap(lambda a: (a * 2, a.float()))
    b = x.astype(jnp.bfloat16)
    close(h(b), (b * 2, b.astype(jnp.float32)))


def forward_mode_checks(f, ref, x):
    """jvp, jacfwd, linearize, hessian (forward over reverse) and the other
    mixes of modes, against the same function written in JAX."""
    t = rand(9, *x.shape)
    close(jax.jvp(f, (x,), (t,)), jax.jvp(ref, (x,), (t,)))
    close(jax.jit(jax.jacfwd(f))(x), jax.jacfwd(ref)(x))
    y, f_lin = jax.linearize(f, x)
    close((y, f_lin(t)), (ref(x), jax.linearize(ref, x)[1](t)))
    scalar = lambda g: lambda x: (g(x) ** 2).sum()  # noqa: E731
    tol = dict(rtol=1e-4, atol=1e-5)
    close(jax.jit(jax.hessian(scalar(f)))(x), jax.hessian(scalar(ref))(x), **tol)
    close(jax.jacfwd(jax.jacfwd(f))(x), jax.jacfwd(jax.jacfwd(ref))(x), **tol)
    close(jax.jacrev(jax.jacfwd(f))(x), jax.jacrev(jax.jacfwd(ref))(x), **tol)
    close(jax.jit(jax.jacrev(jax.jacrev(f)))(x), jax.jacrev(jax.jacrev(ref))(x), **tol)
    # a third derivative, forward over forward over reverse
    third = lambda g: jax.jvp(jax.hessian(scalar(g)), (x,), (t,))[1]  # noqa: E731
    close(third(f), third(ref), **tol)


def test_forward_mode():
    f = jaxport.wrap(lambda x: torch.sin(x) * x.sum())
    forward_mode_checks(f, lambda x: jnp.sin(x) * x.sum(), rand(0, 4, 3))


def test_forward_mode_batched_methods():
    # jacfwd is a vmap over tangents with the primal unbatched: with
    # "expand_dims" torch gets the primal tiled to the batch (torch.func.jvp
    # wants each tangent the shape of its primal)
    for method in ("expand_dims", "broadcast_all", "sequential_unrolled"):
        f = jaxport.wrap(lambda x: torch.tanh(x) * 2, vmap_method=method)
        ref = lambda x: jnp.tanh(x) * 2  # noqa: E731
        x = rand(0, 5)
        close(jax.jacfwd(f)(x), jax.jacfwd(ref)(x))
        close(jax.vmap(jax.jacfwd(f))(jnp.stack([x, -x])), jax.vmap(jax.jacfwd(ref))(jnp.stack([x, -x])))
        close(jax.jacfwd(jax.vmap(f))(jnp.stack([x, -x])), jax.jacfwd(jax.vmap(ref))(jnp.stack([x, -x])))


def test_forward_mode_partial_inputs():
    # integer inputs and outputs have no tangent; a nondiff argument's
    # tangent is taken as zero, as its cotangent is
    f = jaxport.wrap(lambda x, idx: (x[idx] * 3.0, torch.argmax(x).to(torch.int32)))
    x, idx = rand(0, 5), jnp.array([4, 0, 4], jnp.int32)
    t = rand(1, 5)
    (v, am), (tv, tam) = jax.jvp(lambda x: f(x, idx), (x,), (t,))
    close(tv, t[idx] * 3.0)
    assert tam.dtype == jax.dtypes.float0
    g = jaxport.wrap(lambda x, y: x * y, nondiff_argnums=(1,))
    y = rand(2, 5)
    close(jax.jvp(g, (x, y), (t, t))[1], t * y)


def test_reverse_mode_runs_no_forward_mode_pass(monkeypatch):
    # reverse mode transposes the JVP node into the VJP node: torch's
    # forward-mode AD never runs
    def refuse(*a, **k):
        raise AssertionError("torch.func.jvp ran under reverse mode")

    monkeypatch.setattr(torch.func, "jvp", refuse)
    f = jaxport.wrap(lambda x: torch.sin(x) * x.sum())
    x = rand(0, 4, 3)
    close(jax.grad(lambda x: f(x).sum())(x), jax.grad(lambda x: (jnp.sin(x) * x.sum()).sum())(x))
    rev2 = lambda g: jax.jit(jax.jacrev(jax.grad(lambda x: (g(x) ** 2).sum())))(x)  # noqa: E731
    close(rev2(f), rev2(lambda x: jnp.sin(x) * x.sum()), rtol=1e-4)
    with pytest.raises(Exception, match="torch.func.jvp ran"):
        jax.jvp(f, (x,), (x,))


def test_vmap_sequential_and_batched_methods():
    x, pair = fn_args()
    xs = jnp.stack([x, x + 1, x * 2])
    ref = jax.vmap(jax_fn, in_axes=(0, None))(xs, pair)
    close(jax.vmap(jaxport.wrap(torch_fn), in_axes=(0, None))(xs, pair), ref)
    close(jax.jit(jax.vmap(jaxport.wrap(torch_fn), in_axes=(0, None)))(xs, pair), ref)
    # gradients of a vmapped call, and a per-example gradient (vmap of grad)
    f = jaxport.wrap(torch_fn)
    close(jax.grad(lambda xs: jax.vmap(loss_of(f), in_axes=(0, None))(xs, pair).sum())(xs),
          jax.grad(lambda xs: jax.vmap(loss_of(jax_fn), in_axes=(0, None))(xs, pair).sum())(xs))
    close(jax.vmap(jax.grad(loss_of(f)), in_axes=(0, None))(xs, pair),
          jax.vmap(jax.grad(loss_of(jax_fn)), in_axes=(0, None))(xs, pair))
    # one torch call for the whole batch, for a function that broadcasts
    calls = []

    def bcast(x, y):
        calls.append(tuple(x.shape))
        return torch.tanh(x) * y

    for method in ("expand_dims", "broadcast_all"):
        calls.clear()
        g = jaxport.wrap(bcast, vmap_method=method)
        y = rand(5, 4)
        got = jax.vmap(g, in_axes=(0, None))(xs[:, 0], y)
        close(got, jnp.tanh(xs[:, 0]) * y)
        assert calls[-1] == (3, 4)
        close(jax.grad(lambda a: jax.vmap(g, in_axes=(0, None))(a, y).sum())(xs[:, 0]),
              jax.grad(lambda a: (jnp.tanh(a) * y).sum())(xs[:, 0]))


# --- an MLP --------------------------------------------------------------------


def torch_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def jax_mlp(p, x):
    h = jnp.tanh(x @ p["0.weight"].T + p["0.bias"])
    return h @ p["2.weight"].T + p["2.bias"]


def copied_params(module):
    return {n: jnp.asarray(t.detach().numpy()) for n, t in module.named_parameters()}


@both_jit
def test_mlp_values_and_gradients(jit):
    m = torch_mlp()
    apply, v = jaxport.wrap_module(m)
    ref_p = copied_params(m)
    close(v["params"], ref_p)
    assert v["buffers"] == {}
    x = rand(0, 4, 5)
    close(maybe_jit(apply, jit)(v, x), jax_mlp(ref_p, x))
    np.testing.assert_allclose(apply(v, x), m(torch.from_numpy(np.array(x))).detach().numpy(),
                               rtol=RTOL, atol=ATOL)

    def loss(f):
        return lambda p, x: (f(p, x) ** 2).mean()

    got = maybe_jit(jax.grad(loss(lambda p, x: apply({"params": p, "buffers": {}}, x)), argnums=(0, 1)), jit)
    close(got(v["params"], x), jax.grad(loss(jax_mlp), argnums=(0, 1))(ref_p, x))
    # forward mode in the parameters and the input at once
    tp = jax.tree_util.tree_map(lambda a: jnp.ones_like(a) * 0.1, ref_p)
    fwd = maybe_jit(lambda p, x, tp, tx: jax.jvp(lambda p, x: apply({"params": p, "buffers": {}}, x),
                                                (p, x), (tp, tx)), jit)
    close(fwd(v["params"], x, tp, x), jax.jvp(jax_mlp, (ref_p, x), (tp, x)), rtol=1e-4)


@both_jit
def test_mlp_second_order(jit):
    m = torch_mlp()
    apply, v = jaxport.wrap_module(m)
    ref_p = copied_params(m)
    x = rand(1, 4, 5)

    def penalty(f):
        # a gradient penalty: grad wrt params of a function of grad wrt input
        def inner(p, x):
            gx = jax.grad(lambda x: f(p, x).sum())(x)
            return (gx ** 2).sum() + f(p, x).mean()
        return inner

    mine = penalty(lambda p, x: apply({"params": p, "buffers": {}}, x))
    got = maybe_jit(jax.grad(mine, argnums=(0, 1)), jit)(v["params"], x)
    close(got, jax.grad(penalty(jax_mlp), argnums=(0, 1))(ref_p, x), rtol=1e-4, atol=1e-5)
    # Hessian-vector product wrt the input (reverse over reverse)
    u = rand(2, 4, 5)
    hvp = lambda f: jax.grad(lambda x: jnp.vdot(jax.grad(lambda x: jnp.sum(f(x) ** 3))(x), u))  # noqa: E731
    close(maybe_jit(hvp(lambda x: apply(v, x)), jit)(x), hvp(lambda x: jax_mlp(ref_p, x))(x),
          rtol=1e-4, atol=1e-5)


def test_no_torch_autograd_leaks():
    m = torch_mlp()
    apply, v = jaxport.wrap_module(m)
    x = rand(0, 2, 5)
    jax.grad(lambda p: jax.grad(lambda x: apply({"params": p, "buffers": {}}, x).sum())(x).sum())(v["params"])
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in m.parameters())
    seen = []
    f = jaxport.wrap(lambda t: seen.append((t.requires_grad, torch.is_grad_enabled())) or t * 2)
    f(x)
    jax.jit(f)(x + 1)
    # the forward calls run without autograd (the backward runs inside
    # torch.func.vjp, where torch tracks its own gradients)
    assert seen == [(False, False)] * 3  # shape inference, eager, jit


# --- a conv net with BatchNorm in eval mode -------------------------------------


def torch_convnet():
    torch.manual_seed(1)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 2, 3, stride=2), torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 3))
    bn = m[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(4))
        bn.running_var.copy_(torch.rand(4) + 0.5)
        bn.weight.copy_(torch.randn(4))
        bn.bias.copy_(torch.randn(4))
    m.train()  # wrap_module must put it in eval mode
    return m


def jax_convnet(p, b, x):
    dn = ("NCHW", "OIHW", "NCHW")
    y = jax.lax.conv_general_dilated(x, p["0.weight"], (1, 1), [(1, 1), (1, 1)], dimension_numbers=dn)
    y = y + p["0.bias"][None, :, None, None]
    c = lambda a: a[None, :, None, None]  # noqa: E731
    y = (y - c(b["1.running_mean"])) / jnp.sqrt(c(b["1.running_var"]) + 1e-5) * c(p["1.weight"]) + c(p["1.bias"])
    y = jax.nn.relu(y)
    y = jax.lax.conv_general_dilated(y, p["3.weight"], (2, 2), "VALID", dimension_numbers=dn)
    y = (y + p["3.bias"][None, :, None, None]).reshape(y.shape[0], -1)
    return y @ p["5.weight"].T + p["5.bias"]


@both_jit
def test_convnet_batchnorm_eval(jit):
    m = torch_convnet()
    apply, v = jaxport.wrap_module(m)
    assert not m.training
    assert set(v["buffers"]) == {"1.running_mean", "1.running_var"}  # num_batches_tracked stays in torch
    ref_p = copied_params(m)
    ref_b = {n: jnp.asarray(t.numpy()) for n, t in m.named_buffers() if t.is_floating_point()}
    x = rand(0, 2, 3, 7, 7)
    close(maybe_jit(apply, jit)(v, x), jax_convnet(ref_p, ref_b, x), rtol=1e-4, atol=1e-5)

    def loss(f):
        return lambda v, x: (f(v, x) ** 2).sum()

    got = maybe_jit(jax.grad(loss(apply), argnums=(0, 1)), jit)(v, x)
    want = jax.grad(loss(lambda v, x: jax_convnet(v["params"], jax.lax.stop_gradient(v["buffers"]), x)),
                    argnums=(0, 1))({"params": ref_p, "buffers": ref_b}, x)
    close(got, want, rtol=1e-4, atol=1e-4)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in got[0]["buffers"].values())
    # running statistics untouched by the calls
    np.testing.assert_array_equal(m[1].running_mean.numpy(), np.asarray(ref_b["1.running_mean"]))


# --- models that hold a torch module ---------------------------------------------


def test_nnx_wrapper_inside_jitted_model():
    m = torch_convnet()
    ref_p = copied_params(m)
    ref_b = {n: jnp.asarray(t.numpy()) for n, t in m.named_buffers() if t.is_floating_point()}

    class Model(nnx.Module):
        def __init__(self):
            self.body = jaxport.wrap_nnx(m)
            self.head = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.head(jax.nn.gelu(self.body(x)))

    model = Model()
    x = rand(1, 2, 3, 7, 7)
    kernel, bias = model.head.kernel[...], model.head.bias[...]

    def ref(p, k, bb, x):
        return jax.nn.gelu(jax_convnet(p, ref_b, x)) @ k + bb

    @nnx.jit
    def loss_and_grad(model, x):
        return nnx.value_and_grad(lambda mdl: (mdl(x) ** 2).sum())(model)

    val, grads = loss_and_grad(model, x)
    rval, (gp, gk, gb) = jax.value_and_grad(lambda p, k, b: (ref(p, k, b, x) ** 2).sum(), argnums=(0, 1, 2))(
        ref_p, kernel, bias)
    close(val, rval, rtol=1e-4)
    close({n: g[...] for n, g in grads["body"]["params"].items()}, gp, rtol=1e-4, atol=1e-4)
    close(grads["head"]["kernel"][...], gk, rtol=1e-4, atol=1e-4)
    assert "buffers" not in grads["body"]  # BatchStat is not a Param: not differentiated
    # one optimizer step moves the torch part's params like any other Param
    opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    before = model.body.params["0.weight"][...]
    opt.update(model, grads)
    close(model.body.params["0.weight"][...], before - 0.1 * gp["0.weight"], rtol=1e-4, atol=1e-5)


def test_equinox_wrapper_inside_jitted_model():
    m = torch_mlp()
    ref_p = copied_params(m)

    class Model(eqx.Module):
        body: eqx.Module
        head: eqx.nn.Linear

        def __init__(self):
            self.body = jaxport.wrap_eqx(m)
            self.head = eqx.nn.Linear(3, 1, key=jax.random.key(0))

        def __call__(self, x):
            return jax.vmap(self.head)(jnp.sin(self.body(x)))

    model = Model()
    x = rand(2, 4, 5)

    @eqx.filter_jit
    def step(model, x):
        return eqx.filter_value_and_grad(lambda mdl: (mdl(x) ** 2).mean())(model)

    val, grads = step(model, x)
    w, b = model.head.weight, model.head.bias
    ref = lambda p, w, b: ((jnp.sin(jax_mlp(p, x)) @ w.T + b) ** 2).mean()  # noqa: E731
    rval, (gp, gw) = jax.value_and_grad(ref, argnums=(0, 1))(ref_p, w, b)
    close(val, rval)
    close(grads.body.params, gp)
    close(grads.head.weight, gw)


# --- dtypes, pytrees, shapes -------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision(dtype):
    f = jaxport.wrap(lambda x, y: (x * y + 1, (x * 2).float()))
    x, y = rand(0, 6).astype(dtype), rand(1, 6).astype(dtype)
    for g in (f, jax.jit(f)):
        a, b = g(x, y)
        assert a.dtype == dtype and b.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(x * y + 1))
        np.testing.assert_array_equal(np.asarray(b), np.asarray((x * 2).astype(jnp.float32)))
    gx = jax.grad(lambda x: f(x, y)[1].sum())(x)
    assert gx.dtype == dtype
    np.testing.assert_array_equal(np.asarray(gx), np.full(6, 2, dtype))


def test_integer_inputs_and_outputs():
    f = jaxport.wrap(lambda x, idx: (x[idx] * 3.0, torch.argmax(x).to(torch.int32)))
    x, idx = rand(0, 5), jnp.array([4, 0, 4], jnp.int32)
    vals, am = jax.jit(f)(x, idx)
    close(vals, x[idx] * 3.0)
    assert am.dtype == jnp.int32 and int(am) == int(jnp.argmax(x))
    out, pull = jax.vjp(f, x, idx)
    gx, gidx = pull((jnp.ones(3), np.zeros((), jax.dtypes.float0)))
    close(gx, jnp.zeros(5).at[4].add(6.0).at[0].add(3.0))
    assert gidx.dtype == jax.dtypes.float0 and gidx.shape == (3,)
    close(jax.jit(jax.grad(lambda x: f(x, idx)[0].sum()))(x), gx)


def test_pytrees_and_static_arguments():
    def tf(tree, *, mode, power):
        assert mode == "sum" and power == 3
        return [tree["u"] ** power, {"s": tree["v"][0] + tree["v"][1]}]

    f = jaxport.wrap(tf)
    tree = {"u": rand(0, 2), "v": (rand(1, 3), rand(2, 3))}
    ref = lambda t: [t["u"] ** 3, {"s": t["v"][0] + t["v"][1]}]  # noqa: E731
    close(jax.jit(lambda t: f(t, mode="sum", power=3))(tree), ref(tree))
    close(jax.grad(lambda t: f(t, mode="sum", power=3)[0].sum())(tree), jax.grad(lambda t: ref(t)[0].sum())(tree))


def test_shapes_inferred_once_per_signature_on_meta():
    devices = []

    def tf(x):
        devices.append(x.device.type)
        return x.sum(0)

    f = jaxport.wrap(tf)
    jf = jax.jit(f)
    jf(rand(0, 3, 2))
    jf(rand(1, 3, 2))
    assert devices == ["meta", "cpu", "cpu"]
    jf(rand(2, 4, 2))  # a new signature is inferred again
    assert devices[3:] == ["meta", "cpu"]


def test_shapes_from_example_or_declared():
    devices = []

    def tf(x):
        devices.append(x.device.type)
        return x[: int(x.sum().item() > 0) + 1]  # data-dependent: no meta tensors

    x = jnp.ones(4)
    f = jaxport.wrap(tf, example_args=(x,))
    assert devices == ["cpu"]
    close(jax.jit(f)(x), jnp.ones(2))
    g = jaxport.wrap(tf, jax.ShapeDtypeStruct((1,), jnp.float32))
    close(g(-x), -jnp.ones(1))
    h = jaxport.wrap(tf, lambda x: jax.ShapeDtypeStruct((2,), x.dtype))
    close(h(x), jnp.ones(2))
    # no example and no declaration: meta fails, zeros on CPU decide
    k = jaxport.wrap(tf)
    assert k(-x).shape == (1,)
    with pytest.raises(BridgeError, match=r"output: torch returned shape \(2,\), expected \(1,\)"):
        k(x)


# --- errors ---------------------------------------------------------------------


def test_error_declared_shape_mismatch():
    f = jaxport.wrap(lambda x: {"y": x[:2]}, {"y": jax.ShapeDtypeStruct((3,), jnp.float32)})
    with pytest.raises(BridgeError, match=r"output\['y'\]: torch returned shape \(2,\), expected \(3,\)"):
        f(jnp.ones(4))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"output\['y'\]: torch returned shape"):
        jax.jit(f)(jnp.ones(4))


def test_error_dtype_mismatch_and_64_bit():
    f = jaxport.wrap(lambda x: (x, x.half()), (jax.ShapeDtypeStruct((2,), jnp.float32),) * 2)
    with pytest.raises(BridgeError, match=r"output\[1\]: torch returned dtype float16, expected float32"):
        f(jnp.ones(2))
    with pytest.raises(BridgeError, match=r"output\[0\]: torch returns int64 but jax_enable_x64 is off"):
        jaxport.wrap(lambda x: [torch.argmax(x)])(jnp.ones(2))


def test_error_unsupported_devices():
    meta = torch.nn.Linear(2, 2, device="meta")
    with pytest.raises(BridgeError, match=r"parameter 'weight' is on meta; wrap_module takes a module on CPU"):
        jaxport.wrap_module(meta)
    f = jaxport.wrap(lambda x: x.to("meta"), jax.ShapeDtypeStruct((2,), jnp.float32))
    with pytest.raises(BridgeError, match=r"output: tensor is on meta; .* CPU tensors only"):
        f(jnp.ones(2))


def test_error_bad_arguments():
    with pytest.raises(BridgeError, match="not a tensor|not an array"):
        jaxport.wrap(lambda x: (x, 3.0))(jnp.ones(2))
    with pytest.raises(BridgeError, match="vmap_method"):
        jaxport.wrap(torch.sin, vmap_method="nope")
    with pytest.raises(BridgeError, match="hashable"):
        jaxport.wrap(lambda x, s: x)(jnp.ones(2), [1, {2}])
    with pytest.raises(BridgeError, match="torch.nn.Module"):
        jaxport.wrap_module(torch.sin)


def test_error_module_back_in_training_mode():
    m = torch_mlp()
    apply, v = jaxport.wrap_module(m)
    m.train()
    with pytest.raises(BridgeError, match="training mode"):
        apply(v, jnp.ones((1, 5)))


def test_import_stays_light():
    import subprocess
    import sys
    code = "import sys, jaxport; print(any(m in sys.modules for m in ('torch', 'jax', 'flax', 'equinox')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
