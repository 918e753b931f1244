"""The runtime bridge: call PyTorch code from JAX, under jit, grad, vjp and vmap.

``wrap(fn)`` turns a function of torch tensors into a function of JAX arrays.
Each call becomes one host callback (the lowering of ``jax.pure_callback``)
whose Python function hands XLA's buffers to torch through DLPack, runs ``fn``
under ``torch.no_grad`` and hands torch's results back. Gradients go through
``jax.custom_vjp``: the backward pass is itself a wrapped torch function, the
``torch.func.vjp`` of the forward one, so it can be differentiated again (grad
of grad), to any order.

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


def _to_host(t, want, path, exact):
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
    ok = got_shape == want_shape if exact else (
        len(got_shape) >= len(want_shape) and got_shape[len(got_shape) - len(want_shape):] == want_shape)
    if not ok:
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

# jax.pure_callback hands its Python function jax arrays, which it makes with
# jax.device_put from XLA's host buffers: a copy and about 75 us per argument
# on CPU (jax 0.10), which dominates a call with a module's parameters. The
# primitive below is pure_callback without that step: the same lowering
# (jax._src.callback.emit_python_callback), the same vmap rule (the FFI's,
# with vmap_method), but its Python function gets XLA's read-only numpy views
# of the argument buffers. These are private JAX functions: if they are not
# there (another JAX version), the bridge uses jax.pure_callback instead.
# Set JAXPORT_BRIDGE_PURE_CALLBACK=1 to force that path.

_PRIM = []


def _host_call_primitive():
    if not _PRIM:
        _PRIM.append(_make_host_call_primitive())
    return _PRIM[0]


def _make_host_call_primitive():
    import os
    if os.environ.get("JAXPORT_BRIDGE_PURE_CALLBACK"):
        return None
    try:
        from jax._src import callback as jcb
        from jax._src import core as jcore
        from jax._src import dispatch, ffi
        from jax._src.interpreters import batching, mlir
        emit, op_sharding = jcb.emit_python_callback, jcb._callback_op_sharding
        prim = jcore.Primitive("jaxport_torch_call")
        prim.multiple_results = True
        dispatch.prim_requires_devices_during_lowering.add(prim)
        prim.def_impl(functools.partial(dispatch.apply_primitive, prim))
        prim.def_abstract_eval(lambda *avals, host, result_avals, vmap_method: result_avals)
        batching.primitive_batchers[prim] = functools.partial(ffi.ffi_batching_rule, prim)

        def lowering(ctx, *args, host, result_avals, vmap_method):
            sharding = op_sharding(ctx.module_context.axis_context, None, ctx.avals_out)
            result, _, _ = emit(ctx, host, None, list(args), ctx.avals_in, ctx.avals_out,
                                has_side_effect=False, returns_token=False, sharding=sharding)
            return result

        mlir.register_lowering(prim, lowering, cacheable=False)
        return prim
    except (ImportError, AttributeError, TypeError):
        return None


# --- one flat torch function as a differentiable JAX function ---------------


class _Node:
    """A torch function of a flat list of tensors returning a flat list of
    tensors, with fixed input and output avals, as a JAX function with a custom
    VJP whose backward pass is another _Node (built on first use)."""

    def __init__(self, tfn, in_avals, diff_in, out_avals, out_paths, vmap_method):
        self.tfn = tfn
        self.in_avals = tuple(in_avals)
        self.diff_in = tuple(diff_in)      # bool per input: gets a cotangent
        self.out_avals = tuple(out_avals)
        self.out_paths = tuple(out_paths)
        self.vmap_method = vmap_method
        self.exact = vmap_method in _SEQUENTIAL
        self.diff_out = tuple(_is_float(a.dtype) or _is_complex(a.dtype) for a in self.out_avals)
        self._bwd = None
        self._lock = threading.Lock()

        @jax.custom_vjp
        def call(*xs):
            return self._callback(xs)

        def fwd(*xs):
            # call, not _callback: under an outer derivative (grad of grad)
            # the forward pass must itself be differentiable.
            return call(*xs), xs

        def bwd(xs, cts):
            return self._backward(xs, cts)

        call.defvjp(fwd, bwd)
        # jit: called outside any transformation, one cached dispatch instead
        # of the custom_vjp machinery run op by op; inside one, it inlines.
        self.call = jax.jit(call)

    def _callback(self, xs):
        prim = _host_call_primitive()
        if prim is None:
            return jax.pure_callback(self._host, self.out_avals, *xs, vmap_method=self.vmap_method)
        avals = tuple(jax.core.ShapedArray(a.shape, a.dtype) for a in self.out_avals)
        return prim.bind(*xs, host=self._host, result_avals=avals, vmap_method=self.vmap_method)

    def _host(self, *arrays):
        torch = _torch()
        with torch.no_grad():
            outs = self.tfn([_to_torch(a) for a in arrays])
        if len(outs) != len(self.out_avals):
            raise BridgeError(
                f"the torch function returned {len(outs)} tensors, expected {len(self.out_avals)}")
        return tuple(_to_host(t, a, p, self.exact) for t, a, p in zip(outs, self.out_avals, self.out_paths))

    def _backward(self, xs, cts):
        n_in = sum(self.diff_in)
        n_out = sum(self.diff_out)
        if n_in == 0 or n_out == 0:
            return tuple(None for _ in xs)
        node = self._backward_node()
        cts_diff = [c for c, d in zip(cts, self.diff_out) if d]
        grads = iter(node.call(*xs, *cts_diff))
        return tuple(next(grads) if d else None for d in self.diff_in)

    def _backward_node(self):
        with self._lock:
            if self._bwd is None:
                self._bwd = self._make_backward_node()
            return self._bwd

    def _make_backward_node(self):
        for a, d in zip(self.in_avals + self.out_avals, self.diff_in + self.diff_out):
            if d and _is_complex(a.dtype):
                raise BridgeError("gradients through complex tensors are not supported by the bridge "
                                  "(torch and JAX use different conventions for them)")
        torch = _torch()
        n = len(self.in_avals)
        diff_in, diff_out, tfn = self.diff_in, self.diff_out, self.tfn

        def vjp_tfn(tensors):
            xs, cts = tensors[:n], tensors[n:]
            diff_idx = [i for i, d in enumerate(diff_in) if d]

            def f(*diff_xs):
                full = list(xs)
                for i, x in zip(diff_idx, diff_xs):
                    full[i] = x
                outs = tfn(full)
                return tuple(o for o, d in zip(outs, diff_out) if d)

            # torch.func.vjp ignores the caller's torch.no_grad (it is a
            # function transform), so this runs under the host's no_grad.
            _, pullback = torch.func.vjp(f, *[xs[i] for i in diff_idx])
            grads = pullback(tuple(cts))
            return [torch.zeros_like(xs[i]) if g is None else g for i, g in zip(diff_idx, grads)]

        ct_avals = [a for a, d in zip(self.out_avals, diff_out) if d]
        grad_avals = [a for a, d in zip(self.in_avals, diff_in) if d]
        paths = [f"gradient of input {i}" for i, d in enumerate(diff_in) if d]
        # Under vmap with "expand_dims", an unbatched input reaches torch with
        # a leading axis of 1, and its gradient would come back summed over
        # the batch; JAX wants one per batch element, which "broadcast_all"
        # (the input tiled to the batch) gives.
        method = "broadcast_all" if self.vmap_method == "expand_dims" else self.vmap_method
        return _Node(vjp_tfn, list(self.in_avals) + ct_avals, list(diff_in) + [True] * len(ct_avals),
                     grad_avals, paths, method)


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
    (pytrees of) JAX arrays that works under jax.jit, grad, vjp and vmap.

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
    nondiff_argnums: positional arguments that get no gradient (always zero);
        integer and boolean leaves never get one (their cotangent is float0).
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
    host = _to_host(t, jax.ShapeDtypeStruct(tuple(t.shape), dt), what, True)
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
