"""A numpy reading of the plan's semantics (src/match/plan.h), written
independently of the C executor so each checks the other in the tests."""

import json

import numpy as np

from jaxport.io import numpy_dtypes


def apply_plan(plan, index):
    """{leaf path: array} from a plan (JSON text or dict) and a _core.Index."""
    if isinstance(plan, str):
        plan = json.loads(plan)
    arrays = index.arrays(numpy_dtypes())
    out = {}
    for leaf in plan["leaves"]:
        if "from" not in leaf:
            raise KeyError(f"{leaf['leaf']}: {leaf.get('missing') or leaf.get('ambiguous')}")
        parts = []
        for p in leaf["from"]:
            a = _ref(arrays, p)
            if "plus" in p or "add" in p:  # summed in float64, rounded once to the part's dtype
                s = a.astype(np.float64)
                if "plus" in p:
                    s = s + _ref(arrays, p["plus"]).astype(np.float64).reshape(a.shape)
                a = (s + p.get("add", 0.0)).astype(a.dtype)
            parts.append(a.reshape(p["shape"]))
        a = np.concatenate(parts, leaf.get("concat", 0)) if len(parts) > 1 else parts[0]
        for axis in leaf.get("flip", []):
            a = np.flip(a, axis)
        if "permute" in leaf:
            a = a.transpose(leaf["permute"])
        out[leaf["leaf"]] = a.reshape(leaf["shape"]).astype(numpy_dtypes()[_np_name(leaf["dtype"])])
    return out


def _ref(arrays, ref):
    a = np.asarray(arrays[ref["tensor"]])
    if "slice" in ref:
        axis, start, length = ref["slice"]
        a = a[(slice(None),) * axis + (slice(start, start + length),)]
    return a


def _np_name(dtype):
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
             "I32": "int32"}
    return names.get(dtype, dtype)
