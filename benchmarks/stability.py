"""Losses at extreme logits against the stable references of the ecosystem: for each loss of
tests/test_stability.py and each dtype, the worst relative error of the value, the gradient
and a Hessian-vector product — by ``evaluate`` and by the generated NumPy, JAX and PyTorch
code — against the same loss written with jax.nn and optax and differentiated by JAX in
float64, at logits scaled to ±1000 (float64) and ±100 (float32), over several draws.

A second table takes log(1 + u) and exp(u) − 1 (the SMALL cases of tests/test_stability.py)
at |u| ≈ 1e-10 (float64) and 1e-5 (float32): the worst error of the value and the gradient
relative to their largest entry, against NumPy's log1p and expm1 in float64, and the same
generated NumPy code without ``simplify.numerical_forms`` (log(1 + u) computed as typed).

Run: python benchmarks/stability.py [--draws 5]      (prints two markdown tables)
"""
from __future__ import annotations

import argparse
import inspect
import platform
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def relative_error(got, want, floor: float = 1.0) -> float:
    got = np.asarray(got.detach().cpu().numpy() if hasattr(got, "detach") else got, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - want)) / max(floor, float(np.max(np.abs(want)))))


def small_arguments(draws: int) -> float:
    """The second table (see the module's docstring); returns the worst error of matdiff."""
    import torch

    import matdiff as md
    import matdiff.generate as G
    from tests.test_stability import SMALL, a, v
    print("\n| expression | dtype, size | evaluate | NumPy | JAX | PyTorch | NumPy without numerical_forms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    worst_all = 0.0
    for name, e, wrt, value, gradient in SMALL:
        var = wrt if wrt is not None else v
        outputs = [e] if wrt is None else [e, md.grad(e, wrt)]
        fns = {b: md.compile(outputs, backend=b) for b in ("numpy", "jax", "torch")}
        plain = G.numerical_forms
        G.numerical_forms = lambda node: node  # the code as typed, for the last column
        try:
            fns["as typed"] = md.compile(outputs, backend="numpy")
        finally:
            G.numerical_forms = plain
        for dtype, size in ((np.float64, 1e-10), (np.float32, 1e-5)):
            worst = dict.fromkeys(("evaluate", "numpy", "jax", "torch", "as typed"), 0.0)
            for draw in range(draws):
                x = np.random.default_rng(draw).normal(size=() if var is a else 5) * size
                x = np.asarray(x, dtype=dtype)
                x64 = x.astype(np.float64)
                wants = [value(x64)] + ([] if wrt is None else [gradient(x64)])
                for backend, fn in fns.items():
                    arg = torch.from_numpy(np.atleast_1d(x)).reshape(np.shape(x)) if backend == "torch" else x
                    got = fn(**{var.node.name: arg})
                    for out, want in zip(got if isinstance(got, (list, tuple)) else [got], wants):
                        worst[backend] = max(worst[backend], relative_error(out, want, floor=0.0))
                if dtype == np.float64:
                    for out, want in zip(outputs, wants):
                        got = out.evaluate(**{var.node.name: x64})
                        worst["evaluate"] = max(worst["evaluate"], relative_error(got, want, floor=0.0))
            cells = [f"{worst[k]:.1e}" for k in ("numpy", "jax", "torch", "as typed")]
            ev = f"{worst['evaluate']:.1e}" if dtype == np.float64 else "—"
            print(f"| {name} | {np.dtype(dtype).name}, {size:g} | {ev} | " + " | ".join(cells) + " |")
            worst_all = max(worst_all, *(worst[k] for k in ("evaluate", "numpy", "jax", "torch")))
    print(f"\nworst relative error of matdiff over all rows: {worst_all:.1e}")
    return worst_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=5, help="random points per loss and dtype")
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    import matdiff as md
    from tests.test_stability import LOSSES, _reference, _values
    jax.config.update("jax_enable_x64", True)
    warnings.filterwarnings("ignore")
    print(f"{platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"JAX {jax.__version__}, optax {optax.__version__}, PyTorch {torch.__version__}; "
          f"{args.draws} draws per row\n")
    print("| loss | dtype, logits | evaluate | NumPy | JAX | PyTorch | jax.nn/optax in the dtype |")
    print("|---|---|---:|---:|---:|---:|---:|")
    worst_all = 0.0
    for name, loss, wrt, ref, labels in LOSSES:
        outputs = [loss, md.grad(loss, wrt), md.hvp(loss, wrt, md.tensor("u", *wrt.shape))]
        fns = {b: md.compile(outputs, backend=b) for b in ("numpy", "jax", "torch")}
        for dtype, scale in ((np.float64, 1000.0), (np.float32, 100.0)):
            worst = {k: 0.0 for k in ("evaluate", "numpy", "jax", "torch", "reference")}
            for draw in range(args.draws):
                values = _values(loss, wrt, labels, scale, np.random.default_rng(draw))
                values = {k: np.asarray(a, dtype=dtype) for k, a in values.items()}
                point = {k: a.astype(np.float64) for k, a in values.items()}
                want = _reference(ref, wrt, point, jnp.float64)
                for got, w in zip(_reference(ref, wrt, values, jnp.float32 if dtype == np.float32
                                             else jnp.float64), want):
                    worst["reference"] = max(worst["reference"], relative_error(got, w))
                for backend, fn in fns.items():
                    params = inspect.signature(fn).parameters
                    call = {p: values[p] for p in params}
                    if backend == "torch":
                        call = {p: torch.from_numpy(a) for p, a in call.items()}
                    for got, w in zip(fn(**call), want):
                        worst[backend] = max(worst[backend], relative_error(got, w))
                if dtype == np.float64:
                    for e, w in zip(outputs, want):
                        used = {x.node.name for x in e.variables}
                        got = e.evaluate({k: a for k, a in point.items() if k in used})
                        worst["evaluate"] = max(worst["evaluate"], relative_error(got, w))
            cells = [f"{worst[k]:.1e}" for k in ("numpy", "jax", "torch", "reference")]
            ev = f"{worst['evaluate']:.1e}" if dtype == np.float64 else "—"
            print(f"| {name} | {np.dtype(dtype).name}, ±{scale:g} | {ev} | " + " | ".join(cells) + " |")
            worst_all = max(worst_all, *(worst[k] for k in ("evaluate", "numpy", "jax", "torch")))
    print(f"\nworst relative error of matdiff over all rows: {worst_all:.1e}")
    small = small_arguments(args.draws)
    return 0 if np.isfinite(worst_all) and np.isfinite(small) else 1


if __name__ == "__main__":
    sys.exit(main())
