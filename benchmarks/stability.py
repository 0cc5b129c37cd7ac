"""Losses at extreme logits against the stable references of the ecosystem: for each loss of
tests/test_stability.py and each dtype, the worst relative error of the value, the gradient
and a Hessian-vector product — by ``evaluate`` and by the generated NumPy, JAX and PyTorch
code — against the same loss written with jax.nn and optax and differentiated by JAX in
float64, at logits scaled to ±1000 (float64) and ±100 (float32), over several draws.

Run: python benchmarks/stability.py [--draws 5]      (prints a markdown table)
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


def relative_error(got, want) -> float:
    got = np.asarray(got.detach().cpu().numpy() if hasattr(got, "detach") else got, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


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
    return 0 if np.isfinite(worst_all) else 1


if __name__ == "__main__":
    sys.exit(main())
