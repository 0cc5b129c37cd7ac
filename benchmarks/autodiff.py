"""Generated code against hand-written closed forms and autodiff, float64, on the CPU.

For each problem (gradient and Hessian) and size: matdiff's generated NumPy code, the
hand-written NumPy closed form, and — when installed — jax.grad / jax.hessian under jax.jit
and torch.func.grad / torch.func.hessian.  Every result is checked against the closed
form to 1e-8 before it is timed.  Derivation and compilation times are reported apart
from evaluation.

Run: python benchmarks/autodiff.py [--quick]
"""
from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import matdiff as md  # noqa: E402


def _sigmoid(z):
    if hasattr(z, "sigmoid"):  # a torch tensor: the closed forms serve both libraries
        return z.sigmoid()
    return np.exp(-np.logaddexp(0.0, -z))


def problems(quick: bool):
    """name, sizes, matdiff builder, numpy data, closed-form gradient and Hessian."""
    out = []
    for n in ((50, 200) if quick else (100, 400, 800)):
        x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
        out.append((f"xᵀAx, n={n}", lambda x=x, A=A: (x.T @ A @ x, x),
                    lambda rng, n=n: {"x": rng.normal(size=n), "A": rng.normal(size=(n, n))},
                    lambda v: (v["A"] + v["A"].T) @ v["x"], lambda v: v["A"] + v["A"].T,
                    lambda lib, v: v["x"] @ v["A"] @ v["x"]))
    for n, k in ((200, 20), (1000, 100)) if quick else ((500, 50), (2000, 200), (8000, 400)):
        X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")

        def logistic_data(rng, n=n, k=k):
            return {"X": rng.normal(size=(n, k)) / np.sqrt(k), "w": rng.normal(size=k),
                    "y": np.sign(rng.normal(size=n))}

        def logistic_grad(v):
            z = v["y"] * (v["X"] @ v["w"])
            return -v["X"].T @ (v["y"] * _sigmoid(-z))

        def logistic_hess(v):
            z = v["y"] * (v["X"] @ v["w"])
            d = _sigmoid(z) * _sigmoid(-z)
            return v["X"].T @ (d[:, None] * v["X"])

        out.append((f"logistic, {n}×{k}",
                    lambda X=X, w=w, y=y: (md.sum(md.softplus(-y * (X @ w))), w),
                    logistic_data, logistic_grad, logistic_hess,
                    lambda lib, v: lib.sum(_softplus(lib, -v["y"] * (v["X"] @ v["w"])))))
        out.append((f"least squares, {n}×{k}",
                    lambda X=X, w=w, y=y: (md.norm(X @ w - y) ** 2, w),
                    lambda rng, n=n, k=k: {"X": rng.normal(size=(n, k)), "w": rng.normal(size=k),
                                           "y": rng.normal(size=n)},
                    lambda v: 2 * v["X"].T @ (v["X"] @ v["w"] - v["y"]),
                    lambda v: 2 * v["X"].T @ v["X"],
                    lambda lib, v: lib.sum((v["X"] @ v["w"] - v["y"]) ** 2)))
    return out


def _softplus(lib, z):
    return lib.logaddexp(z, 0.0 * z) if lib.__name__ != "torch" else lib.nn.functional.softplus(z)


def median_time(f, repeat=7, min_time=0.05):
    f()
    times = []
    for _ in range(repeat):
        t, count = time.perf_counter(), 0
        while True:
            f()
            count += 1
            if time.perf_counter() - t > min_time / repeat:
                break
        times.append((time.perf_counter() - t) / count)
    return statistics.median(times)


def _jax():
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        return jax, jnp
    except ImportError:
        return None


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def main(quick: bool):
    rng = np.random.default_rng(0)
    jx, th = _jax(), _torch()
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}"
          + (f", JAX {jx[0].__version__}" if jx else "") + (f", PyTorch {th.__version__}" if th else "")
          + f"; {time.strftime('%Y-%m-%d')}; float64, CPU, medians\n")
    print("| problem | what | derive + codegen | matdiff NumPy | closed form NumPy | ratio | "
          "matdiff JAX (jit) | jax.grad/hessian (jit) | matdiff PyTorch | closed form PyTorch | "
          "ratio | torch.func |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, build, data, grad_cf, hess_cf, value_cf in problems(quick):
        v = data(rng)
        for what, closed in (("gradient", grad_cf), ("Hessian", hess_cf)):
            t0 = time.perf_counter()
            f, var = build()
            d = md.grad(f, var) if what == "gradient" else md.hessian(f, var)
            fn = md.compile(d)
            t_build = time.perf_counter() - t0
            params = fn.__code__.co_varnames[:fn.__code__.co_argcount]
            args = {p: v[p] for p in params}
            want = closed(v)
            np.testing.assert_allclose(fn(**args), want, rtol=1e-8, atol=1e-8)
            t_md = median_time(lambda: fn(**args))
            t_cf = median_time(lambda: closed(v))
            t_jax = _time_jax(jx, value_cf, v, var.node.name, what, want) if jx else None
            t_mdjax = _time_md_jax(jx, d, v, params, want) if jx else None
            t_torch = _time_torch(th, value_cf, v, var.node.name, what, want) if th else None
            t_mdt, t_cft = _time_md_torch(th, d, v, params, closed, want) if th else (None, None)
            fmt = lambda t: "—" if t is None else f"{t * 1e3:.2f} ms"  # noqa: E731
            print(f"| {name} | {what} | {t_build * 1e3:.1f} ms | {fmt(t_md)} | {fmt(t_cf)} | "
                  f"{t_md / t_cf:.2f} | {fmt(t_mdjax)} | {fmt(t_jax)} | {fmt(t_mdt)} | {fmt(t_cft)} | "
                  f"{(t_mdt / t_cft) if t_mdt else float('nan'):.2f} | {fmt(t_torch)} |")


def _time_jax(jx, value, v, name, what, want):
    jax, jnp = jx

    def f(x, rest):
        return value(jnp, dict(rest, **{name: x}))

    rest = {k: jnp.asarray(a) for k, a in v.items() if k != name}
    g = jax.jit(jax.grad(f) if what == "gradient" else jax.hessian(f))
    x = jnp.asarray(v[name])
    np.testing.assert_allclose(np.asarray(g(x, rest)), want, rtol=1e-8, atol=1e-8)
    return median_time(lambda: g(x, rest).block_until_ready())


def _time_md_jax(jx, d, v, params, want):
    jax, jnp = jx
    fn = jax.jit(md.compile(d, backend="jax"))
    args = {p: jnp.asarray(v[p]) for p in params}
    np.testing.assert_allclose(np.asarray(fn(**args)), want, rtol=1e-8, atol=1e-8)
    return median_time(lambda: fn(**args).block_until_ready())


def _time_md_torch(torch, d, v, params, closed, want):
    fn = md.compile(d, backend="torch")
    vt = {k: torch.as_tensor(a, dtype=torch.float64) for k, a in v.items()}
    args = {p: vt[p] for p in params}
    np.testing.assert_allclose(fn(**args).numpy(), want, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(closed(vt).numpy(), want, rtol=1e-8, atol=1e-8)
    return median_time(lambda: fn(**args)), median_time(lambda: closed(vt))


def _time_torch(torch, value, v, name, what, want):
    from torch.func import grad, hessian

    t = {k: torch.as_tensor(a, dtype=torch.float64) for k, a in v.items()}

    def f(x):
        return value(torch, dict(t, **{name: x}))

    g = grad(f) if what == "gradient" else hessian(f)
    x = t[name]
    np.testing.assert_allclose(g(x).numpy(), want, rtol=1e-8, atol=1e-8)
    return median_time(lambda: g(x))


if __name__ == "__main__":
    main("--quick" in sys.argv)
