"""jaxport.align: the alignment page (the `jaxport align` command) from
Python, for a checkpoint or a live module and any JAX model jaxport
converts into."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .match import target_leaves


def executable():
    """The jaxport command: $JAXPORT_CLI, the one built beside this package
    (PYTHONPATH=build/python), or the one installed with it;
    FileNotFoundError when there is none."""
    exe = os.environ.get("JAXPORT_CLI")
    if exe:
        return exe
    built = Path(__file__).resolve().parents[2] / "cli" / "jaxport"
    if built.exists():
        return str(built)
    beside = Path(sys.executable).parent / "jaxport"
    exe = str(beside) if beside.exists() else shutil.which("jaxport")
    if not exe:
        raise FileNotFoundError("the jaxport command is not installed (pip install jaxport)")
    return exe


def leaves_file(like, to, tmp):
    """like's leaves as the command line's JSON leaf list, written in tmp."""
    lib, specs = target_leaves(like, to)
    leaves = os.path.join(tmp, "leaves.json")
    with open(leaves, "w") as f:
        json.dump({"library": lib, "leaves": [
            {"path": p, "shape": list(s), "dtype": d, **({"kind": k} if k else {})} for p, s, d, k in specs]}, f)
    return leaves


def source_file(src, tmp):
    """A path the command line reads: src itself, or a live module,
    ExportedProgram or state dict saved in tmp with torch.save (which keeps
    the state dict's order, the order a plan's fingerprint holds)."""
    if isinstance(src, str | os.PathLike):
        return os.fspath(src)
    import torch
    from .convert import state_of
    state = state_of(src)
    path = os.path.join(tmp, "source.pt")
    torch.save({k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}, path)
    return path


class Server:
    """A running `jaxport align`: its page's url, and wait() for the plan."""

    def __init__(self, proc, url, src, like, out, to, allow_unsafe):
        self.proc, self.url = proc, url
        self._src, self._like, self._out, self._to, self._unsafe = src, like, out, to, allow_unsafe

    def wait(self, timeout=None):
        """Wait until the page quits (or the server is stopped): the saved
        Plan, or None when nothing was saved."""
        saved = any(line.startswith("jaxport align: saved ") for line in self.proc.stdout)
        self.proc.wait(timeout)
        self.proc.stdout.close()
        if not saved:
            return None
        from .match import match
        return match(self._src, self._like, to=self._to, mapping=self._out, allow_unsafe=self._unsafe)

    def stop(self):
        """Stop serving, as Ctrl-C does; nothing is saved."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait()


def align(src, like, out, *, to=None, hints=(), port=8765, allow_unsafe=False, wait=True):
    """Match src with like as jaxport.match does, then serve the alignment
    page at http://127.0.0.1:PORT/ (the address is printed; port=0 takes a
    free one) where a person pairs what the matcher could not decide and
    presses "Save and quit". The plan goes to `out`; hand it to
    jaxport.convert (or the command line) with mapping=out.

    With wait (the default) this returns the saved Plan once the page quits,
    or None when it was left without saving (Ctrl-C stops the server). With
    wait=False (a notebook) it returns at once a Server: its url, wait() for
    the Plan, stop().

    src: a path jaxport reads, a torch.nn.Module, an ExportedProgram or a
    state dict (saved to a temporary file for the server with torch.save).
    like, to, hints: as jaxport.match."""
    exe = executable()
    # The server has read both files (and mapped the checkpoint) once it
    # prints its address, so they may go then.
    with tempfile.TemporaryDirectory(prefix="jaxport-align-") as tmp:
        leaves = leaves_file(like, to, tmp)
        path = source_file(src, tmp)
        args = [exe, "align", path, "--like", leaves, "-o", os.fspath(out), "--port", str(port)]
        args += [a for h in hints for a in ("--hint", h)] + (["--allow-unsafe"] if allow_unsafe else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+/", first)
    if not url:
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"jaxport align did not start (exit status {proc.returncode}; its reason is above)")
    print(first, end="", flush=True)
    server = Server(proc, url.group(0), src, like, out, to, allow_unsafe)
    if not wait:
        return server
    try:
        return server.wait()
    except KeyboardInterrupt:
        return server.stop()
