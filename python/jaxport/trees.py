"""Pytrees to and from named leaves, for the formats whose files name tensors
by their place in a tree (Flax msgpack) or not at all (Equinox .eqx).

A leaf is named by its path with '/' between keys, as Flax shows parameter
paths: ``{"Dense_0": {"kernel": w}}`` gives ``"Dense_0/kernel"``, an Equinox
module ``mlp.layers[0].weight`` gives ``"layers/0/weight"``. A ``flax.nnx``
Variable counts as one leaf, named by the path of the Variable. These are the
names the msgpack reader gives tensors, so a file read by jaxport pairs with
``like=`` by name.

Only leaves are looped over here, never tensor data.
"""

import jax
import numpy as np

__all__ = ["flatten", "unflatten", "state_dict_flatten", "eqx_flatten", "eqx_unflatten"]

SEP = "/"


def _key_name(key):
    # DictKey.key, GetAttrKey.name, SequenceKey.idx, FlattenedIndexKey.key
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_name(path):
    return SEP.join(_key_name(k) for k in path)


def _nnx_variable_type():
    try:
        from flax import nnx
    except ImportError:
        return None
    return nnx.Variable


def _flatten_with_path(tree):
    """(paths, leaves, treedef, variable type) with nnx Variables kept whole."""
    var = _nnx_variable_type()
    is_leaf = (lambda x: isinstance(x, var)) if var else None
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    paths = [p for p, _ in pairs]
    leaves = [x for _, x in pairs]
    return paths, leaves, treedef, var


def flatten(tree):
    """Every leaf of `tree` in jax.tree_util order: (names, leaves).

    Works for Flax params (dict or FrozenDict), ``nnx.State``, Equinox modules
    and their ``eqx.nn.State``, Haiku params, and any other pytree. An nnx
    Variable's leaf is its value.
    """
    paths, leaves, _, var = _flatten_with_path(tree)
    values = [x.get_value() if var and isinstance(x, var) else x for x in leaves]
    return [_path_name(p) for p in paths], values


def unflatten(like, arrays, keep_missing=False):
    """`like` with each leaf replaced by ``arrays[name]`` (names as `flatten`
    gives them); an nnx Variable keeps its type and takes the array as value.
    Raises KeyError naming the leaves that `arrays` lacks, unless
    keep_missing, which leaves them as they are in `like`."""
    paths, leaves, treedef, var = _flatten_with_path(like)
    names = [_path_name(p) for p in paths]
    missing = [] if keep_missing else [n for n in names if n not in arrays]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise KeyError(f"{len(missing)} leaves of `like` are not in the file: {shown}")
    new = [
        old if n not in arrays else old.replace(arrays[n]) if var and isinstance(old, var) else arrays[n]
        for n, old in zip(names, leaves)
    ]
    return treedef.unflatten(new)


def state_dict_flatten(tree):
    """(names, leaves) in the order ``flax.serialization.to_bytes`` writes them.

    That is the key order of ``flax.serialization.to_state_dict(tree)`` (dict
    insertion order, lists as "0", "1", ...), which jax.tree_util does not
    keep: it sorts dict keys. An ``nnx.State`` is taken as ``nnx.to_pure_dict``.
    Leaves that are not arrays (Python numbers, strings, None) are included.
    """
    try:
        from flax import nnx, serialization
    except ImportError:
        state = tree
    else:
        state = nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else serialization.to_state_dict(tree)
    names, leaves = [], []

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, prefix + (str(key),))
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                walk(value, prefix + (str(i),))
        else:
            names.append(SEP.join(prefix))
            leaves.append(node)

    walk(state, ())
    return names, leaves


# What eqx.tree_serialise_leaves writes a record for (equinox's
# is_array_like), and what tree_deserialise_leaves reads one into: the same
# plus jax.ShapeDtypeStruct, the leaves of a `like` made by eqx.filter_eval_shape.
_ARRAY_LIKE = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)


def _eqx_saved(x):
    return isinstance(x, _ARRAY_LIKE) or hasattr(x, "__jax_array__")


def _eqx_loaded(x):
    return _eqx_saved(x) or isinstance(x, jax.ShapeDtypeStruct)


def eqx_flatten(tree):
    """The leaves ``eqx.tree_serialise_leaves`` writes, in its order:
    (names, leaves). Record i of the .eqx file is leaf i; names are paths, for
    messages. For a model with its state, pass the tuple ``(model, state)``,
    as Equinox's own examples save it."""
    names, leaves = flatten(tree)
    kept = [(n, x) for n, x in zip(names, leaves) if _eqx_saved(x)]
    return [n for n, _ in kept], [x for _, x in kept]


def _eqx_leaf(old, new):
    """`new` in the type of `old`, as equinox's default deserialiser makes it."""
    if isinstance(old, jax.Array | jax.ShapeDtypeStruct):
        return jax.numpy.asarray(new)
    if isinstance(old, np.ndarray):
        return np.asarray(new)
    return type(old)(np.asarray(new).item())


def eqx_unflatten(like, arrays):
    """`like` with the leaves an .eqx file holds replaced, in order, by
    `arrays` (one per record): jax arrays and ShapeDtypeStructs become jax
    arrays, numpy arrays stay numpy, Python and numpy scalars keep their type.
    Other leaves (functions, strings) are kept from `like`."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    slots = [i for i, x in enumerate(leaves) if _eqx_loaded(x)]
    if len(slots) != len(arrays):
        raise ValueError(f"`like` has {len(slots)} array leaves but the file holds {len(arrays)} records")
    for i, new in zip(slots, arrays):
        leaves[i] = _eqx_leaf(leaves[i], new)
    return treedef.unflatten(leaves)
