"""jaxport.verify: run the PyTorch module and the JAX function on the same
inputs and say how far apart their outputs are."""

import numpy as np

__all__ = ["VerifyError", "Report", "verify"]


class VerifyError(AssertionError):
    """The two frameworks disagree beyond the tolerance; .report has the numbers."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


class Report:
    """Per output: shape, the largest absolute error, and that error relative
    to the largest PyTorch value (so values near zero do not inflate it)."""

    def __init__(self, rows, rtol, atol):
        self.rows = rows
        self.rtol, self.atol = rtol, atol

    @property
    def ok(self):
        return all(r["ok"] for r in self.rows)

    @property
    def max_abs(self):
        return max((r["max_abs"] for r in self.rows), default=0.0)

    def __str__(self):
        lines = [f"{'output':<16} {'shape':<18} {'max |diff|':>12} {'max rel':>10}  ok"]
        for r in self.rows:
            lines.append(f"{r['path']:<16} {str(r['shape']):<18} {r['max_abs']:>12.3e} {r['max_rel']:>10.3e}  "
                         f"{'yes' if r['ok'] else 'NO'}")
        return "\n".join(lines)

    __repr__ = __str__


def _to_numpy(x):
    import torch
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    a = np.asarray(x)
    return a.astype(np.float32) if a.dtype.kind == "f" and a.dtype.itemsize < 4 else a


def _leaves(tree):
    """Outputs as (path, leaf): tensors, arrays, tuples, lists, dicts, and
    objects with to_tuple() (Hugging Face model outputs)."""
    if hasattr(tree, "to_tuple"):
        tree = tree.to_tuple()
    if isinstance(tree, dict):
        return [(f"{k}{'/' + p if p else ''}", x) for k, v in tree.items() for p, x in _leaves(v)]
    if isinstance(tree, list | tuple):
        return [(f"{i}{'/' + p if p else ''}", x) for i, v in enumerate(tree) for p, x in _leaves(v)]
    return [("", tree)]


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def verify(torch_module, jax_fn, *example_inputs, rtol=1e-5, atol=1e-5, layout="auto", raise_on_error=True):
    """Run `torch_module(*inputs)` and `jax_fn(*inputs)` and compare every
    output. Inputs are numpy arrays (or torch tensors / jax arrays) in
    PyTorch's layout. layout="auto" (or "nhwc") gives the JAX side 4-d
    inputs as NHWC and compares its 4-d outputs after moving channels back
    first; layout="same" passes everything as it is. Returns a Report;
    raises VerifyError when an output is off by more than atol + rtol * |torch|
    (unless raise_on_error is false)."""
    import jax.numpy as jnp
    import torch

    if layout not in ("auto", "nhwc", "same"):
        raise ValueError(f"layout must be 'auto', 'nhwc' or 'same', not {layout!r}")
    arrays = [_to_numpy(x) for x in example_inputs]
    channels_last = layout != "same"
    if hasattr(torch_module, "eval"):
        torch_module.eval()
    with torch.no_grad():
        t_out = torch_module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
    j_in = [jnp.asarray(_nhwc(a) if channels_last and a.ndim == 4 else a) for a in arrays]
    j_out = jax_fn(*j_in)
    t_leaves, j_leaves = _leaves(t_out), _leaves(j_out)
    if len(t_leaves) != len(j_leaves):
        raise VerifyError(f"PyTorch gave {len(t_leaves)} outputs, JAX {len(j_leaves)}", None)
    rows = []
    for (path, t), (_, j) in zip(t_leaves, j_leaves):
        t, j = _to_numpy(t), _to_numpy(j)
        if channels_last and j.ndim == 4 and t.ndim == 4 and j.shape != t.shape:
            j = np.transpose(j, (0, 3, 1, 2))
        if t.shape != j.shape:
            raise VerifyError(f"output {path or 0}: PyTorch shape {t.shape}, JAX shape {j.shape}", None)
        diff = np.abs(t.astype(np.float64) - j.astype(np.float64))
        scale = np.abs(t.astype(np.float64))
        rows.append({"path": path or "0", "shape": t.shape,
                     "max_abs": float(diff.max()) if diff.size else 0.0,
                     "max_rel": float(diff.max() / max(scale.max(), 1e-12)) if diff.size else 0.0,
                     "ok": bool(np.all(diff <= atol + rtol * scale))})
    report = Report(rows, rtol, atol)
    if raise_on_error and not report.ok:
        bad = next(r for r in rows if not r["ok"])
        raise VerifyError(f"output {bad['path']}: max |diff| {bad['max_abs']:.3e} beyond atol {atol} + rtol {rtol}"
                          f"\n{report}", report)
    return report
