"""jaxport, weightbridge and statedict2pytree on the 25 real pairs of
tests/python/pairs.py (Hugging Face PyTorch models and their Flax twins),
each converting the PyTorch state dict into the Flax twin's params with no
hints and no renames, checked by the models' outputs.

    pip install -r bench/requirements.txt      # weightbridge, statedict2pytree
    PYTHONPATH=build/python python bench/pairs.py [--only bert,gpt2] [--timeout 120]

How each tool is called (the way its docs show, the Flax params as target):
  jaxport           torch.save(state_dict) to a temp file; plan =
                    jaxport.match(path, pair.params); the values are taken from
                    the plan by tests/python/planref.apply_plan (a numpy reading
                    of the plan, as tests/python/test_pairs.py does).
  weightbridge      weightbridge.adapt(state_dict, pair.params,
                    in_format="pytorch", out_format="flax").
  statedict2pytree  statedict2pytree.autoconvert(pair.params, state_dict), its
                    non-interactive path (sort both sides by path, pair in
                    order, reshape by element count). Its signature takes any
                    PyTree; when it finds no fields in the Flax params dict
                    (its key-path walker follows attributes and sequence
                    indices only, not dict keys) the cell says n/a.
weightbridge and statedict2pytree get the floating-point tensors only (the
integer buffers such as num_batches_tracked and position_ids, which no Flax
leaf takes, filtered out as a user would); jaxport gets the whole file and
must tell harmless leftovers itself.

A cell is "pass" when the Flax twin run with the converted params gives the
PyTorch model's output (relative_error < 1e-4 on last_hidden_state; the time
is the conversion call's, for jaxport torch.save + match + apply_plan), "WRONG"
with the relative error when it runs but disagrees, "error" or "n/a" with a
numbered note below the table. Each pair runs in its own process (a crash
costs one row), each tool call under a --timeout alarm.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests", "python")
TOOLS = ["jaxport", "weightbridge", "statedict2pytree"]
TOLERANCE = 1e-4


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def short(e):
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    return text if len(text) <= 110 else text[:107] + "..."


def convert_jaxport(pair, sd, tmp):
    import torch
    from flax.traverse_util import unflatten_dict
    from planref import apply_plan

    import jaxport
    path = os.path.join(tmp, f"{pair.name}.pt")
    torch.save(sd, path)
    plan = jaxport.match(path, pair.params)
    if not plan.ok:
        leaf, why = plan.problems[0]
        raise RuntimeError(f"{len(plan.problems)} leaves unpaired, e.g. {leaf}: {why}")
    harmful = [u["tensor"] for u in plan.unused if not u["harmless"]]
    if harmful:
        raise RuntimeError(f"{len(harmful)} tensors unused, e.g. {harmful[0]}")
    arrays = apply_plan(plan.data, plan.index)
    return unflatten_dict({tuple(k.split("/")): v for k, v in arrays.items()})


def convert_weightbridge(pair, sd, tmp):
    import weightbridge
    floats = {k: v for k, v in sd.items() if v.is_floating_point()}
    return weightbridge.adapt(floats, pair.params, in_format="pytorch", out_format="flax")


class NotApplicable(Exception):
    pass


def convert_statedict2pytree(pair, sd, tmp):
    import statedict2pytree as s2p
    floats = {k: v for k, v in sd.items() if v.is_floating_point()}
    try:
        return s2p.autoconvert(pair.params, floats)
    except ValueError as e:
        if "length of pytree (0)" in str(e):
            raise NotApplicable("finds no fields in a params dict (its key-path walker follows attributes and "
                                "sequence indices only, not dict keys): ValueError 'Length of state_dict (N) "
                                "!= length of pytree (0)'") from None
        raise


def run_pair(name, timeout):
    """{tool: {"result": pass|wrong|error|na, "err"?, "msg"?, "time_s"?}} for one pair."""
    import contextlib
    import io
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, TESTS)
    from pairs import Pair, relative_error
    pair = Pair(name)
    sd = pair.state_dict()
    expected = pair.torch_output()
    out = {}
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="jppairs-") as tmp:
        for tool in TOOLS:
            convert = globals()[f"convert_{tool}"]
            printed = io.StringIO()
            t = time.perf_counter()
            signal.alarm(int(timeout))
            try:
                with contextlib.redirect_stdout(printed):
                    params = convert(pair, sd, tmp)
                    took = time.perf_counter() - t
                    got = pair.flax_output(params)
                err = relative_error(expected, got)
                out[tool] = {"result": "pass" if err < TOLERANCE else "wrong", "err": err, "time_s": took}
            except Timeout:
                out[tool] = {"result": "error", "msg": f"timed out after {timeout:.0f} s"}
            except NotApplicable as e:
                out[tool] = {"result": "na", "msg": str(e)}
            except ImportError as e:
                out[tool] = {"result": "na", "msg": f"not installed ({e.name}): pip install -r bench/requirements.txt"}
            except Exception as e:
                msg = short(e)
                lines = [x.strip() for x in printed.getvalue().splitlines() if x.strip()]
                if lines:  # weightbridge prints the nodes it could not pair
                    msg += " [" + "; ".join(lines[:3])[:150] + "]"
                out[tool] = {"result": "error", "msg": msg}
            finally:
                signal.alarm(0)
    return out


def main():
    sys.path.insert(0, TESTS)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated pair names (default: all 20)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per tool call")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(run_pair(a.child, a.timeout)))
        return

    from pairs import NAMES
    names = a.only.split(",") if a.only else NAMES
    results = {}
    for name in names:
        t = time.perf_counter()
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--timeout", str(a.timeout)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=len(TOOLS) * a.timeout + 120)
            lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if lines:
                results[name] = json.loads(lines[-1][7:])
            else:
                err = [x for x in p.stderr.strip().splitlines() if x.strip()]
                msg = f"pair process exit {p.returncode}: " + (err[-1][:100] if err else "no output")
                results[name] = {tool: {"result": "error", "msg": msg} for tool in TOOLS}
        except subprocess.TimeoutExpired:
            results[name] = {tool: {"result": "error", "msg": "pair process timed out"} for tool in TOOLS}
        cells = ", ".join(f"{tool} {r['result']}" for tool, r in results[name].items())
        print(f"{name}: {cells}  ({time.perf_counter() - t:.0f} s)", flush=True)
    report(names, results)


def report(names, results):
    notes, rows = [], []
    for name in names:
        row = [name]
        for tool in TOOLS:
            r = results[name][tool]
            if r["result"] == "pass":
                cell = f"pass ({r['time_s'] * 1e3:.0f} ms)"
            elif r["result"] == "wrong":
                cell = f"WRONG output (rel err {r['err']:.1e})"
            else:
                tag = "n/a" if r["result"] == "na" else "error"
                msg = r["msg"]
                same = [i for i, (t, m) in enumerate(notes) if t == tool and m == msg]
                if not same:
                    notes.append((tool, msg))
                    same = [len(notes) - 1]
                cell = f"{tag} [{same[0] + 1}]"
            row.append(cell)
        rows.append(row)
    totals = ["total"] + [f"{sum(results[n][t]['result'] == 'pass' for n in names)}/{len(names)} pass" for t in TOOLS]
    head = ["pair"] + TOOLS
    w = [max(len(r[i]) for r in rows + [head, totals]) for i in range(len(head))]
    print()
    for r in [head] + rows + [totals]:
        if r is totals:
            print("  ".join("-" * x for x in w))
        print("  ".join(f"{c:<{w[i]}}" for i, c in enumerate(r)).rstrip())
    if notes:
        print()
        for i, (tool, msg) in enumerate(notes):
            print(f"[{i + 1}] {tool}: {msg}")


if __name__ == "__main__":
    main()
