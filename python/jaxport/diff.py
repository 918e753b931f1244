"""jaxport.diff: the `jaxport diff` command from Python: two files' tensors
compared by name, or a conversion checked against its checkpoint through the
plan, without running either model."""

import json
import os
import subprocess
import tempfile

from .align import executable, leaves_file, source_file
from .errors import JaxportError


def diff(a, b, *, atol=0.0, rtol=0.0, ignore_dtype=False, like=None, to=None, hints=(), mapping=None,
         allow_unsafe=False):
    """Compare the tensors of files a and b (any formats jaxport reads) by
    name, as `jaxport diff` does, and return its report as a dict:
    "same" (True when every tensor is on both sides with the same dtype and
    shape, and its values agree), "count", "differ", "one_side", and
    "tensors", one dict per name: "status" ("same", "only in A",
    "only in B", "dtype", "shape", "values", "bits"), "differing" (elements),
    "first" (the first differing flat index, -1), "max_abs", "max_rel".

    Without a tolerance values agree when their bytes do; with atol / rtol
    as numpy.isclose says (|a - b| <= atol + rtol * |b|, in float64; NaN
    matches only NaN); ignore_dtype compares values across dtypes.

    With like (a JAX model's params, as jaxport.match takes, or a template
    file), b is taken for a conversion of the checkpoint a (a path, or a live
    module or state dict): each leaf of the plan (matched with to and hints,
    or read from mapping, a Plan or plan file) is made again from a and
    compared with b's tensor of that name."""
    exe = executable()
    with tempfile.TemporaryDirectory(prefix="jaxport-diff-") as tmp:
        args = [exe, "diff", source_file(a, tmp), os.fspath(b), "--json",
                "--atol", repr(float(atol)), "--rtol", repr(float(rtol))]
        args += ["--ignore-dtype"] if ignore_dtype else []
        args += ["--allow-unsafe"] if allow_unsafe else []
        if like is not None:
            template = os.fspath(like) if isinstance(like, str | os.PathLike) else leaves_file(like, to, tmp)
            args += ["--like", template] + (["--to", to] if to else [])
            args += [x for h in hints for x in ("--hint", h)]
            if mapping is not None:
                if not isinstance(mapping, str | os.PathLike):
                    mapping.save(os.path.join(tmp, "plan.json"))
                    mapping = os.path.join(tmp, "plan.json")
                args += ["--mapping", os.fspath(mapping)]
        elif to or hints or mapping is not None:
            raise ValueError("to, hints and mapping are for a diff through a plan: pass like too")
        r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode in (0, 1) and r.stdout.startswith("{"):
        return json.loads(r.stdout)
    raise JaxportError(r.stderr.strip().removeprefix("jaxport: ") or f"jaxport diff exited {r.returncode}")
