"""Values and gradients at extreme inputs, against mpmath: a seeded sweep and pinned cases.

A mirror grammar (each rule builds the matdiff expression and an mpmath function of the same
value, the latter written in a form exact at any magnitude: log σ(u) as −log1p(e⁻ᵘ)) makes
scalar losses of x ∈ ℝ⁴ from linear maps (Ax with A orthogonal, so |Ax| = |x|; c·x; sums
with y) and the element-wise compositions people type — log σ(u), log(1 − σ(u)),
σ(u)(1 − σ(u)), log(1 + eᵘ), e^(−softplus(u)), log σ(u) − log σ(−u),
σ(u) − σ(−u), tanh, relu, |u|, √(1 + u²), softmax and log softmax — reduced by Σ, yᵀ·,
logsumexp, log Σ exp and −Σ y ⊙ log softmax. At inputs scaled so that |u| reaches 30, 300
and 3000 (signs mixed, all positive, all negative), the value and the gradient (mpmath's by
mp.diff at 60 digits) from ``evaluate`` and the generated NumPy code in float64 and float32,
and JAX and PyTorch on a few seeds, are finite wherever mpmath's are finite and representable
in the dtype, and within 1e-9 (float64) or 1e-4 (float32) of them, relative to the larger of 1
and the output's largest entry (an entry that underflows is compared absolutely).

The pinned cases at the end are forms a longer sweep of the same kind (300 seeds, with the
forms below in its grammar) found wrong, each minimised to one element-wise function of a
vector; those in WRONG are marked xfail (strict) until the engine computes them in a stable form.
"""
from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from typing import Callable

import mpmath as mp
import numpy as np
import pytest

import matdiff as md

N = 4
DPS = 60
x, y, A = md.vector("x", "n"), md.vector("y", "n"), md.matrix("A", "n", "n")
A_VALUE = np.linalg.qr(np.random.default_rng(11).standard_normal((N, N)))[0]
Y_VALUE = np.array([0.25, -0.5, 1.0, 0.75])
SCALES = (30.0, 300.0, 3000.0)
SEEDS = range(20)
ALL_BACKENDS = (1, 4, 9)  # the seeds also run through JAX and PyTorch


def m_sig(u):
    return 1 / (1 + mp.exp(-u))


def m_softplus(u):
    return mp.log1p(mp.exp(u))


def m_lse(v):
    m = max(v)
    return m + mp.log(mp.fsum(mp.exp(a - m) for a in v))


@dataclass(frozen=True)
class Pair:
    e: md.Expr  # the expression
    f: Callable  # its value in mpmath from a dict of lists of mpf
    src: str  # how it was built, for the message


# element-wise: matdiff, mpmath (exact at any |u|), template
FUNCTIONS = [
    (md.sigmoid, m_sig, "sigmoid({})"),
    (md.softplus, m_softplus, "softplus({})"),
    (md.tanh, mp.tanh, "tanh({})"),
    (md.relu, lambda u: max(u, 0), "relu({})"),
    (md.abs, abs, "abs({})"),
    (lambda e: md.log(md.sigmoid(e)), lambda u: -m_softplus(-u), "log(sigmoid({}))"),
    (lambda e: md.log(1 - md.sigmoid(e)), lambda u: -m_softplus(u), "log(1 - sigmoid({}))"),
    (lambda e: md.sigmoid(e) * (1 - md.sigmoid(e)), lambda u: m_sig(u) * m_sig(-u), "(sigmoid({0}) * (1 - sigmoid({0})))"),
    (lambda e: md.log(1 + md.exp(e)), m_softplus, "log(1 + exp({}))"),
    (lambda e: md.exp(-md.softplus(e)), lambda u: m_sig(-u), "exp(-softplus({}))"),
    (lambda e: md.expm1(-md.softplus(e)), lambda u: -m_sig(u), "expm1(-softplus({}))"),
    (lambda e: md.log(md.sigmoid(e)) - md.log(md.sigmoid(-e)), lambda u: u, "(log(sigmoid({0})) - log(sigmoid(-{0})))"),
    (lambda e: md.sigmoid(e) - md.sigmoid(-e), lambda u: mp.tanh(u / 2), "(sigmoid({0}) - sigmoid(-{0}))"),
    (lambda e: md.sqrt(1 + e * e), lambda u: mp.sqrt(1 + u * u), "sqrt(1 + {0}*{0})"),
]


def _matvec(m, v):
    return [mp.fsum(a * b for a, b in zip(row, v)) for row in m]


def _each(g):
    return lambda v, env: [g(u) for u in v]


# vector → vector: arity, matdiff, mpmath of (argument values..., env), template
VECTOR_RULES = [(1, f, _each(g), src) for f, g, src in FUNCTIONS] + [
    (1, lambda a: A @ a, lambda a, env: _matvec(env["A"], a), "A @ {}"),
    (1, lambda a: 2 * a, lambda a, env: [2 * u for u in a], "2 * {}"),
    (1, lambda a: -a, lambda a, env: [-u for u in a], "-{}"),
    (1, lambda a: 0.5 * a, lambda a, env: [u / 2 for u in a], "0.5 * {}"),
    (1, lambda a: a + y, lambda a, env: [u + v for u, v in zip(a, env["y"])], "({} + y)"),
    (1, lambda a: y * a, lambda a, env: [u * v for u, v in zip(a, env["y"])], "(y * {})"),
    (2, lambda a, b: a + b, lambda a, b, env: [u + v for u, v in zip(a, b)], "({} + {})"),
    (2, lambda a, b: a - b, lambda a, b, env: [u - v for u, v in zip(a, b)], "({} - {})"),
    (1, md.softmax, lambda a, env: [mp.exp(u - m_lse(a)) for u in a], "softmax({})"),
    (1, lambda a: md.log(md.softmax(a)), lambda a, env: [u - m_lse(a) for u in a], "log(softmax({}))"),
    (1, lambda a: a - md.logsumexp(a) * md.ones("n"), lambda a, env: [u - m_lse(a) for u in a],
     "({0} - logsumexp({0}))"),
]

# vector → scalar
SCALAR_RULES = [
    (md.sum, lambda a, env: mp.fsum(a), "sum({})"),
    (lambda a: y.T @ a, lambda a, env: mp.fsum(p * q for p, q in zip(env["y"], a)), "y.T @ {}"),
    (md.logsumexp, lambda a, env: m_lse(a), "logsumexp({})"),
    (lambda a: md.log(md.sum(md.exp(a))), lambda a, env: m_lse(a), "log(sum(exp({})))"),
    (lambda a: -md.sum(y * md.log(md.softmax(a))),
     lambda a, env: -mp.fsum(p * (q - m_lse(a)) for p, q in zip(env["y"], a)), "-sum(y * log(softmax({})))"),
    (lambda a: md.sum(a * a) / 8, lambda a, env: mp.fsum(u * u for u in a) / 8, "sum({0}*{0})/8"),
]


def _vector(depth: int, r: random.Random) -> Pair:
    if depth == 0 or r.random() < 0.2:
        if r.random() < 0.5:
            return Pair(x, lambda env: env["x"], "x")
        return Pair(A @ x, lambda env: _matvec(env["A"], env["x"]), "A @ x")
    arity, make, g, src = r.choice(VECTOR_RULES)
    args = [_vector(depth - 1, r) for _ in range(arity)]
    fs = [a.f for a in args]
    return Pair(make(*[a.e for a in args]), lambda env: g(*[f(env) for f in fs], env),
                src.format(*[a.src for a in args]))


def _loss(seed: int) -> Pair:
    r = random.Random(seed)
    terms = []
    for _ in range(r.choice([1, 1, 2])):
        v = _vector(r.randint(1, 3), r)
        make, g, src = r.choice(SCALAR_RULES)
        terms.append(Pair(make(v.e), lambda env, f=v.f, g=g: g(f(env), env), src.format(v.src)))
    if len(terms) == 1:
        return terms[0]
    a, b = terms
    return Pair(a.e + b.e, lambda env: a.f(env) + b.f(env), f"{a.src} + {b.src}")


def _point(seed: int, scale: float, dtype) -> dict:
    """x with max(|x|∞, |Ax|∞) = scale: mixed signs, all positive or all negative by seed."""
    xv = np.random.default_rng(seed * 7 + int(scale)).standard_normal(N)
    xv = [xv, np.abs(xv), -np.abs(xv)][seed % 3]
    xv = xv * scale / max(np.abs(xv).max(), np.abs(A_VALUE @ xv).max())
    return {"x": xv.astype(dtype), "y": Y_VALUE.astype(dtype), "A": A_VALUE.astype(dtype)}


def _reference(f: Callable, values: dict) -> tuple:
    """f and its gradient by x at the point (exactly as the dtype holds it), in mpmath."""
    with mp.workdps(DPS):
        env = {"y": [mp.mpf(float(a)) for a in values["y"]],
               "A": [[mp.mpf(float(a)) for a in row] for row in values["A"]]}
        xs = [mp.mpf(float(a)) for a in values["x"]]
        value = f({**env, "x": xs})
        grad = [mp.diff(lambda t, j=j: f({**env, "x": xs[:j] + [t] + xs[j + 1:]}), xs[j]) for j in range(N)]
    return value, grad


def _check(got, want: list, dtype, what: str) -> None:
    """got is finite and within tol·max(1, |want|∞) of want wherever want is representable."""
    info = np.finfo(dtype)
    tol = 1e-9 if dtype == np.float64 else 1e-4
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    kept = [(i, float(w)) for i, w in enumerate(want) if abs(w) < info.max]
    scale = max([1.0] + [abs(w) for _, w in kept])
    for i, w in kept:
        assert np.isfinite(got[i]) and abs(got[i] - w) <= tol * scale, \
            f"{what}[{i}]: got {got[i]!r}, mpmath {w!r}"


def _run(fn, values: dict, backend: str = "numpy") -> list:
    args = {p: values[p] for p in inspect.signature(fn).parameters}
    if backend == "torch":
        import torch
        args = {p: torch.from_numpy(np.array(a)) for p, a in args.items()}
    with np.errstate(all="ignore"):
        got = fn(**args)
    return [np.asarray(g.detach().numpy() if hasattr(g, "detach") else g) for g in got]


@pytest.mark.parametrize("seed", SEEDS)
def test_losses_at_extreme_inputs_match_mpmath(seed):
    p = _loss(seed)
    outputs = [p.e, md.grad(p.e, x)]
    backends = ("numpy", "jax", "torch") if seed in ALL_BACKENDS else ("numpy",)
    if "jax" in backends:
        jax = pytest.importorskip("jax")
        pytest.importorskip("torch")
        jax.config.update("jax_enable_x64", True)
    compiled = {b: md.compile(outputs, backend=b) for b in backends}
    for scale in SCALES:
        for dtype in (np.float64, np.float32):
            values = _point(seed, scale, dtype)
            value, grad = _reference(p.f, values)
            where = f"{p.src} at |u| ≈ {scale:g}, {np.dtype(dtype).name}"
            for backend, fn in compiled.items():
                got = _run(fn, values, backend)
                assert all(g.dtype == dtype for g in got), (backend, [g.dtype for g in got])
                _check(got[0], [value], dtype, f"{where}: {backend} value")
                _check(got[1], grad, dtype, f"{where}: {backend} gradient")
            if dtype == np.float64:
                for e, want, what in ((outputs[0], [value], "value"), (outputs[1], grad, "gradient")):
                    used = {v.node.name for v in e.variables}
                    with np.errstate(all="ignore"):
                        got = e.evaluate({k: a for k, a in values.items() if k in used}, sizes={"n": N})
                    _check(got, want, dtype, f"{where}: evaluate {what}")


# --------------------------------------------------------------------------- pinned cases
u = md.vector("u", "n")
# name, f(u) element-wise, its value in mpmath (exact at any |u|), a point where it is wrong, what goes wrong
PINNED = [
    ("log1p(exp(u))", md.log1p(md.exp(u)), m_softplus, [800.0, -3.0],
     "log1p(eᵘ) is not computed as softplus(u): eᵘ overflows, the value is inf"),
    ("log1p(−σ(u))", md.log1p(-md.sigmoid(u)), lambda t: -m_softplus(t), [40.0, -3.0],
     "log1p(−σ(u)) is not computed as −softplus(u): σ(40) rounds to 1, the value is −inf"),
    ("log(exp(u))", md.log(md.exp(u)), lambda t: t, [800.0, -800.0],
     "log(eᵘ) is not simplified to u: eᵘ overflows and underflows, the value is NaN"),
    ("log(cosh(u))", md.log(md.cosh(u)), lambda t: mp.log(mp.cosh(t)), [800.0, -800.0],
     "log cosh(u) overflows in cosh for |u| > 710; |u| + softplus(−2|u|) − log 2 does not"),
    ("log(exp(u) + exp(−u))", md.log(md.exp(u) + md.exp(-u)), lambda t: mp.log(2 * mp.cosh(t)), [800.0, -3.0],
     "simplified to log(2cosh(u)), which overflows as log cosh(u) does"),
    ("exp(u)/(1 + exp(u))", md.exp(u) / (1 + md.exp(u)), m_sig, [800.0, -3.0],
     "the value is σ(u), but the gradient is taken of the form as typed: eᵘ ⊙ (σ(−u) − eᵘ ⊘ (1 + eᵘ)²), "
     "inf·0 = NaN"),
    ("1/(1 + exp(−u))", 1 / (1 + md.exp(-u)), m_sig, [-800.0, -300.0],
     "the value is σ(u), but the gradient is taken of the form as typed: e⁻ᵘ ⊘ (1 + e⁻ᵘ)², inf/inf = NaN"),
    ("log(1 + tanh(u))", md.log(1 + md.tanh(u)), lambda t: mp.log(2) - m_softplus(-2 * t), [-30.0, 3.0],
     "1 + tanh(−30) rounds to 0: the value is −inf and the gradient (1 − tanh²) ⊘ (1 + tanh) is 0/0"),
    ("softplus(u) − u", md.softplus(u) - u, lambda t: m_softplus(-t), [40.0, 300.0],
     "softplus(u) − u cancels (it is softplus(−u)), and so does its gradient σ(u) − 1 (it is −σ(−u)): "
     "0 where e⁻⁴⁰ and e⁻³⁰⁰ are normal numbers"),
    ("tanh(u)", md.tanh(u), mp.tanh, [30.0, 25.0],
     "the derivative 1 − tanh²(u) cancels to 0 where sech²(u) = 3.5e⁻²⁶ and 7.7e⁻²² are normal numbers "
     "(as jax.grad and torch.autograd of tanh do); kept: sech²(u) computed apart from tanh(u), as "
     "cosh(u)⁻² or 4σ(2u)σ(−2u), made a tanh network's gradient 1.3–1.8× slower at 2000 × 50 × 30"),
]


WRONG = {"tanh(u)"}  # computed wrong today, in every path and both dtypes


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name,e,ref,point,reason", [
    pytest.param(*case, marks=[pytest.mark.xfail(strict=True, reason=case[-1])] if case[0] in WRONG else [])
    for case in PINNED], ids=[case[0] for case in PINNED])
def test_pinned_forms_at_extreme_inputs(name, e, ref, point, reason, dtype):
    """Σ f(u) and its gradient at the point, by evaluate (float64) and the NumPy code, against
    mpmath, entry by entry to 1e-9 (float64) or 1e-4 (float32) relative to the entry: each
    entry here is a normal number of the dtype, so every digit counts."""
    loss = md.sum(e)
    outputs = [loss, md.grad(loss, u)]
    point = np.asarray(point, dtype=dtype)
    with mp.workdps(DPS):
        want = [mp.fsum(ref(mp.mpf(float(t))) for t in point)] + \
            [mp.diff(ref, mp.mpf(float(t))) for t in point]
    info = np.finfo(dtype)
    want = [float(w) for w in want]
    tol = 1e-9 if dtype == np.float64 else 1e-4
    paths = {"numpy": _run(md.compile(outputs), {"u": point})}
    if dtype == np.float64:
        with np.errstate(all="ignore"):
            paths["evaluate"] = [o.evaluate(u=point) for o in outputs]
    for path, (value, grad) in paths.items():
        got = np.concatenate([np.reshape(value, -1), np.reshape(grad, -1)]).astype(np.float64)
        for i, (g, w) in enumerate(zip(got, want)):
            if abs(w) >= info.max or (w != 0 and abs(w) < info.tiny):
                continue  # not a normal number of the dtype
            assert np.isfinite(g) and abs(g - w) <= tol * abs(w), \
                f"{name}, {path}, {'value' if i == 0 else f'gradient[{i - 1}]'}: got {g!r}, mpmath {w!r}"
