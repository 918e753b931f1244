"""Matching speed on models of up to 10,000 tensors: jaxport.match beside
weightbridge, statedict2pytree and transformers' own PyTorch->Flax rules.

    pip install -r bench/requirements.txt      # weightbridge, statedict2pytree
    PYTHONPATH=build/python python bench/match.py [--bert 6,62,625] [--mlp 50,500,5000]
                                                  [--repeat 5] [--timeout 300] [--dir D]

The goal (issue): matching a 10,000-tensor model takes under 100 ms.

Pairs (real models, tiny widths, many layers, so 10k tensors fit in a few MiB):
  bert-L>flax   transformers BertModel with L layers (16 tensors each; L=625 is
                10,007 tensors) against FlaxBertModel's params, whose shapes come
                from FlaxBertModel(_do_init=False).params_shape_tree (jax.eval_shape,
                no weights made). Matched by names and shapes.
  mlp-N>flax    torch.nn.Sequential of N Linear(4, 4) against a Flax linen model of
                N auto-named nn.Dense (Dense_0..Dense_{N-1}; jax sorts keys, so
                Dense_10 comes before Dense_2). All shapes equal: only the numbers in
                the names give the order.
  mlp-N>eqx     the same checkpoint against an Equinox model holding a list of N
                eqx.nn.Linear (statedict2pytree's home ground).
The state dicts are torch.save'd under --dir (a temp dir unless given).

Tools, each run in its own process with a --timeout limit (a run past it prints
"timed out"; a tool that timed out on a pair is skipped on the larger pairs of
the same family):
  jaxport           jaxport.match(path, like) from the .pt file: reading the index,
                    flattening the target, the C matcher, the JSON plan. Also timed
                    alone: the C part, _core.match(index, leaves) on an open index
                    and flattened leaves (shown as "jaxport (C part)").
  weightbridge      weightbridge.adapt(state_dict, flax_params, in_format="pytorch",
                    out_format="flax"), no hints, from the loaded state dict. It
                    takes nested dicts only, so no Equinox target.
  statedict2pytree  statedict2pytree.autoconvert(target, state_dict) (its
                    non-interactive path: sort both sides by path, pair in order,
                    check element counts), from the loaded state dict. Equinox
                    targets get numpy zeros as leaves (it converts eqx.is_array
                    leaves only).
  transformers      transformers.modeling_flax_pytorch_utils.
                    convert_pytorch_state_dict_to_flax: hand-written renaming rules
                    for HF models (BERT pairs only); it is also the reference for
                    the BERT pairs' values.
weightbridge, statedict2pytree and transformers also copy the (tiny) values;
jaxport only plans, it reads no tensor data.

Columns: time is the best of --repeat runs (fewer when one run is slow);
paired: the tool gave every target leaf a source; correct: every leaf's values
equal the reference (transformers' conversion for BERT, w.T / b by index for the
MLPs); x jaxport: time / jaxport's time on the same pair; peak RSS: the child's
peak RSS during the tool's runs (VmHWM reset just before them, so the imports'
own peak does not count; the imports, target shapes and state dict are resident)
and in brackets its growth over the RSS just before the runs.
"""

import argparse
import contextlib
import io
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOLS = ["jaxport", "weightbridge", "statedict2pytree", "transformers"]
BERT = dict(hidden_size=8, num_attention_heads=2, intermediate_size=32, vocab_size=30, max_position_embeddings=16,
            type_vocab_size=2)
WIDTH = 4


# ----------------------------------------------------------------- the pairs

def bert_config(layers):
    import transformers as tr
    return tr.BertConfig(num_hidden_layers=layers, **BERT)


def flax_mlp(n):
    import flax.linen as nn

    class MLP(nn.Module):
        n: int

        @nn.compact
        def __call__(self, x):
            for _ in range(self.n):
                x = nn.Dense(WIDTH)(x)
            return x

    return MLP(n)


def eqx_mlp_shapes(n):
    """The Equinox twin with jax.ShapeDtypeStruct leaves (nothing allocated)."""
    import equinox as eqx
    import jax

    class EqxMLP(eqx.Module):
        layers: list

        def __init__(self, n, key):
            self.layers = [eqx.nn.Linear(WIDTH, WIDTH, key=k) for k in jax.random.split(key, n)]

    return eqx.filter_eval_shape(EqxMLP, n, jax.random.key(0))


def prepare(family, size, target, d):
    """Write the checkpoint, the target's shapes and the reference values of a
    pair under d (once per pair) and return its file stem."""
    import numpy as np
    import torch
    from flax.traverse_util import flatten_dict
    stem = os.path.join(d, f"{family}-{size}")
    if os.path.exists(f"{stem}>{target}.ref"):
        return stem
    if not os.path.exists(f"{stem}.pt"):
        torch.manual_seed(0)
        if family == "bert":
            import transformers as tr
            model = tr.BertModel(bert_config(size))
        else:
            model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(size)])
        torch.save(model.state_dict(), f"{stem}.pt")
    sd = {k: v.numpy() for k, v in torch.load(f"{stem}.pt", weights_only=True).items()}
    spec, ref = None, {}
    if family == "bert":
        import types

        import transformers as tr
        from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax
        fm = tr.FlaxBertModel(bert_config(size), _do_init=False)
        shapes = fm.params_shape_tree
        spec = [("/".join(k), v.shape, str(v.dtype)) for k, v in flatten_dict(shapes).items()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = convert_pytorch_state_dict_to_flax(dict(sd), types.SimpleNamespace(
                params=shapes, base_model_prefix=fm.base_model_prefix))
        ref = {"/".join(k): np.asarray(v) for k, v in flatten_dict(out).items()}
    elif target == "flax":
        import jax
        shapes = jax.eval_shape(flax_mlp(size).init, jax.random.key(0),
                                jax.ShapeDtypeStruct((1, WIDTH), np.float32))["params"]
        spec = [("/".join(k), v.shape, str(v.dtype)) for k, v in flatten_dict(shapes).items()]
        for i in range(size):
            ref[f"Dense_{i}/kernel"] = sd[f"{i}.weight"].T
            ref[f"Dense_{i}/bias"] = sd[f"{i}.bias"]
    else:
        for i in range(size):
            ref[f"layers/{i}/weight"] = sd[f"{i}.weight"]
            ref[f"layers/{i}/bias"] = sd[f"{i}.bias"]
    with open(f"{stem}>{target}.ref", "wb") as f:
        pickle.dump({"spec": spec, "ref": ref, "tensors": len(sd)}, f)
    return stem


# ----------------------------------------------------------------- the child

def leaf_name(path):
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def compare(ref, got):
    """True when `got` ({name: array}) has exactly ref's leaves and values."""
    import numpy as np
    return got.keys() == ref.keys() and all(
        np.asarray(got[k]).shape == ref[k].shape and np.array_equal(np.asarray(got[k]), ref[k]) for k in ref)


def short(e):
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    return text if len(text) <= 90 else text[:87] + "..."


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss():
    """Current RSS in KiB, with the peak (VmHWM) reset to it where Linux allows
    (/proc/self/clear_refs), so peak_rss() then tells the tool's own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss():
    try:
        return _status("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(tool, stem, target, repeat, budget):
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import jax
    import numpy as np
    import torch
    from flax.traverse_util import flatten_dict, unflatten_dict
    with open(f"{stem}>{target}.ref", "rb") as f:
        saved = pickle.load(f)
    ref = saved["ref"]
    size = int(stem.rsplit("-", 1)[1])
    path = f"{stem}.pt"
    if target == "flax":
        like = unflatten_dict({tuple(k.split("/")): jax.ShapeDtypeStruct(s, d) for k, s, d in saved["spec"]})
    else:
        # numpy zeros as leaves: statedict2pytree converts eqx.is_array leaves
        # only; jaxport is given the same concrete model (it would take the
        # ShapeDtypeStruct one as well).
        like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), eqx_mlp_shapes(size))
    out = {}
    extra = {}

    if tool == "jaxport":
        import jaxport
        from jaxport import _core
        from jaxport.match import target_leaves
        sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
        from planref import apply_plan
        run = lambda: jaxport.match(path, like)  # noqa: E731

        def check(plan):
            harmful = [u["tensor"] for u in plan.unused if not u["harmless"]]
            if not plan.ok or harmful:
                return False, f"{len(plan.problems)} leaves unpaired, {len(harmful)} tensors unused"
            return True, None

        def values(plan):
            return apply_plan(plan.data, plan.index)

        # The C part alone, and the other phases of match(), best of repeat.
        index = _core.open(path)
        lib, specs = target_leaves(like)

        def best(fn):
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        extra["c_s"] = best(lambda: _core.match(index, specs, lib=lib))
        extra["open_s"] = best(lambda: _core.open(path))
        extra["flatten_s"] = best(lambda: target_leaves(like))
        text = _core.match(index, specs, lib=lib)
        extra["json_s"] = best(lambda: json.loads(text))
    else:
        t = time.perf_counter()
        sd = torch.load(path, weights_only=True)
        extra["load_s"] = time.perf_counter() - t
        if tool == "weightbridge":
            import weightbridge
            if target != "flax":
                raise NotApplicable("weightbridge.adapt takes nested dicts, not an Equinox module")
            run = lambda: weightbridge.adapt(sd, like, in_format="pytorch", out_format="flax")  # noqa: E731

            def values(res):
                return {"/".join(k): v for k, v in flatten_dict(res).items()}
        elif tool == "statedict2pytree":
            import statedict2pytree as s2p
            run = lambda: s2p.autoconvert(like, sd)  # noqa: E731

            def values(res):
                return {leaf_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(res)}
        elif tool == "transformers":
            import types

            import transformers as tr
            from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax
            if not os.path.basename(stem).startswith("bert"):
                raise NotApplicable("hand-written rules for HF models only")
            model = types.SimpleNamespace(params=like, base_model_prefix=tr.FlaxBertModel.base_model_prefix)
            run = lambda: convert_pytorch_state_dict_to_flax(dict(sd), model)  # noqa: E731

            def values(res):
                return {"/".join(k): v for k, v in flatten_dict(res).items()}
        else:
            raise ValueError(tool)

        def check(res):
            return True, None

    rss0 = reset_peak_rss()
    times, res = [], None
    printed = io.StringIO()
    try:
        while len(times) < repeat and (not times or sum(times) < budget):
            with contextlib.redirect_stdout(printed):
                t = time.perf_counter()
                res = run()
                times.append(time.perf_counter() - t)
    except Exception as e:  # the tool's own failure is a result
        out["error"] = short(e)
        last = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
        if last:
            out["printed"] = last[0][:90]
        out["time_s"] = time.perf_counter() - t
    rss1 = peak_rss()
    out.update(extra, runs=len(times), rss_kib=rss1, rss_growth_kib=rss1 - rss0)
    if times:
        out["time_s"] = min(times)
        ok, why = check(res)
        out["paired"] = ok
        if why:
            out["error"] = why
        try:
            got = values(res)
            out["correct"] = compare(ref, got)
        except Exception as e:
            out["correct"] = False
            out.setdefault("error", "values: " + short(e))
    else:
        out["paired"] = False
    return out


class NotApplicable(Exception):
    pass


def not_applicable(tool, family, target):
    """Why a tool cannot take a pair at all (None when it can)."""
    if tool == "weightbridge" and target != "flax":
        return "weightbridge.adapt takes nested dicts, not an Equinox module"
    if tool == "transformers" and family != "bert":
        return "hand-written rules for HF models only"
    return None


# ---------------------------------------------------------------- the parent

def fmt_time(s):
    if s is None:
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bert", default="6,62,625", help="BERT layer counts (16 tensors a layer, +7)")
    ap.add_argument("--mlp", default="50,500,5000", help="MLP layer counts (2 tensors a layer)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--repeat", type=int, default=5, help="runs per tool and pair; the best counts")
    ap.add_argument("--budget", type=float, default=20.0, help="no further runs once this many seconds are spent")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per tool and pair, imports included")
    ap.add_argument("--dir", help="where the checkpoints go (kept); a temp dir otherwise")
    ap.add_argument("--child", nargs=3, metavar=("TOOL", "STEM", "TARGET"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        tool, stem, target = a.child
        try:
            result = child(tool, stem, target, a.repeat, a.budget)
        except NotApplicable as e:
            result = {"na": str(e)}
        except ImportError as e:
            result = {"na": f"not installed ({e.name}): pip install -r bench/requirements.txt"}
        print("RESULT " + json.dumps(result))
        return

    warnings.filterwarnings("ignore")
    tools = a.tools.split(",")
    pairs = [("bert", int(n), "flax") for n in a.bert.split(",") if n]
    pairs += [("mlp", int(n), t) for t in ("flax", "eqx") for n in a.mlp.split(",") if n]
    tmp = None
    if a.dir:
        os.makedirs(a.dir, exist_ok=True)
        d = a.dir
    else:
        tmp = tempfile.TemporaryDirectory(prefix="jpmatch-")
        d = tmp.name

    rows = []
    timed_out = set()  # (tool, family, target)
    print(f"{len(pairs)} pairs x {len(tools)} tools, timeout {a.timeout:.0f} s each, checkpoints in {d}", flush=True)
    for family, size, target in pairs:
        t = time.perf_counter()
        stem = prepare(family, size, target, d)
        with open(f"{stem}>{target}.ref", "rb") as f:
            tensors = pickle.load(f)["tensors"]
        name = f"{family}-{size}>{target}"
        print(f"{name}: {tensors} tensors, prepared in {time.perf_counter() - t:.1f} s", flush=True)
        for tool in tools:
            if not_applicable(tool, family, target):
                rows.append((tool, name, tensors, {"na": not_applicable(tool, family, target)}))
                continue
            if (tool, family, target) in timed_out:
                rows.append((tool, name, tensors, {"skipped": "timed out on a smaller pair"}))
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--child", tool, stem, target,
                   "--repeat", str(a.repeat), "--budget", str(a.budget)]
            t = time.perf_counter()
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                if lines:
                    r = json.loads(lines[-1][7:])
                else:
                    err = [x for x in p.stderr.strip().splitlines() if x.strip()]
                    r = {"error": f"exit {p.returncode}: " + (err[-1][:80] if err else "no output")}
            except subprocess.TimeoutExpired:
                r = {"timed_out": a.timeout}
                timed_out.add((tool, family, target))
            rows.append((tool, name, tensors, r))
            state = ("timed out" if "timed_out" in r else r.get("na") and "n/a" or r.get("error") or
                     fmt_time(r.get("time_s")))
            print(f"  {tool:<17} {state}  ({time.perf_counter() - t:.0f} s with imports)", flush=True)

    report(rows)
    if tmp:
        tmp.cleanup()


def report(rows):
    base = {name: r["time_s"] for tool, name, _, r in rows if tool == "jaxport" and r.get("paired")}
    table = []
    for tool, name, tensors, r in rows:
        ratio = rss = ""
        if "timed_out" in r:
            time_s, paired, correct, note = f"> {r['timed_out']:.0f} s", "-", "-", "timed out"
            if name in base:
                ratio = f"> {r['timed_out'] / base[name]:,.0f}x"
        elif "skipped" in r:
            time_s, paired, correct, note = "-", "-", "-", "skipped: " + r["skipped"]
        elif "na" in r:
            time_s, paired, correct, note = "-", "-", "-", "n/a: " + r["na"]
        else:
            time_s = fmt_time(r.get("time_s"))
            paired = "yes" if r.get("paired") else "no"
            correct = {True: "yes", False: "NO"}.get(r.get("correct"), "-")
            note = r.get("error", "")
            if tool == "statedict2pytree" and "length of pytree (0)" in note:
                note = ("ValueError: length of pytree (0): its key-path walker follows attributes and"
                        " sequence indices only, so a params dict has no fields")
            if r.get("printed") and "rror" in note:
                note += f" [printed: {r['printed']}]"
            if r.get("paired") and name in base and r.get("time_s"):
                ratio = f"{r['time_s'] / base[name]:,.1f}x"
            if r.get("runs"):
                note = (f"best of {r['runs']}" + (f", +{fmt_time(r['load_s'])} torch.load" if "load_s" in r else "")
                        + ("; " + note if note else ""))
            if "rss_kib" in r:
                rss = f"{r['rss_kib'] / 1024:.0f} MiB (+{r['rss_growth_kib'] / 1024:.0f})"
        table.append((tool, name, f"{tensors:,}", time_s, paired, correct, ratio, rss, note))
        if tool == "jaxport" and "c_s" in r:
            table.append(("jaxport (C part)", name, f"{tensors:,}", fmt_time(r["c_s"]), "", "",
                          f"{r['c_s'] / r['time_s']:.2f}x" if r.get("time_s") else "", "",
                          f"match(): open {fmt_time(r['open_s'])}, flatten like {fmt_time(r['flatten_s'])},"
                          f" json.loads {fmt_time(r['json_s'])}"))
    head = ("tool", "pair", "tensors", "time", "paired", "correct", "x jaxport", "peak RSS", "note")
    w = [max(len(str(row[i])) for row in table + [head]) for i in range(len(head) - 1)]
    print()
    print("  ".join(f"{h:<{w[i]}}" for i, h in enumerate(head[:-1])) + "  " + head[-1])
    last = None
    for row in table:
        if last and row[1] != last:
            print()
        last = row[1]
        print("  ".join(f"{c:<{w[i]}}" for i, c in enumerate(row[:-1])) + "  " + row[-1])
    big = [(name, t, r) for tool, name, t, r in rows if tool == "jaxport" and t >= 10000 and r.get("paired")]
    for name, t, r in big:
        verdict = "met" if r["time_s"] < 0.1 else "NOT met"
        print(f"\ngoal (< 100 ms for 10,000 tensors), {name}: jaxport.match {fmt_time(r['time_s'])}, "
              f"C part {fmt_time(r['c_s'])}: {verdict}")


if __name__ == "__main__":
    main()
