"""The runtime bridge: call PyTorch code from JAX, under jit, vmap and every
derivative (grad, vjp, jvp, jacfwd, hessian, to any order).

``wrap(fn)`` turns a function of torch tensors into a function of JAX arrays.
Each call becomes one host callback (the lowering of ``jax.pure_callback``)
whose Python function hands XLA's buffers to torch through DLPack, runs ``fn``
under ``torch.no_grad`` and hands torch's results back. Derivatives go through
a primitive with JAX's JVP, transpose and vmap rules: the JVP is another
wrapped torch function (``torch.func.jvp`` of the first), whose transpose is
a third (``torch.func.vjp``), and so on, so that forward and reverse mode mix
and nest to any order.

Where bytes are copied, per call, on CPU:
  - inputs: none made by the bridge. torch views the buffers XLA hands the
    callback (read-only numpy views, exported through DLPack). XLA itself may
    hand a copy: on CPU with jax 0.10 the address torch sees differs from that
    of the jax array passed to a jitted function. With the fallback
    to the public ``jax.pure_callback`` (see _host_call_primitive), JAX copies
    each argument once into a fresh jax array before torch views it.
  - outputs: one. torch's result is viewed as numpy (DLPack, or a same-width
    integer view for bfloat16 and float8) and XLA copies it into the result
    buffer it owns. A non-contiguous result is made contiguous first (a
    second copy, by torch).
  On an accelerator, XLA moves the arguments to the host and the results back
  (the pure_callback contract), and torch runs on CPU.

torch, flax and equinox are imported only when a function here is used, so
``import jaxport`` stays light. No Python loop here touches tensor data: the
loops run over pytree leaves (a handful per call).
"""

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["wrap", "wrap_module", "wrap_nnx", "wrap_eqx", "BridgeError"]

_SEQUENTIAL = ("sequential", "sequential_unrolled")
_VMAP_METHODS = _SEQUENTIAL + ("expand_dims", "broadcast_all")


class BridgeError(ValueError):
    """A torch function does not fit the bridge: wrong output shape, dtype or
    device, an output that is not a tensor, an unsupported argument."""


# --- dtypes and arrays ------------------------------------------------------


def _torch():
    import torch
    return torch


def _torch_dtype(dtype):
    torch = _torch()
    name = np.dtype(dtype).name
    t = getattr(torch, name, None)
    if not isinstance(t, torch.dtype):
        raise BridgeError(f"dtype {name} has no torch equivalent")
    return t


def _np_dtype(torch_dtype):
    # torch.float32 -> "float32"; bfloat16 and float8 names resolve through
    # the ml_dtypes types jax registers with numpy.
    name = str(torch_dtype).rsplit(".", 1)[-1]
    try:
        return jnp.dtype(name)
    except TypeError:
        raise BridgeError(f"torch dtype {torch_dtype} has no JAX equivalent") from None


def _is_float(dtype):
    return jnp.issubdtype(dtype, jnp.floating)


def _is_complex(dtype):
    return jnp.issubdtype(dtype, jnp.complexfloating)


def _numpy_native(dtype):
    # numpy's own kinds: what torch.Tensor.numpy() and DLPack can both hand over.
    return np.dtype(dtype).kind in "biufc" and np.dtype(dtype).name in np.sctypeDict


_SAME_WIDTH_INT = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


def _to_torch(a):
    """A host array (jax or numpy) as a torch tensor sharing its memory."""
    torch = _torch()
    if isinstance(a, jax.Array):
        a = np.asarray(a)  # on CPU a view, and faster than the array's own DLPack export
    if isinstance(a, np.ndarray) and not _numpy_native(a.dtype):
        # numpy cannot export ml_dtypes arrays through DLPack: view the bytes
        # as a same-width integer, then reinterpret them in torch.
        iview = a.view(_SAME_WIDTH_INT[a.dtype.itemsize])
        return torch.from_dlpack(iview).view(_torch_dtype(a.dtype))
    return torch.from_dlpack(a)


def _to_host(t, want, path):
    """A torch result as a numpy array sharing its memory, after checking it
    against the shape and dtype JAX was promised."""
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise BridgeError(f"{path}: the torch function returned {type(t).__name__}, not a tensor")
    if t.device.type != "cpu":
        raise BridgeError(
            f"{path}: tensor is on {t.device}; the bridge runs torch on the host and takes back "
            "CPU tensors only (call .cpu() in the torch function, or keep the module on CPU)")
    got_shape = tuple(t.shape)
    want_shape = tuple(want.shape)
    if got_shape != want_shape:
        raise BridgeError(f"{path}: torch returned shape {got_shape}, expected {want_shape}")
    got_dtype = _np_dtype(t.dtype)
    if got_dtype != np.dtype(want.dtype):
        raise BridgeError(f"{path}: torch returned dtype {got_dtype.name}, expected {np.dtype(want.dtype).name}")
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    if _numpy_native(got_dtype):
        return t.numpy()
    return t.view(_torch_dtype(_SAME_WIDTH_INT[got_dtype.itemsize])).numpy().view(got_dtype)


def _check_jax_dtype(dtype, path):
    dt = np.dtype(dtype)
    if jax.dtypes.canonicalize_dtype(dt) != dt:
        raise BridgeError(
            f"{path}: torch returns {dt.name} but jax_enable_x64 is off, so JAX cannot hold it; "
            f"cast it in the torch function (e.g. .to(torch.{dt.name.replace('64', '32')})) "
            "or enable jax_enable_x64")


# --- the host call -------------------------------------------------------------

# Every call of a torch function is one bind of the primitive
# ``jaxport_torch_call``, with the node (the torch function and its
# derivatives, below) and the result avals as parameters. The primitive has
# JAX's three rules of its own: a JVP (another node: torch.func.jvp), a
# transpose for nodes linear in some inputs (the JVP node and the VJP node of
# a function are each other's transposes), and a vmap rule (vmap_method).
#
# Its lowering is jax.pure_callback's (jax._src.callback.emit_python_callback)
# without one step: pure_callback hands its Python function jax arrays, which
# it makes with jax.device_put from XLA's host buffers, a copy and about 75 us
# per argument on CPU (jax 0.10), which dominates a call with a module's
# parameters; here the Python function gets XLA's read-only numpy views of the
# argument buffers. That lowering is a private JAX function: if it is not
# there (another JAX version), the primitive lowers to jax.pure_callback
# instead. Set JAXPORT_BRIDGE_PURE_CALLBACK=1 to force that path.

_PRIM = []


def _prim():
    if not _PRIM:
        import os
        direct = None if os.environ.get("JAXPORT_BRIDGE_PURE_CALLBACK") else _direct_lowering()
        _PRIM.append(_make_primitive(direct))
    return _PRIM[0]


def _direct_lowering():
    """What registers the primitive's evaluation as a host callback that gets
    numpy views, or None where this JAX lacks the private functions it needs."""
    from jax.interpreters import mlir
    try:
        from jax._src import callback as jcb
        from jax._src import dispatch
        emit, op_sharding = jcb.emit_python_callback, jcb._callback_op_sharding
        apply, needs_devices = dispatch.apply_primitive, dispatch.prim_requires_devices_during_lowering
    except (ImportError, AttributeError):
        return None

    def lowering(ctx, *args, node, result_avals, vmap_method):
        sharding = op_sharding(ctx.module_context.axis_context, None, ctx.avals_out)
        result, _, _ = emit(ctx, functools.partial(node.host, result_avals), None, list(args),
                            ctx.avals_in, ctx.avals_out, has_side_effect=False,
                            returns_token=False, sharding=sharding)
        return result

    def register(prim):
        needs_devices.add(prim)
        prim.def_impl(functools.partial(apply, prim))
        mlir.register_lowering(prim, lowering, cacheable=False)

    return register


def _make_primitive(direct):
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    prim = Primitive("jaxport_torch_call")
    prim.multiple_results = True

    def by_callback(*xs, node, result_avals, vmap_method):
        shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in result_avals]
        return jax.pure_callback(functools.partial(node.host, result_avals), shapes, *xs)

    prim.def_abstract_eval(lambda *avals, node, result_avals, vmap_method: result_avals)
    if direct is None:
        prim.def_impl(by_callback)
        mlir.register_lowering(prim, mlir.lower_fun(by_callback, multiple_results=True))
    else:
        direct(prim)
    ad.primitive_jvps[prim] = functools.partial(_jvp_rule, prim)
    ad.primitive_transposes[prim] = functools.partial(_transpose_rule, prim)
    batching.primitive_batchers[prim] = functools.partial(_vmap_rule, prim)
    return prim


def _aval(a):
    return jax.core.ShapedArray(tuple(a.shape), np.dtype(a.dtype))


def _jvp_rule(prim, primals, tangents, *, node, result_avals, vmap_method):
    from jax.interpreters import ad
    outs = prim.bind(*primals, node=node, result_avals=result_avals, vmap_method=vmap_method)
    moving = tuple(i for i, (d, t) in enumerate(zip(node.diff_in, tangents))
                   if d and type(t) is not ad.Zero)
    if not moving or not any(node.diff_out):
        return outs, [ad.Zero(a.to_tangent_aval()) for a in result_avals]
    jvp = node.derived("jvp", moving)
    ts = [ad.instantiate_zeros(tangents[i]) for i in moving]
    touts = iter(jvp.bind(list(primals) + ts,
                          [a for a, d in zip(result_avals, node.diff_out) if d]))
    return outs, [next(touts) if d else ad.Zero(a.to_tangent_aval())
                  for d, a in zip(node.diff_out, result_avals)]


def _transpose_rule(prim, cts, *args, node, result_avals, vmap_method):
    from jax.interpreters import ad
    if node.linear is None or any(ad.is_undefined_primal(a) for i, a in enumerate(args)
                                  if i not in node.linear):
        raise BridgeError("a wrapped torch function was transposed in an input it is not linear in")
    residuals = [a for i, a in enumerate(args) if i not in node.linear]
    cts = [jnp.zeros(a.shape, a.dtype) if type(c) is ad.Zero else c for c, a in zip(cts, result_avals)]
    lin = [args[i] for i in node.linear]
    avals = [_aval(a.aval if ad.is_undefined_primal(a) else a) for a in lin]
    grads = node.transposed().bind(residuals + cts, avals)
    out = [None] * len(args)
    for i, a, g in zip(node.linear, lin, grads):
        if ad.is_undefined_primal(a):
            out[i] = g
    return out


def _vmap_rule(prim, args, dims, *, node, result_avals, vmap_method):
    """vmap_method as jax.pure_callback has it: "sequential" runs one call
    per batch element in a lax.map ("sequential_unrolled": a Python loop);
    "expand_dims" gives unbatched inputs a leading axis of 1 and
    "broadcast_all" tiles them to the batch, for one call on the batch."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    mapped = [i for i, d in enumerate(dims) if d is not None]
    args = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    if vmap_method in _SEQUENTIAL:
        def one(xs):
            full = list(args)
            for i, x in zip(mapped, xs):
                full[i] = x
            return prim.bind(*full, node=node, result_avals=result_avals, vmap_method=vmap_method)

        batched = [args[i] for i in mapped]
        if vmap_method == "sequential":
            outs = jax.lax.map(one, batched)
        else:
            rows = [one([x[k] for x in batched]) for k in range(size)]
            outs = [jnp.stack(col) for col in zip(*rows)]
    else:
        for i, d in enumerate(dims):
            if d is None:
                a = args[i][None]
                args[i] = a if vmap_method == "expand_dims" else jnp.broadcast_to(a, (size,) + a.shape[1:])
        avals = tuple(jax.core.ShapedArray((size,) + a.shape, a.dtype) for a in result_avals)
        outs = prim.bind(*args, node=node, result_avals=avals, vmap_method=vmap_method)
    return list(outs), [0] * len(outs)


# --- one flat torch function and its derivatives ----------------------------


class _Node:
    """A torch function of a flat list of tensors returning a flat list of
    tensors, bound as the primitive above. Its derivatives are nodes too, made
    on first use: ("jvp", moving) is torch.func.jvp of it in the inputs
    `moving`, ("vjp", moving) torch.func.vjp; each is linear in its last
    inputs (the tangents, the cotangents) and the other's transpose there.
    Their own derivatives are made the same way, to any order."""

    def __init__(self, tfn, in_avals, diff_in, out_avals, out_paths, vmap_method, linear=None,
                 parent=None, transposed=None):
        self.tfn = tfn
        self.in_avals = tuple(in_avals)
        self.diff_in = tuple(diff_in)      # bool per input: has a tangent / gets a cotangent
        self.out_avals = tuple(out_avals)
        self.out_paths = tuple(out_paths)
        self.vmap_method = vmap_method
        self.diff_out = tuple(_is_float(a.dtype) or _is_complex(a.dtype) for a in self.out_avals)
        self.linear = linear               # the inputs tfn is linear in (derivative nodes)
        self._parent = parent              # the node this one is a derivative of
        self._transposed = transposed      # (kind, moving): the parent's node that is this one's transpose
        self._derived = {}
        self._lock = threading.Lock()
        # jit: called outside any transformation, one cached dispatch.
        self.call = jax.jit(lambda *xs: self.bind(xs, self.out_avals))

    def bind(self, xs, result_avals):
        return _prim().bind(*xs, node=self, result_avals=tuple(_aval(a) for a in result_avals),
                            vmap_method=self.vmap_method)

    def host(self, result_avals, *arrays):
        torch = _torch()
        with torch.no_grad():
            outs = self.tfn([_to_torch(a) for a in arrays])
        if len(outs) != len(result_avals):
            raise BridgeError(
                f"the torch function returned {len(outs)} tensors, expected {len(result_avals)}")
        return tuple(_to_host(t, a, p) for t, a, p in zip(outs, result_avals, self.out_paths))

    def transposed(self):
        kind, moving = self._transposed
        return self._parent.derived(kind, moving)

    def derived(self, kind, moving):
        with self._lock:
            node = self._derived.get((kind, moving))
            if node is None:
                node = self._derived[(kind, moving)] = self._derive(kind, moving)
            return node

    def _derive(self, kind, moving):
        outs = [k for k, d in enumerate(self.diff_out) if d]
        for a in [self.in_avals[i] for i in moving] + [self.out_avals[k] for k in outs]:
            if _is_complex(a.dtype):
                raise BridgeError("derivatives through complex tensors are not supported by the bridge "
                                  "(torch and JAX use different conventions for them)")
        torch = _torch()
        n, tfn = len(self.in_avals), self.tfn

        def restricted(xs):
            def f(*moved):
                full = list(xs)
                for i, x in zip(moving, moved):
                    full[i] = x
                got = tfn(full)
                return tuple(got[k] for k in outs)
            return f, [xs[i] for i in moving]

        # torch.func transforms ignore the caller's torch.no_grad, so these
        # run under the host's no_grad.
        if kind == "jvp":
            def dtfn(tensors):
                f, at = restricted(tensors[:n])
                return list(torch.func.jvp(f, tuple(at), tuple(tensors[n:]))[1])
            extra = [self.in_avals[i] for i in moving]
            result = [self.out_avals[k] for k in outs]
            paths = [f"tangent of {self.out_paths[k]}" for k in outs]
            other = "vjp"
        else:
            def dtfn(tensors):
                f, at = restricted(tensors[:n])
                grads = torch.func.vjp(f, *at)[1](tuple(tensors[n:]))
                return [torch.zeros_like(x) if g is None else g for x, g in zip(at, grads)]
            extra = [self.out_avals[k] for k in outs]
            result = [self.in_avals[i] for i in moving]
            paths = [f"gradient of input {i}" for i in moving]
            other = "jvp"
        # Under vmap with "expand_dims", an unbatched input reaches torch with
        # a leading axis of 1: its gradient would come back summed over the
        # batch where JAX wants one per batch element, and torch.func.jvp
        # wants a tangent of its primal's shape. "broadcast_all" (the input
        # tiled to the batch) gives both.
        method = "broadcast_all" if self.vmap_method == "expand_dims" else self.vmap_method
        return _Node(dtfn, self.in_avals + tuple(extra), self.diff_in + (True,) * len(extra), result,
                     paths, method, linear=tuple(range(n, n + len(extra))), parent=self,
                     transposed=(other, moving))


# --- wrap -------------------------------------------------------------------


def _is_array(x):
    return isinstance(x, (jax.Array, np.ndarray, np.generic))  # tracers are jax.Arrays


def _struct(x):
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


def _out_name(path):
    return "output" + jax.tree_util.keystr(path)


class _Wrapped:
    """What wrap() returns: one _Node per input signature, made on first call."""

    def __init__(self, fn, out_shapes, example_args, example_kwargs, nondiff_argnums, vmap_method):
        if vmap_method not in _VMAP_METHODS:
            raise BridgeError(f"vmap_method must be one of {_VMAP_METHODS}, not {vmap_method!r}")
        self.fn = fn
        self.out_shapes = out_shapes
        self.nondiff_argnums = frozenset(nondiff_argnums)
        self.vmap_method = vmap_method
        self._nodes = {}
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)
        if example_args is not None or example_kwargs:
            self._node_for(tuple(example_args or ()), dict(example_kwargs or {}), run_example=True)

    def __call__(self, *args, **kwargs):
        node, dyn, out_tree = self._node_for(args, kwargs)
        try:
            out = node.call(*dyn)
        except BridgeError:
            raise
        except (jax.errors.JaxRuntimeError, ValueError) as e:
            # Called outside jit, a BridgeError raised in the callback comes
            # back wrapped by XLA; give it back its class. (Under jit it
            # surfaces at the jitted call, as a JaxRuntimeError whose
            # message holds the BridgeError's.)
            msg = str(e)
            tag = "BridgeError: "
            if tag in msg:
                raise BridgeError(msg[msg.rindex(tag) + len(tag):].splitlines()[0]) from e
            raise
        return jax.tree_util.tree_unflatten(out_tree, out)

    def _node_for(self, args, kwargs, run_example=False):
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        is_dyn = tuple(_is_array(x) for x in leaves)
        dyn = [x for x, d in zip(leaves, is_dyn) if d]
        static = tuple(x for x, d in zip(leaves, is_dyn) if not d)
        in_avals = tuple(_struct(x) for x in dyn)
        key = (treedef, is_dyn, static, tuple((a.shape, a.dtype) for a in in_avals))
        try:
            hash(key)
        except TypeError:
            raise BridgeError("a non-array argument of a wrapped function must be hashable "
                              "(it is passed to torch as is and keys the cache)") from None
        with self._lock:
            hit = self._nodes.get(key)
            if hit is None:
                hit = self._nodes[key] = self._build(args, kwargs, leaves, treedef, is_dyn, static,
                                                     in_avals, dyn if run_example else None)
        node, out_tree = hit
        return node, dyn, out_tree

    def _build(self, args, kwargs, leaves, treedef, is_dyn, static, in_avals, example):
        fn = self.fn
        nondiff = self._nondiff_mask(args, kwargs)
        diff_in = [_is_float(a.dtype) and not nd for a, nd in zip(in_avals, nondiff)]

        def run(tensors):
            it_t, it_s = iter(tensors), iter(static)
            full = [next(it_t) if d else next(it_s) for d in is_dyn]
            a, kw = jax.tree_util.tree_unflatten(treedef, full)
            return fn(*a, **kw)

        out_avals, out_tree, out_paths = self._output_spec(run, args, kwargs, in_avals, example)

        def tfn(tensors):
            flat, tree = jax.tree_util.tree_flatten(run(tensors))
            if tree != out_tree:
                raise BridgeError(f"the torch function returned the structure {tree}, expected {out_tree}")
            return flat

        return _Node(tfn, in_avals, diff_in, out_avals, out_paths, self.vmap_method), out_tree

    def _nondiff_mask(self, args, kwargs):
        mask = []
        for i, a in enumerate(args):
            n = sum(_is_array(x) for x in jax.tree_util.tree_leaves(a))
            mask += [i in self.nondiff_argnums] * n
        n = sum(_is_array(x) for x in jax.tree_util.tree_leaves(kwargs))
        return mask + [False] * n

    def _output_spec(self, run, args, kwargs, in_avals, example):
        given = self.out_shapes
        if given is None:
            given = _infer(run, in_avals, example)
            what = "the torch function"
        else:
            what = "out_shapes"
            if callable(given) and not hasattr(given, "shape"):
                sargs, skw = jax.tree_util.tree_map(lambda x: _struct(x) if _is_array(x) else x,
                                                    (args, kwargs))
                given = given(*sargs, **skw)
        flat, out_tree = jax.tree_util.tree_flatten_with_path(given)
        paths = [_out_name(p) for p, _ in flat]
        avals = []
        for p, (_, s) in zip(paths, flat):
            if not (hasattr(s, "shape") and hasattr(s, "dtype")):
                raise BridgeError(f"{what}: {p} is {type(s).__name__}, not an array "
                                  "(out_shapes takes jax.ShapeDtypeStruct leaves)")
            dt = _np_dtype(s.dtype) if type(s.dtype).__module__.startswith("torch") else np.dtype(s.dtype)
            _check_jax_dtype(dt, p)
            avals.append(jax.ShapeDtypeStruct(tuple(s.shape), dt))
        return avals, out_tree, paths


def _infer(run, in_avals, example):
    """Run the torch function once to learn its outputs: on the example values
    when given, else on meta tensors (shapes only, no computation), falling
    back to zeros on CPU when the function cannot run on meta tensors."""
    torch = _torch()
    with torch.no_grad():
        if example is not None:
            return run([_to_torch(np.asarray(x)) for x in example])
        try:
            return run([torch.empty(a.shape, dtype=_torch_dtype(a.dtype), device="meta")
                        for a in in_avals])
        except Exception:
            return run([torch.zeros(a.shape, dtype=_torch_dtype(a.dtype)) for a in in_avals])


def wrap(fn, out_shapes=None, *, example_args=None, example_kwargs=None, nondiff_argnums=(),
         vmap_method="sequential"):
    """Turn ``fn``, a function of (pytrees of) torch tensors, into a function of
    (pytrees of) JAX arrays that works under jax.jit, vmap and every
    derivative (grad, vjp, jvp, jacfwd, hessian, to any order).

    Array leaves of the arguments (jax arrays, numpy arrays, tracers) reach
    ``fn`` as CPU torch tensors; other leaves (ints, strings, None) reach it as
    they are and must be hashable. ``fn`` returns a pytree of CPU tensors.

    out_shapes: the outputs' shapes and dtypes, a pytree of
        ``jax.ShapeDtypeStruct``, or a function of the arguments (array leaves
        as ShapeDtypeStruct) returning one. Left out, they are learnt once per
        input signature by running ``fn`` on meta tensors (no computation), or
        on zeros when ``fn`` cannot run on meta tensors.
    example_args, example_kwargs: learn the outputs now, by running ``fn`` on
        these values once.
    nondiff_argnums: positional arguments that get no gradient (always zero)
        and whose tangent is taken as zero; integer and boolean leaves never
        get one (their cotangent is float0).
    vmap_method: how jax.vmap runs the callback (see jax.pure_callback):
        "sequential" (default) calls ``fn`` once per batch element;
        "expand_dims" and "broadcast_all" call it once on the whole batch, for
        functions that broadcast over leading axes.
    """
    return _Wrapped(fn, out_shapes, example_args, example_kwargs, nondiff_argnums, vmap_method)


# --- modules ----------------------------------------------------------------


def _tensor_to_jax(t, what):
    """A parameter or buffer as a JAX array (a copy: the JAX array must not
    change when torch later updates the module in place)."""
    if t.device.type != "cpu":
        raise BridgeError(f"{what} is on {t.device}; wrap_module takes a module on CPU "
                          "(module.cpu()), since the bridge runs torch on the host")
    dt = _np_dtype(t.dtype)
    want = jax.dtypes.canonicalize_dtype(dt)
    host = _to_host(t, jax.ShapeDtypeStruct(tuple(t.shape), dt), what)
    return jnp.array(host.astype(want) if want != dt else host, copy=True)


def wrap_module(module, *, out_shapes=None, example_args=None, vmap_method="sequential"):
    """A ``torch.nn.Module`` as ``(apply_fn, variables)``.

    ``variables`` is ``{"params": {name: array}, "buffers": {name: array}}``
    with the names of ``module.state_dict()``; ``apply_fn(variables, *inputs,
    **kw)`` runs the module through ``torch.func.functional_call`` and is
    differentiable with respect to the params and the inputs (the buffers get
    zero gradients). Buffers that are not floating point (BatchNorm's
    num_batches_tracked) stay in the module and are not in ``variables``.
    The module is put in eval mode (training mode would
    update buffers such as BatchNorm's running statistics in place, a side
    effect a JAX function may not have). The arrays are copies made now;
    64-bit parameters become 32-bit unless jax_enable_x64 is on.
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise BridgeError(f"wrap_module takes a torch.nn.Module, not {type(module).__name__}")
    module.eval()
    params = {n: _tensor_to_jax(p, f"parameter {n!r}") for n, p in module.named_parameters()}
    # Integer buffers (BatchNorm's num_batches_tracked) are only read in
    # training mode; left in the module, they keep jax.grad(variables) legal.
    buffers = {n: _tensor_to_jax(b, f"buffer {n!r}") for n, b in module.named_buffers()
               if b.is_floating_point()}

    def call(params, buffers, *args, **kwargs):
        if module.training:
            raise BridgeError("the wrapped module was put back in training mode; the bridge runs it "
                              "in eval mode only")
        return torch.func.functional_call(module, {**params, **buffers}, args, kwargs)

    if example_args is not None:
        example_args = (params, buffers, *example_args)
    if callable(out_shapes) and not hasattr(out_shapes, "shape"):
        given = out_shapes
        out_shapes = lambda p, b, *a, **kw: given(*a, **kw)  # noqa: E731
    core = wrap(call, out_shapes, example_args=example_args, nondiff_argnums=(1,),
                vmap_method=vmap_method)

    def apply_fn(variables, *args, **kwargs):
        return core(variables["params"], variables["buffers"], *args, **kwargs)

    apply_fn.__name__ = f"apply_{type(module).__name__}"
    return apply_fn, {"params": params, "buffers": buffers}


@functools.cache
def _nnx_class():
    from flax import nnx

    class TorchNNX(nnx.Module):
        """A torch module inside a Flax NNX model: its parameters are
        ``nnx.Param`` (trained by nnx optimizers, differentiated by nnx.grad),
        its buffers ``nnx.BatchStat`` (not differentiated)."""

        def __init__(self, module, **wrap_kw):
            apply_fn, v = wrap_module(module, **wrap_kw)
            self.apply_fn = nnx.static(apply_fn)
            self.params = nnx.data({n: nnx.Param(a) for n, a in v["params"].items()})
            self.buffers = nnx.data({n: nnx.BatchStat(a) for n, a in v["buffers"].items()})

        def __call__(self, *args, **kwargs):
            params = {n: p[...] for n, p in self.params.items()}
            buffers = {n: b[...] for n, b in self.buffers.items()}
            return self.apply_fn({"params": params, "buffers": buffers}, *args, **kwargs)

    return TorchNNX


@functools.cache
def _eqx_class():
    import equinox as eqx

    class TorchEqx(eqx.Module):
        """A torch module inside an Equinox model: ``params`` and ``buffers``
        are dicts of arrays (the buffers behind jax.lax.stop_gradient, so
        eqx.filter_grad gives them zeros)."""

        params: dict
        buffers: dict
        apply_fn: object = eqx.field(static=True)

        def __init__(self, module, **wrap_kw):
            apply_fn, v = wrap_module(module, **wrap_kw)
            self.apply_fn = apply_fn
            self.params = v["params"]
            self.buffers = v["buffers"]

        def __call__(self, *args, **kwargs):
            buffers = jax.lax.stop_gradient(self.buffers)
            return self.apply_fn({"params": self.params, "buffers": buffers}, *args, **kwargs)

    return TorchEqx


def wrap_nnx(module, **wrap_kw):
    """A torch module as a ``flax.nnx.Module`` (see wrap_module)."""
    return _nnx_class()(module, **wrap_kw)


def wrap_eqx(module, **wrap_kw):
    """A torch module as an ``equinox.Module`` (see wrap_module)."""
    return _eqx_class()(module, **wrap_kw)
