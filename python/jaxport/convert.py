"""jaxport.convert: a PyTorch checkpoint into the JAX model you pass, in one
call. Matching and moving the bytes happen in C (the matcher and the
executor); this module wraps a state dict's buffers as arrays, reads the
target's leaves and puts the new arrays back into an object of the same kind.
"""

import os
import sys

import numpy as np

from . import _core
from .io import numpy_dtypes
from .match import Plan, _rule_list, haiku_batch_norm_stats, is_haiku_pair, nnx_weights, target_leaves

__all__ = ["convert", "autoconvert", "source_index"]


def _torch_array(t):
    """A numpy view of a CPU tensor's memory (strides kept, no copy);
    bfloat16 and float8 through ml_dtypes. Tensors on a device are copied to
    the host once."""
    import torch
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    special = {torch.bfloat16: ("int16", "bfloat16")}
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
        if hasattr(torch, name):
            special[getattr(torch, name)] = ("uint8", name)
    if t.dtype in special:
        raw, np_name = special[t.dtype]
        return t.view(getattr(torch, raw)).numpy().view(numpy_dtypes()[np_name])
    return t.numpy()


def state_of(src):
    """The tensors of a live source by name: a module's state_dict(), an
    ExportedProgram's state_dict then its tensor constants (as
    torch.export.save writes them), or src itself (a state dict)."""
    state = getattr(src, "state_dict", src)
    if callable(state):
        return state()
    if state is not src:  # an ExportedProgram: state_dict is a property
        return {**state, **getattr(src, "constants", {})}
    return src


def source_index(src, *, allow_unsafe=False):
    """An index of the source tensors: `src` is a path jaxport reads, an
    open index, a torch.nn.Module, a torch.export.ExportedProgram (its
    state_dict, then its tensor constants, as torch.export.save writes them)
    or a state dict (tensors are viewed, not copied, while on the CPU)."""
    if isinstance(src, _core.Index):
        return src
    if isinstance(src, str | os.PathLike):
        return _core.open(os.fspath(src), allow_unsafe=allow_unsafe)
    state = state_of(src)
    if not hasattr(state, "items"):
        raise TypeError("src must be a path, a torch.nn.Module, an ExportedProgram or a state dict, "
                        f"not {type(src).__name__}")
    import torch
    names = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
    return _core.from_arrays(names, [_torch_array(state[k]) for k in names])


def _jax_arrays(arrays, placements):
    """The converted numpy arrays as jax arrays, each placed as `like`'s leaf
    of that path was (placements: path -> sharding) when that was anywhere
    but JAX's default device, others on that device, uncommitted as they
    were. On the CPU a jax array keeps its numpy array's memory (the engine
    allocates on 64-byte lines, which XLA's CPU client takes as they are:
    device_put's may_alias), so the model is not copied a second time; for
    an accelerator, or split over devices, each is copied once, straight to
    its place."""
    import jax
    default = jax.devices()[0]
    names, where = [], []  # one device_put for each kind: a call costs more than an alias
    for name, s in placements.items():
        if name in arrays and not (s.device_set == {default} and s.is_fully_replicated):
            names.append(name)
            where.append(s)
    placed = set(names)
    rest = [n for n in arrays if n not in placed]
    out = dict(zip(rest, jax.device_put([arrays[n] for n in rest], may_alias=True)))
    if names:
        out.update(zip(names, jax.device_put([arrays[n] for n in names], where, may_alias=True)))
    return out


def _rebuild(like, lib, arrays, placements, keep_missing):
    """`like` with its leaves replaced by `arrays` (leaf path -> array), as
    jax arrays placed as `_jax_arrays` says, in an object of the same kind;
    with keep_missing, leaves `arrays` lacks stay as they are in `like`."""
    import jax
    from . import trees
    device = _jax_arrays(arrays, placements)
    if lib == "nnx":
        from flax import nnx
        if isinstance(like, nnx.Module):
            nnx.update(like, trees.unflatten(nnx_weights(like), device, keep_missing))
            return like
        if isinstance(like, nnx.State):  # its random-number streams come back as they were
            if hasattr(nnx, "split_state"):  # flax 0.12 deprecates State.split and State.merge
                weights, streams = nnx.split_state(like, nnx.Not(nnx.RngState), ...)
                return nnx.merge_state(trees.unflatten(weights, device, keep_missing), streams)
            weights, streams = like.split(nnx.Not(nnx.RngState), ...)
            return nnx.State.merge(trees.unflatten(weights, device, keep_missing), streams)
        return trees.unflatten(like, device, keep_missing)
    if lib == "haiku" and is_haiku_pair(like):
        params, state = like
        return trees.unflatten(params, device, keep_missing), _fill_haiku_state(state, device)
    if lib == "equinox":
        model, state = like if isinstance(like, tuple) else (like, None)
        names, leaves = trees.flatten(model)
        treedef = jax.tree_util.tree_structure(model)
        model = treedef.unflatten([device.get(n, x) for n, x in zip(names, leaves)])
        if state is None:
            return model
        return model, _fill_eqx_state(model, state, device)
    return trees.unflatten(like, device, keep_missing)


def _fill_eqx_state(model, state, arrays):
    """state with each BatchNorm's running statistics from arrays (those a
    lenient conversion did not pair are left as they were). A BatchNorm so
    filled is marked as past its first step, as PyTorch's is: otherwise
    Equinox's first training step would replace the statistics with those of
    one batch."""
    import jax.numpy as jnp
    from .match import eqx_batch_norms
    for prefix, bn in eqx_batch_norms(model):
        mean, var = arrays.get(prefix + "/running_mean"), arrays.get(prefix + "/running_var")
        if mean is not None and var is not None:
            state = state.set(bn.ema_state_index, (mean, var))
            if bn.ema_first_time_index is not None:
                state = state.set(bn.ema_first_time_index, jnp.array(False))
    return state


# A Haiku moving average divides its hidden value by 1 - decay ** counter.
# PyTorch's statistics are not debiased so: with this counter the divisor is
# 1 for any decay, and the average goes on from PyTorch's as PyTorch's would.
_HAIKU_COUNTER = 1 << 30


def _fill_haiku_state(state, arrays):
    """A copy of a Haiku state with each BatchNorm moving average set from
    arrays: its average and hidden value to PyTorch's statistic, its counter
    past the debiasing (those a lenient conversion did not pair are kept)."""
    import jax.numpy as jnp
    out = {key: dict(entry) for key, entry in state.items()}
    for key, name in haiku_batch_norm_stats(state):
        if name in arrays:
            ema = out[key]
            ema["average"] = ema["hidden"] = arrays[name]
            ema["counter"] = jnp.asarray(_HAIKU_COUNTER, jnp.asarray(ema["counter"]).dtype)
    return out


class _Bar:
    """A progress line on stderr: tqdm when it is installed, a plain one if not."""

    def __init__(self, label):
        self.label, self.tqdm, self.shown = label, None, False

    def __call__(self, done, total, name):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            if self.tqdm is None:
                self.tqdm = tqdm(total=total, unit="B", unit_scale=True, desc=self.label, leave=False)
            self.tqdm.update(done - self.tqdm.n)
            return
        pct = 100.0 * done / total if total else 100.0
        sys.stderr.write(f"\r{self.label}: {pct:5.1f}%  {done / 2**20:8.1f} / {total / 2**20:.1f} MiB  {name[:40]:<40}")
        sys.stderr.flush()
        self.shown = True

    def close(self):
        if self.tqdm is not None:
            self.tqdm.close()
        elif self.shown:
            sys.stderr.write("\r\033[K")


def _progress(progress, specs):
    """The callback for `progress`: None shows a bar on a terminal for
    conversions whose leaves hold over 256 MiB, True always, False never; a function is used
    as it is."""
    if callable(progress):
        return progress, None
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None, a bool or a function (done, total, name), not {progress!r}")
    if progress is None:
        sizes = numpy_dtypes()
        big = sum(int(np.prod(shape)) * sizes[dt].itemsize for _, shape, dt, _ in specs) > (256 << 20)
        progress = big and sys.stderr.isatty()
    if not progress:
        return None, None
    bar = _Bar("jaxport.convert")
    return bar, bar


def _mapping_text(mapping):
    """A plan's JSON from a Plan or a saved file (None: match afresh)."""
    if mapping is None or isinstance(mapping, Plan):
        return None if mapping is None else mapping.json
    with open(mapping, encoding="utf-8") as f:
        return f.read()


def convert(src, like, *, to=None, hints=(), rules=None, mapping=None, dtype=None, strict=True, flatten=None,
            ordered=False, allow_unused=False, allow_unsafe=False, threads=0, progress=None,
            return_plan=False):
    """The PyTorch weights of `src` in the shape of `like`.

    src: a path jaxport reads (.pt, .pt2, .bin, .safetensors, sharded
    index...), a torch.nn.Module, a torch.export.ExportedProgram or a state
    dict. like: Flax linen params or variables
    (with batch_stats), an NNX module (updated in place through nnx.update and
    returned) or nnx.State, an Equinox module, a list or dict of them, or
    (module, state) pair (the state gets BatchNorm running statistics),
    Haiku params. Returns an
    object of the same kind holding jax arrays; with return_plan, also the
    Plan. The library is told from `like`; `to` overrides it.

    hints, rules, flatten, ordered: as jaxport.match; mapping: a Plan or a
    saved plan file to run instead of matching. dtype casts
    floating leaves (float16/bfloat16/float32/float64) in C. strict (the
    default) raises MatchError or AmbiguousError, naming the leaf and why,
    when any leaf has no source, and MatchError when a source weight would be
    left behind (allow_unused=True drops those; BatchNorm counters and tied
    copies never count); strict=False keeps unpaired leaves as they are in
    `like`. progress: None shows a progress bar (tqdm if installed) on a
    terminal for conversions over 256 MiB, True always, False never, or a
    function (done_bytes, total_bytes, leaf_name)."""
    index = source_index(src, allow_unsafe=allow_unsafe)
    placements = {}
    lib, specs = target_leaves(like, to, placements)
    mapping_text = _mapping_text(mapping)
    if dtype is not None and not isinstance(dtype, str):
        dtype = np.dtype(dtype).name
    callback, bar = _progress(progress, specs)
    try:
        text, arrays = _core.convert(index, specs, lib=lib, hints=tuple(hints), rules=_rule_list(rules),
                                     ordered=ordered, flatten=flatten, dtype=dtype, mapping=mapping_text,
                                     dtypes=numpy_dtypes(), strict=strict, threads=threads,
                                     allow_unused=allow_unused, progress=callback)
    finally:
        if bar is not None:
            bar.close()
    out = _rebuild(like, lib, arrays, placements, keep_missing=not strict)
    return (out, Plan(text, index, lib)) if return_plan else out


def autoconvert(model, state_dict, **kwargs):
    """statedict2pytree's call: an Equinox model (or (model, state)) and a
    PyTorch state dict (or module, or path) in, (model, state) out, the state holding BatchNorm
    running statistics. Pairing is by names and shapes, not by order, so
    fields need not be declared in PyTorch's order."""
    import equinox as eqx
    if not isinstance(model, tuple):
        try:  # the State Equinox builds for a model made without make_with_state
            model = eqx.nn.make_with_state(lambda: model)()
        except ValueError as e:
            raise TypeError("this model came from eqx.nn.make_with_state, which keeps its initial state "
                            "only in the State it returned: pass (model, state)") from e
    return convert(state_dict, model, to="equinox", **kwargs)
