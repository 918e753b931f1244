"""jaxport.align: the alignment page (the `jaxport align` command) from
Python, for a checkpoint or a live module and any JAX model jaxport
converts into."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .match import target_leaves


def executable():
    """The jaxport command: $JAXPORT_CLI, the one built beside this package
    (PYTHONPATH=build/python), or the one installed with it."""
    exe = os.environ.get("JAXPORT_CLI")
    if exe:
        return exe
    built = Path(__file__).resolve().parents[2] / "cli" / "jaxport"
    if built.exists():
        return str(built)
    beside = Path(sys.executable).parent / "jaxport"
    return str(beside) if beside.exists() else shutil.which("jaxport")


def align(src, like, out, *, to=None, hints=(), port=8765, allow_unsafe=False):
    """Match src with like as jaxport.match does, then serve the alignment
    page at http://127.0.0.1:PORT/ (the address is printed) and wait until
    a person has paired there what the matcher could not decide and pressed
    "Save and quit". The plan goes to `out`; hand it to jaxport.convert (or
    the command line) with mapping=out. Returns the saved Plan, or None when
    the page was left without saving (Ctrl-C stops the server).

    src: a path jaxport reads, a torch.nn.Module or a state dict (saved to a
    temporary file for the server with torch.save). like, to, hints: as
    jaxport.match."""
    from .match import match
    exe = executable()
    if not exe:
        raise FileNotFoundError("the jaxport command is not installed (pip install jaxport)")
    lib, specs = target_leaves(like, to)
    with tempfile.TemporaryDirectory(prefix="jaxport-align-") as tmp:
        leaves = os.path.join(tmp, "leaves.json")
        with open(leaves, "w") as f:
            json.dump({"library": lib, "leaves": [
                {"path": p, "shape": list(s), "dtype": d, **({"kind": k} if k else {})} for p, s, d, k in specs]}, f)
        if isinstance(src, str | os.PathLike):
            path = os.fspath(src)
        else:
            import torch  # torch.save keeps the state dict's order, which the plan's fingerprint holds
            state = src.state_dict() if callable(getattr(src, "state_dict", None)) else src
            path = os.path.join(tmp, "source.pt")
            torch.save({k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}, path)
        args = [exe, "align", path, "--like", leaves, "-o", os.fspath(out), "--port", str(port)]
        args += [a for h in hints for a in ("--hint", h)] + (["--allow-unsafe"] if allow_unsafe else [])
        status = subprocess.run(args).returncode
        if status == 2:
            raise ValueError(f"jaxport align refused its arguments: {args}")
        if not os.path.exists(out):
            return None
        return match(src, like, to=to, mapping=out, allow_unsafe=allow_unsafe)
