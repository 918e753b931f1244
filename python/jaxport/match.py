"""jaxport.match: pair a checkpoint's tensors with the leaves of a JAX model.

The pairing is done in C (src/match); this module only flattens the target
model into (path, shape, dtype) leaves, tells which library built it, and
wraps the resulting plan.
"""

import json

import numpy as np

from . import _core

__all__ = ["Plan", "match", "target_leaves", "detect_library"]


def detect_library(like, names=None):
    """'flax', 'nnx', 'equinox' or 'haiku', from the object itself (names:
    its leaf names, when the caller has flattened it already)."""
    lib = _object_library(like)
    if lib is not None:
        return lib
    if names is None:
        from . import trees
        names, _ = trees.flatten(like)
    return _core.library_of(names)


def _object_library(like):
    """The library when the object's type tells it (Equinox, NNX); None for
    plain dicts, told apart by their leaf names."""
    lib = None
    try:
        import equinox as eqx
        first = like[0] if isinstance(like, tuple) and like else like
        # a module, (module, state), or a list or dict of modules
        members = first.values() if isinstance(first, dict) else first if isinstance(first, list) else [first]
        if any(isinstance(m, eqx.Module) for m in members):
            lib = "equinox"
    except ImportError:
        pass
    try:
        from flax import nnx
        if lib is None and isinstance(like, nnx.Module | nnx.State):
            lib = "nnx"
    except ImportError:
        pass
    return lib


def nnx_weights(like):
    """An NNX module's state, or an nnx.State, less its random-number streams
    (the keys and counts nnx.Rngs keeps, in Dropout or RNN): no checkpoint
    holds those."""
    from flax import nnx
    if isinstance(like, nnx.State):
        if hasattr(nnx, "filter_state"):  # flax 0.12 deprecates State.filter for it
            return nnx.filter_state(like, nnx.Not(nnx.RngState))
        return like.filter(nnx.Not(nnx.RngState))
    return nnx.state(like, nnx.Not(nnx.RngState))


def target_leaves(like, to=None, placements=None):
    """(library, [(path, shape, dtype name, owner class)]) for a JAX model
    or its params. placements, a dict, gets path -> sharding for each leaf
    that has one (jax arrays, and ShapeDtypeStructs given one)."""
    from . import trees
    lib = to or _object_library(like)
    root = like
    if lib == "nnx":
        from flax import nnx
        if isinstance(like, nnx.Module | nnx.State):
            like = nnx_weights(like)
    state_leaves = []
    if lib == "equinox" and isinstance(like, tuple) and len(like) == 2:
        root, state_leaves = like[0], eqx_state_leaves(*like)
        like = like[0]
    elif lib in (None, "haiku") and is_haiku_pair(like):
        lib, state = "haiku", like[1]
        state_leaves = [(name, state[key]["average"]) for key, name in haiku_batch_norm_stats(state)]
        root = like = like[0]
    names, leaves = trees.flatten(like)
    if lib is None:
        lib = detect_library(like, names)
    kinds = _owner_classes(root, names) if lib in ("equinox", "nnx") else [None] * len(names)
    names += [n for n, _ in state_leaves]
    leaves += [x for _, x in state_leaves]
    kinds += ["BatchNorm"] * len(state_leaves)
    specs = []
    for name, leaf, kind in zip(names, leaves, kinds):
        # Equinox keeps Python numbers (dropout rates) as leaves, and a
        # StateIndex holds the initial state of a layer, not weights.
        if not hasattr(leaf, "shape") or kind == "StateIndex":
            continue
        dtype = np.dtype(leaf.dtype).name
        specs.append((name, tuple(leaf.shape), dtype, kind))
        if placements is not None and getattr(leaf, "sharding", None) is not None:
            placements[name] = leaf.sharding
    return lib, specs


def eqx_batch_norms(model):
    """(path, layer) for each Equinox BatchNorm keeping running statistics
    (in an eqx.nn.State, not in the model). The statistics are named after
    the layer, as PyTorch does: path + "/running_mean", "/running_var"."""
    import equinox as eqx
    import jax
    from . import trees
    is_bn = lambda x: isinstance(x, eqx.nn.BatchNorm)  # noqa: E731
    for path, node in jax.tree_util.tree_flatten_with_path(model, is_leaf=is_bn)[0]:
        if is_bn(node) and node.ema_state_index is not None:
            yield trees._path_name(path), node


# Where hk.BatchNorm keeps its running statistics: moving averages named
# "<layer>/~/mean_ema" and "<layer>/~/var_ema" in the state, whose "average"
# is what the layer normalises with.
HAIKU_EMA = {"mean_ema": "running_mean", "var_ema": "running_var"}


def haiku_batch_norm_stats(state):
    """(state key, the statistic's name after the layer, as PyTorch names
    it: "<layer>/running_mean") for each Haiku BatchNorm moving average in a
    Haiku state dict."""
    for key, entry in state.items():
        layer, sep, last = key.rpartition("/~/")
        if sep and last in HAIKU_EMA and hasattr(entry, "get") and entry.get("average") is not None:
            yield key, f"{layer}/{HAIKU_EMA[last]}"


def is_haiku_pair(like):
    """Haiku's (params, state): a pair of dicts, the second holding moving
    averages (Flax keeps its statistics in one variables dict instead)."""
    return (isinstance(like, tuple) and len(like) == 2 and all(hasattr(x, "items") for x in like)
            and any(True for _ in haiku_batch_norm_stats(like[1])))


def eqx_state_leaves(model, state):
    """The running statistics of the model's BatchNorms, named so they pair
    with PyTorch's by name."""
    out = []
    for prefix, bn in eqx_batch_norms(model):
        mean, var = state.get(bn.ema_state_index)
        out += [(prefix + "/running_mean", mean), (prefix + "/running_var", var)]
    return out


def _owner_classes(root, names):
    """For each leaf name ("conv/kernel"), the class name of the object
    holding it (an Equinox or NNX layer), found by walking `root`: it tells a
    ConvTranspose from a Conv where shapes cannot, and NNX's ConvTranspose
    says "(transpose_kernel=True)" after its name when it is."""
    out = []
    for name in names:
        node = root
        inside_state = False
        for part in name.split("/")[:-1]:
            if isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                node = getattr(node, part, None)
            if node is None:
                break
            inside_state |= type(node).__name__ == "StateIndex"
        kind = type(node).__name__ if node is not None else None
        if getattr(node, "transpose_kernel", False) is True:  # NNX's ConvTranspose: the shape cannot tell
            kind += "(transpose_kernel=True)"
        out.append("StateIndex" if inside_state else kind)
    return out


def _rule_list(rules):
    """{regex: replacement} (or pairs) as the flat tuple the C side takes."""
    items = rules.items() if hasattr(rules, "items") else (rules or ())
    return tuple(x for pair in items for x in pair)


class Plan:
    """What goes where: for each target leaf, the source tensor(s) and the
    transforms. ``print(plan)`` shows a table; ``plan.save(path)`` writes the
    editable mapping file that ``match(..., mapping=path)`` reads back."""

    def __init__(self, text, index, library):
        self.json = text
        self.index = index
        self.library = library
        self._data = None

    @property
    def data(self):
        """The plan as Python data (parsed when first asked for)."""
        if self._data is None:
            self._data = json.loads(self.json)
        return self._data

    @property
    def leaves(self):
        return self.data["leaves"]

    @property
    def unused(self):
        return self.data["unused"]

    @property
    def problems(self):
        """Leaves without a source: (path, reason)."""
        return [(l["leaf"], l.get("missing") or l.get("ambiguous")) for l in self.leaves if "from" not in l]

    @property
    def ok(self):
        return not self.problems

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.json)
            f.write("\n")

    def __str__(self):
        return _core.plan_table(self.json).rstrip("\n")

    __repr__ = __str__


def match(src, like, *, to=None, hints=(), rules=None, ordered=False, flatten=None, dtype=None,
          mapping=None, allow_unsafe=False):
    """Pair the tensors of `src` (a path jaxport reads, a torch.nn.Module or
    a state dict) with
    the leaves of `like` (Flax params or variables, an NNX module or State, an
    Equinox module, Haiku params) and return the Plan.

    hints: "src_module=target_module" strings for pairs the matcher cannot
    tell apart; rules: {regex: replacement} applied to source names first;
    ordered: pair leaf by leaf in order (statedict2pytree's way); flatten:
    (C, H, W) of the feature map a Linear flattens after a conv stack, for an
    NHWC target; dtype: cast floating leaves; mapping: a saved plan to use
    instead of matching (refused if it was made for other models).
    """
    from .convert import source_index
    index = source_index(src, allow_unsafe=allow_unsafe)
    lib, specs = target_leaves(like, to)
    from .convert import _mapping_text
    mapping_text = _mapping_text(mapping)
    text = _core.match(index, specs, lib=lib, hints=tuple(hints), rules=_rule_list(rules), ordered=ordered,
                       flatten=flatten, dtype=None if dtype is None else np.dtype(dtype).name if not isinstance(dtype, str) else dtype,
                       mapping=mapping_text)
    return Plan(text, index, lib)
