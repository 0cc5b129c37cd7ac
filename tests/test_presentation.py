"""The presentation algebra (present.py, issue 12): every identity of its table checked
numerically and shown to be applied by the e-graph; the printed form of derivatives from
each of the issue's groups (golden), each read back from its notation tree, parsed back
from its text and checked against finite differences; the rule order never deciding the
result; and, for random expressions, the chosen form never costlier than the form before
and equal in value."""
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import matdiff as md
from matdiff import notation as N
from matdiff import present as P
from matdiff.parse import declarations
from matdiff.recognise import recognise
from matdiff.simplify import simplify

from . import notation_eval

n = "n"
A, B, C, X = (md.matrix(s, n, n) for s in "ABCX")
S = md.matrix("S", n, n, symmetric=True)
M, W = md.matrix("M", n, "k"), md.matrix("W", "k", "p")
x, y, a, b = (md.vector(s, n) for s in "xyab")
w = md.vector("w", "k")
s = md.scalar("s")
SIZES = {"n": 3, "k": 2, "p": 2}


def _values(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((3, 3))
    vals = {s: rng.standard_normal((3, 3)) + 3 * np.eye(3) for s in "ABCX"}
    vals.update(S=q @ q.T + 3 * np.eye(3), M=rng.standard_normal((3, 2)), W=rng.standard_normal((2, 2)),
                w=rng.standard_normal(2), s=1.7)
    vals.update({v: rng.standard_normal(3) for v in "yab"}, x=rng.uniform(0.5, 2.0, 3))
    return vals


# group, f, wrt (None: f itself is shown), how ("grad", "jacobian", "vec", "hessian"), text
GOLDEN = [
    ("symmetry", lambda: md.logdet(M.T @ M), M, "grad", "2M(MᵀM)⁻¹"),
    ("symmetry", lambda: md.trace(md.inv(S)), S, "grad", "−S⁻²"),
    ("symmetry", lambda: a.T @ md.inv(S) @ a, S, "grad", "−S⁻¹aaᵀS⁻¹"),
    ("symmetry", lambda: x.T @ md.inv(S) @ x, x, "grad", "2S⁻¹x"),
    ("symmetry", lambda: md.logdet(S) + x.T @ md.inv(S) @ x, S, "grad", "S⁻¹ − S⁻¹xxᵀS⁻¹"),
    ("symmetry", lambda: md.inv(M.T @ M).T, None, None, "(MᵀM)⁻¹"),
    ("symmetry", lambda: (A + A.T).T, None, None, "A + Aᵀ"),
    ("symmetry", lambda: x.T @ (A + A.T) @ x, x, "grad", "2(A + Aᵀ)x"),
    ("symmetry", lambda: x.T @ (M @ M.T) @ x, x, "grad", "2MMᵀx"),
    ("symmetry", lambda: md.trace(M.T @ S @ M), M, "grad", "2SM"),
    ("symmetry", lambda: md.inv(S) + md.inv(S).T, None, None, "2S⁻¹"),
    ("symmetry", lambda: md.logdet(M @ M.T + S), M, "grad", "2(MMᵀ + S)⁻¹M"),
    ("symmetry", lambda: md.trace(md.inv(M.T @ M)), M, "grad", "−2M(MᵀM)⁻²"),
    ("element-wise", lambda: md.sum(md.log(1 + md.exp(x))), x, "grad", "σ(x)"),
    ("element-wise", lambda: md.sum(md.log(1 + md.exp(x))), None, None, "1ᵀsoftplus(x)"),
    ("element-wise", lambda: md.exp(-x) / (1 + md.exp(-x)), None, None, "σ(−x)"),
    ("element-wise", lambda: md.diag(a) @ md.diag(b), None, None, "diag(b ⊙ a)"),
    ("element-wise", lambda: md.diag(a) + md.diag(b), None, None, "diag(b + a)"),
    ("element-wise", lambda: md.diag(a) - md.diag(b), None, None, "diag(a − b)"),
    ("element-wise", lambda: x * (y / x), None, None, "y"),
    ("element-wise", lambda: md.sum(md.sigmoid(M @ w)), w, "grad", "Mᵀ(σ(Mw) ⊙ (1 − σ(Mw)))"),
    ("element-wise", lambda: md.sum(md.softplus(M @ w)), w, "hessian", "Mᵀdiag(σ(Mw) ⊙ (1 − σ(Mw)))M"),
    ("element-wise", lambda: M.T @ md.diag(a) @ M - M.T @ md.diag(b) @ M, None, None, "Mᵀdiag(a − b)M"),
    ("element-wise", lambda: md.sum(md.log((md.exp(x) + md.exp(-x)) / 2)), x, "grad", "tanh(x)"),
    ("element-wise", lambda: (md.exp(x) - md.exp(-x)) / (md.exp(x) + md.exp(-x)), None, None, "tanh(x)"),
    ("element-wise", lambda: (md.exp(x) + md.exp(-x)) / 2, None, None, "cosh(x)"),
    ("element-wise", lambda: md.sum(md.cosh(x)), x, "grad", "sinh(x)"),
    ("element-wise", lambda: md.sum(md.sinh(x)), x, "hessian", "diag(sinh(x))"),
    ("element-wise", lambda: md.sum(md.log1p(x)), x, "grad", "1 ⊘ (x + 1)"),
    ("element-wise", lambda: md.sum(md.expm1(x)), x, "grad", "exp(x)"),
    ("element-wise", lambda: md.sum(md.arctan(x)), x, "grad", "1 ⊘ (x^∘2 + 1)"),
    ("element-wise", lambda: md.sum(md.log(1 + md.exp(-y * (M @ w)))), w, "grad",
     "−Mᵀ(y ⊙ σ(−(y ⊙ Mw)))"),
    ("scalars", lambda: md.norm(x), x, "grad", "x/‖x‖"),
    ("scalars", lambda: md.norm(A @ x - b), x, "grad", "Aᵀ(Ax − b)/‖Ax − b‖"),
    ("scalars", lambda: md.norm(A @ x - b), A, "grad", "(Ax − b)xᵀ/‖Ax − b‖"),
    ("scalars", lambda: md.norm(M), M, "grad", "M/‖M‖_F"),
    ("scalars", lambda: md.sqrt(md.trace(W.T @ M.T @ M @ W)), W, "grad", "MᵀMW/‖MW‖_F"),
    ("scalars", lambda: md.norm(x) ** 3, x, "grad", "3‖x‖x"),
    ("scalars", lambda: 1 / md.norm(x), x, "grad", "−x/‖x‖³"),
    ("scalars", lambda: md.norm(x - a) ** 2, x, "grad", "2(x − a)"),
    ("scalars", lambda: md.norm(x - a), x, "grad", "(x − a)/‖x − a‖"),
    ("scalars", lambda: x.T @ A @ x / (x.T @ x), x, "grad", "(A + Aᵀ)x/‖x‖² − 2(xᵀAx)x/‖x‖⁴"),
    ("scalars", lambda: (x - a).T, None, None, "(x − a)ᵀ"),
    ("scalars", lambda: A @ A @ A, None, None, "A³"),
    ("scalars", lambda: md.inv(A) @ md.inv(A), None, None, "A⁻²"),
    ("scalars", lambda: md.det(A) * md.trace(X), X, "grad", "det(A)I"),
    ("scalars", lambda: md.det(X) * md.trace(X), X, "grad", "det(X)(tr(X)X⁻ᵀ + I)"),
    ("scalars", lambda: md.sqrt(x.T @ x) * x, None, None, "‖x‖x"),
    ("scalars", lambda: md.norm(M @ w - y) ** 2, w, "grad", "2Mᵀ(Mw − y)"),
    ("scalars", lambda: md.norm(M @ w - y), None, None, "‖Mw − y‖"),
    ("scalars", lambda: md.sum(x - s), s, "grad", "−n"),
    ("scalars", lambda: md.sum(s * md.ones(n)) ** 2, s, "grad", "2sn²"),
    ("scalars", lambda: md.trace(md.eye(n)) * md.trace(md.eye(n)), None, None, "n²"),
    ("scalars", lambda: A @ X @ (-B - C) @ x, x, "jacobian", "−AX(B + C)"),
    ("scalars", lambda: md.trace(A @ X @ (-B - C) @ X), X, "grad", "−AᵀXᵀ(B + C)ᵀ − (B + C)ᵀXᵀAᵀ"),
    ("scalars", lambda: x.T @ md.softmax(A @ x), x, "hessian",
     "(Aᵀdiag(x) + I − (sᵀx)Aᵀ − Aᵀsxᵀ)(S − ssᵀ)A + AᵀS − Aᵀssᵀ  where S = diag(s), s = softmax(Ax)"),
    ("inverses", lambda: X @ md.inv(X @ X @ X), None, None, "X⁻²"),
    ("inverses", lambda: md.det(X @ X @ X), None, None, "det(X)³"),
    ("inverses", lambda: md.det(X @ X @ X), X, "grad", "3det(X)³X⁻ᵀ"),
    ("inverses", lambda: md.det(X @ X), X, "grad", "2det(X)²X⁻ᵀ"),
    ("inverses", lambda: md.inv(A @ B), None, None, "B⁻¹A⁻¹"),
    ("inverses", lambda: md.logdet(A @ X @ B), X, "grad", "X⁻ᵀ"),
    ("inverses", lambda: md.det(A @ X @ B), X, "grad", "det(AXB)X⁻ᵀ"),
    ("inverses", lambda: md.det(md.inv(X)), X, "grad", "−X⁻ᵀ/det(X)"),
    ("inverses", lambda: md.trace(md.inv(X) @ md.inv(X)), X, "grad", "−2(X⁻³)ᵀ"),
    ("inverses", lambda: md.trace(md.inv(A @ X)), X, "grad", "−X⁻ᵀA⁻ᵀX⁻ᵀ"),
    ("kronecker", lambda: md.trace(md.kron(A, B)), None, None, "tr(A ⊗ B)"),
    ("kronecker", lambda: md.kron(A, B).T, None, None, "Aᵀ ⊗ Bᵀ"),
    ("kronecker", lambda: md.kron(A, B) @ md.kron(C, X), None, None, "AC ⊗ BX"),
    ("kronecker", lambda: md.trace(md.kron(A, B @ X)), X, "grad", "tr(A)Bᵀ"),
    ("kronecker", lambda: md.trace(md.kron(X, B)), X, "grad", "tr(B)I"),
    ("kronecker", lambda: md.sum(md.kron(A, B)), A, "grad", "(1ᵀB1)11ᵀ"),
    ("kronecker", lambda: A @ x, x, "vec", "A"),
    ("kronecker", lambda: A @ X @ B, X, "vec", "Bᵀ ⊗ A"),
    ("kronecker", lambda: X @ A, X, "vec", "Aᵀ ⊗ I"),
    ("kronecker", lambda: M @ w, M, "vec", "wᵀ ⊗ I"),
    ("kronecker", lambda: W.T @ w, W, "vec", "I ⊗ wᵀ"),
    ("names", lambda: md.logdet(S) + x.T @ md.inv(S) @ x, S, "hessian-free", "S⁻¹ − S⁻¹xxᵀS⁻¹"),
]
GOLDEN = [g for g in GOLDEN if g[3] != "hessian-free"]


def _result(f, wrt, how):
    e = f()
    if wrt is None:
        return e
    if how == "grad":
        return md.grad(e, wrt)
    if how == "hessian":
        return md.hessian(e, wrt)
    return md.jacobian(e, wrt, layout="vec" if how == "vec" else "numerator")


@pytest.mark.parametrize("group,f,wrt,how,text", GOLDEN, ids=[g[4] for g in GOLDEN])
def test_the_result_prints_as_a_person_writes_it(group, f, wrt, how, text):
    r = _result(f, wrt, how)
    assert str(r) == text
    vals = _values()
    names = {v.node.name for v in r.variables}
    vals = {k: v for k, v in vals.items() if k in names}
    want = r.evaluate(vals, sizes=SIZES)
    got = notation_eval.evaluate(r.notation(), vals, SIZES, {})  # the printed tree, read back
    np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=1e-9, atol=1e-12)
    if how != "vec" and not text.endswith(")I"):  # the printed text parsed back (the size of
        back = md.parse(text, dialect="matdiff", **declarations(r))  # a lone I is not in the text)
        used = {v.node.name for v in back.variables}
        np.testing.assert_allclose(back.evaluate({k: v for k, v in vals.items() if k in used}, sizes=SIZES),
                                   want, rtol=1e-9, atol=1e-12)
    if wrt is not None and how in ("grad", "hessian"):  # and the derivative itself
        kinds = {"S": "spd", "x": "positive", **{s: "invertible" for s in "ABCX"}}
        md.check(f(), wrt, kinds=kinds, order=2 if how == "hessian" else 1)


def test_every_group_has_its_cases():
    groups = {g[0] for g in GOLDEN}
    assert groups >= {"symmetry", "element-wise", "scalars", "inverses", "kronecker"}
    assert len(GOLDEN) >= 60


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # NumPy's σ: 1/(1 + e^1000) = 0
@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_a_loss_typed_with_exp_is_computed_stably(backend):
    """log(1 + exp(z)) is rewritten to softplus(z): finite and right at |z| = 1000 in
    evaluate and in generated code."""
    pytest.importorskip({"numpy": "numpy", "jax": "jax", "torch": "torch"}[backend])
    z = md.vector("z", "n")
    f = md.sum(md.log(1 + md.exp(z)))
    values = np.array([-1000.0, -3.0, 0.0, 2.5, 1000.0])
    want, grad = np.logaddexp(0.0, values).sum(), np.exp(-np.logaddexp(0.0, -values))
    np.testing.assert_allclose(f.evaluate({"z": values}), want, rtol=1e-12)
    fn = md.compile([f, md.grad(f, z)], backend=backend)
    value, g = (np.asarray(v) for v in fn(values))
    tol = 1e-6 if backend == "jax" else 1e-12  # JAX computes in float32 unless x64 is enabled
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(value, want, rtol=tol)
    np.testing.assert_allclose(g, grad, rtol=tol)


# --------------------------------------------------------------------------- the identity table

def _sym(name, kind="m", dims=("n", "n"), symmetric=False):
    return N.Sym(kind, name, "var", symmetric, dims)


nA, nB, nC, nD = (_sym(s) for s in "ABCD")
nS = _sym("S", symmetric=True)
nx, ny = _sym("x", "c", ("n",)), _sym("y", "c", ("n",))
ns = _sym("s", "s", ())
T = lambda m: N.T({"c": "r", "r": "c"}.get(m.kind, m.kind), m)  # noqa: E731
call = lambda name, m, kind="s": N.Call(kind, name, m)  # noqa: E731
prod = lambda *fs, c=1.0, kind="m": N.Prod(kind, c, tuple(fs))  # noqa: E731
plus = lambda *ts, kind="m": N.Add(kind, tuple(ts))  # noqa: E731
one = N.Sym("c", "1", "one", False, ("n",))
sig = lambda m: N.Call("c", "sigmoid", m, fn=md.functions.fn("sigmoid"))  # noqa: E731
L_exp = lambda x, e: N.Sym("m", "L_exp", "frechet", dims=("n", "n"), params=("exp", x, e))  # noqa: E731

# rule name -> (left, right): equal for all values, and united by that rule alone
IDENTITIES = {
    "(Aᵀ)ᵀ = A": (T(T(nA)), nA),
    "Sᵀ = S for symmetric S": (T(nS), nS),
    "(AB)ᵀ = BᵀAᵀ": (T(prod(nA, nB)), prod(T(nB), T(nA))),
    "(A + B)ᵀ = Aᵀ + Bᵀ": (T(plus((1.0, nA), (1.0, nB))), plus((1.0, T(nA)), (1.0, T(nB)))),
    "Aᵀ + Bᵀ = (A + B)ᵀ": (plus((1.0, T(nA)), (-1.0, T(nB))), T(plus((1.0, nA), (-1.0, nB)))),
    "BᵀAᵀ = (AB)ᵀ": (prod(T(nB), T(nA)), T(prod(nA, nB))),
    "(Aᵀ)⁻¹ = (A⁻¹)ᵀ": (N.Inv("m", T(nA)), T(N.Inv("m", nA))),
    "(A⁻¹)ᵀ = (Aᵀ)⁻¹": (T(N.Inv("m", nA)), N.Inv("m", T(nA))),
    "f(Aᵀ) = f(A)ᵀ for expm, logm, sqrtm": (call("logm", T(nA), "m"), T(call("logm", nA, "m"))),
    "f(A)ᵀ = f(Aᵀ) for expm, logm, sqrtm": (T(call("sqrtm", nA, "m")), call("sqrtm", T(nA), "m")),
    "cA + dA = (c + d)A": (plus((2.0, nA), (3.0, nA)), prod(nA, c=5.0)),
    "s ⊙ (y ⊘ s) = y": (N.Had("c", (nx, ny, N.Pow("c", nx, -1.0))), ny),
    "σ(−u) = 1 − σ(u)": (sig(prod(nx, c=-1.0, kind="c")), plus((1.0, one), (-1.0, sig(nx)), kind="c")),
    "diag(u)1 = u, 1ᵀdiag(u) = uᵀ": (prod(call("diag", nx, "m"), one, kind="c"), nx),
    "diag(u)M diag(v) = (uvᵀ) ⊙ M": (prod(call("diag", nx, "m"), nA, call("diag", ny, "m")),
                                     N.Had("m", (prod(nx, T(ny)), nA))),
    "U diag(cλᵏ)Uᵀ = cSᵏ for S = UΛUᵀ": (
        prod(call("Q", nS, "m"), call("diag", prod(N.Pow("c", call("eigvalsh", nS, "c"), 2.0), c=3.0, kind="c"),
                                      "m"), T(call("Q", nS, "m"))),
        prod(N.MatPow("m", nS, 2), c=3.0)),
    "diag(λᵏ) = Λᵏ, diag(σᵏ) = Σᵏ": (call("diag", N.Pow("c", call("svdvals", nA, "c"), 3.0), "m"),
                                    N.MatPow("m", call("diag", call("svdvals", nA, "c"), "m"), 3)),
    "tr(sA) = s tr(A), tr(A + B) = tr(A) + tr(B)": (call("tr", prod(ns, nA, c=2.0)),
                                                   prod(ns, call("tr", nA), c=2.0, kind="s")),
    "a ⊙ (cb) = c(a ⊙ b)": (N.Had("c", (nx, prod(ny, c=2.0, kind="c"))),
                            prod(N.Had("c", (nx, ny)), c=2.0, kind="c")),
    # σ(x) ⊙ (1 − y) − y ⊙ σ(−x) = σ(x) − y: the gradient of binary cross-entropy
    "element-wise normal form: expand, merge like monomials, σ(−u) = 1 − σ(u)": (
        plus((1.0, N.Had("c", (sig(nx), plus((1.0, one), (-1.0, ny), kind="c")))),
             (-1.0, N.Had("c", (ny, sig(N.Prod("c", -1.0, (nx,)))))), kind="c"),
        plus((1.0, sig(nx)), (-1.0, ny), kind="c")),
    "element-wise normal form of a product": (  # (x + y) ⊙ (x − y) = x² − y²
        N.Had("c", (plus((1.0, nx), (1.0, ny), kind="c"), plus((1.0, nx), (-1.0, ny), kind="c"))),
        plus((1.0, N.Pow("c", nx, 2.0)), (-1.0, N.Pow("c", ny, 2.0)), kind="c")),
    "element-wise normal form of a multiple": (  # −½(2(y − x) ⊘ x) = 1 − y ⊘ x
        N.Prod("c", -0.5, (N.Had("c", (N.Prod("c", 2.0, (plus((1.0, ny), (-1.0, nx), kind="c"),)),
                                       N.Pow("c", nx, -1.0))),)),
        plus((1.0, one), (-1.0, N.Had("c", (ny, N.Pow("c", nx, -1.0)))), kind="c")),
    "|s| = s, relu(s) = s for s ≥ 0": (call("abs", N.Pow("s", call("norm", nx), 2.0)),  # |‖x‖²| = ‖x‖²
                                       N.Pow("s", call("norm", nx), 2.0)),
    "relu(s)step(s) = relu(s)": (prod(call("relu", ns), call("step", ns), nA),
                                 prod(call("relu", ns), nA)),
    "cA + cB = c(A + B)": (plus((2.0, nA), (-2.0, nB)), prod(plus((1.0, nA), (-1.0, nB)), c=2.0)),
    "(st)ᵖ = sᵖtᵖ": (N.Pow("s", prod(call("norm", nx), call("norm", ny), kind="s"), -0.5),
                     prod(N.Pow("s", call("norm", nx), -0.5), N.Pow("s", call("norm", ny), -0.5), kind="s")),
    "diag(a)diag(b) = diag(a ⊙ b)": (prod(call("diag", nx, "m"), call("diag", ny, "m")),
                                     call("diag", N.Had("c", (nx, ny)), "m")),
    "diag(a) + diag(b) = diag(a + b)": (plus((1.0, call("diag", nx, "m")), (-1.0, call("diag", ny, "m"))),
                                        call("diag", plus((1.0, nx), (-1.0, ny), kind="c"), "m")),
    "a(bc) = abc": (prod(nA, prod(nB, nC)), prod(nA, nB, nC)),
    "(xᵀx)ᵖ = ‖x‖²ᵖ, tr(XᵀX)ᵖ = ‖X‖_F²ᵖ": (N.Pow("s", prod(T(nx), nx, kind="s"), -0.5),
                                          N.Pow("s", call("norm", nx), -1.0)),
    "xᵀx = ‖x‖²": (prod(T(nx), nx, kind="s"), N.Pow("s", call("norm", nx), 2.0)),
    "1ᵀ1 = n": (prod(T(N.Sym("c", "1", "one", dims=("n",))), N.Sym("c", "1", "one", dims=("n",)), kind="s"),
                N.Sym("s", "n", "dim", dims=("n",))),
    "tr(I) = n": (call("tr", N.Sym("m", "I", "eye", dims=("n", "n"))), N.Sym("s", "n", "dim", dims=("n",))),
    "J1 = n1, 1ᵀJ = n1ᵀ, JJ = nJ (J all ones)": (
        prod(N.Sym("m", "1", "one", dims=("n", "n")), N.Sym("c", "1", "one", dims=("n",)), kind="c"),
        prod(N.Sym("s", "n", "dim", dims=("n",)), N.Sym("c", "1", "one", dims=("n",)), kind="c")),
    "1ᵀsvdvals(X) = ‖X‖_*": (prod(T(N.Sym("c", "1", "one", dims=("n",))), call("svdvals", nA, "c"), kind="s"),
                              call("nuclear", nA)),
    "‖svdvals(X)‖ = ‖X‖_F": (call("norm", call("svdvals", nA, "c")), call("norm", nA)),
    "tr(XᵀX) = ‖X‖_F²": (call("tr", prod(T(nA), nA)), N.Pow("s", call("norm", nA), 2.0)),
    "sᵖsᵠ = sᵖ⁺ᵠ": (prod(N.Pow("s", ns, 2.0), N.Pow("s", ns, 3.0), kind="s"), N.Pow("s", ns, 5.0)),
    "(sᵖ)ᵠ = sᵖᵠ": (N.Pow("s", N.Pow("s", ns, 0.5), 4.0), N.Pow("s", ns, 2.0)),
    "sP + sQ = s(P + Q)": (plus((1.0, prod(ns, nA)), (2.0, prod(ns, nB))),
                          prod(ns, plus((1.0, nA), (2.0, nB)))),
    "AP + AQ = A(P + Q)": (plus((1.0, prod(nA, nB)), (-1.0, prod(nA, nC))),
                          prod(nA, plus((1.0, nB), (-1.0, nC)))),
    "A(P + Q) = AP + AQ": (prod(nA, plus((1.0, nB), (-1.0, nC))),
                          plus((1.0, prod(nA, nB)), (-1.0, prod(nA, nC)))),
    "A(−B − C)D = −A(B + C)D": (prod(nA, plus((-1.0, nB), (-1.0, nC)), nD),
                                prod(nA, plus((1.0, nB), (1.0, nC)), nD, c=-1.0)),
    "(−A − B)ᵀ = −(A + B)ᵀ": (T(plus((-1.0, nA), (-1.0, nB))), prod(T(plus((1.0, nA), (1.0, nB))), c=-1.0)),
    "(A⁻¹)⁻¹ = A": (N.Inv("m", N.Inv("m", nA)), nA),
    "det(AB) = det(A)det(B), det(Aᵏ) = det(A)ᵏ": (call("det", prod(nA, nB)),
                                                 prod(call("det", nA), call("det", nB), kind="s")),
    "AʲAᵏ = Aʲ⁺ᵏ": (prod(nA, N.Inv("m", N.MatPow("m", nA, 3))), N.MatPow("m", nA, -2)),
    "(Aᵏ)⁻¹ = A⁻ᵏ": (N.Inv("m", N.MatPow("m", nA, 2)), N.MatPow("m", nA, -2)),
    "(A⁻¹)ᵏ = A⁻ᵏ": (N.MatPow("m", N.Inv("m", nA), 3), N.MatPow("m", nA, -3)),
    "(Aᵏ)ᵀ = (Aᵀ)ᵏ": (T(N.MatPow("m", nA, 3)), N.MatPow("m", T(nA), 3)),
    "(Aᵀ)ᵏ = (Aᵏ)ᵀ": (N.MatPow("m", T(nA), 3), T(N.MatPow("m", nA, 3))),
    "(AB)⁻¹ = B⁻¹A⁻¹": (N.Inv("m", prod(nA, nB)), prod(N.Inv("m", nB), N.Inv("m", nA))),
    "tr(AB) = tr(BA)": (call("tr", prod(nA, nB, nC)), call("tr", prod(nC, nA, nB))),
    "tr(A ⊗ B) = tr(A)tr(B)": (call("tr", N.Kron("m", (nA, nB))),
                               prod(call("tr", nA), call("tr", nB), kind="s")),
    "(A ⊗ B)ᵀ = Aᵀ ⊗ Bᵀ": (T(N.Kron("m", (nA, nB))), N.Kron("m", (T(nA), T(nB)))),
    "(A ⊗ B)⁻¹ = A⁻¹ ⊗ B⁻¹": (N.Inv("m", N.Kron("m", (nA, nB))),
                              N.Kron("m", (N.Inv("m", nA), N.Inv("m", nB)))),
    "(A ⊗ B)(C ⊗ D) = AC ⊗ BD": (prod(N.Kron("m", (nA, nB)), N.Kron("m", (nC, nD))),
                                 N.Kron("m", (prod(nA, nC), prod(nB, nD)))),
    # the Fréchet derivative L_f(X, E) is linear in its direction E
    "L_f(X, E₁) + L_f(X, E₂) = L_f(X, E₁ + E₂)": (plus((2.0, L_exp(nA, nB)), (-1.0, L_exp(nA, nC))),
                                                 L_exp(nA, plus((2.0, nB), (-1.0, nC)))),
    "cL_f(X, E) = L_f(X, cE)": (prod(L_exp(nA, nB), c=3.0), L_exp(nA, prod(nB, c=3.0))),
}


def test_every_rule_has_its_identity():
    assert {r.name for r in P.RULES} == set(IDENTITIES)


def _env(seed=4):
    rng = np.random.default_rng(seed)
    env = {s: rng.standard_normal((3, 3)) + 3 * np.eye(3) for s in "ABCD"}
    q = rng.standard_normal((3, 3))
    env.update(S=q @ q.T + np.eye(3), x=rng.uniform(0.5, 2, 3), y=rng.standard_normal(3), s=1.3)
    return env


@pytest.mark.parametrize("rule", P.RULES, ids=[r.name for r in P.RULES])
def test_each_identity_holds_and_its_rule_applies_it(rule):
    left, right = IDENTITIES[rule.name]
    lv = notation_eval.evaluate(left, _env(), {"n": 3}, {})
    rv = notation_eval.evaluate(right, _env(), {"n": 3}, {})
    np.testing.assert_allclose(lv, rv, rtol=1e-10, atol=1e-12)
    g = P.EGraph()
    lc, rc = P.ingest(g, left, {}), P.ingest(g, right, {})
    P.saturate(g, [rule])
    assert g.find(lc) == g.find(rc), f"{rule.name} did not unite its two sides"


def test_rules_that_need_square_factors_leave_others_alone():
    tall, wide = _sym("P", dims=("n", "k")), _sym("Q", dims=("k", "n"))
    g = P.EGraph()
    d = P.ingest(g, call("det", prod(tall, wide)), {})
    P.saturate(g)
    assert not any(t[0] == "prod" for t in g.nodes[g.find(d)])  # det(PQ) ≠ det(P)det(Q)
    assert not P.simplest(prod(T(nx), nx, kind="m")) == N.Pow("s", call("norm", nx), 2.0)


def test_the_order_of_the_rules_never_decides_the_result():
    def texts(rules):  # the chosen forms as printed, without the input's order (str's)
        out = []
        for _, f, wrt, how, _ in GOLDEN:
            r = _result(f, wrt, how)
            m = recognise(simplify(r.node))
            if r.row and m.kind == "c":
                m = N.transpose(m)
            out.append(md.printing.render(P.simplest(m, rules), md.printing.TEXT, r._names()))
        return out
    want = texts(list(P.RULES))
    rng = random.Random(7)
    for _ in range(3):
        rules = list(P.RULES)
        rng.shuffle(rules)
        assert texts(rules) == want


# --------------------------------------------------------------------------- property

LEAVES = {"A": A, "B": B, "S": S, "x": x, "a": a}


def _inverse(p):
    """p⁻¹, or p where p is singular: inv(S − Sᵀ) = inv(0) is refused, and B − Bᵀ (3 × 3,
    skew-symmetric) is singular at every value, so comparing values of its inverse compares
    rounding errors."""
    env = _values(3)
    value = p.evaluate({v.node.name: env[v.node.name] for v in p.variables}, sizes=SIZES)
    if np.linalg.cond(value) > 1e8:
        return p
    try:
        return md.inv(p).simplify()
    except md.MatdiffError:
        return p


@st.composite
def _expressions(draw, depth=3):
    """A random (matrix, vector) pair of expressions over A, B, S, X, x, a."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from([A, B, S, X])), draw(st.sampled_from([x, a]))
    (p, u), (q, v) = draw(_expressions(depth - 1)), draw(_expressions(depth - 1))
    mat = draw(st.sampled_from([
        lambda: p @ q, lambda: p + q, lambda: p - q.T, lambda: _inverse(p), lambda: p.T,
        lambda: md.outer(u, v) + p, lambda: p @ p @ q]))()
    vec = draw(st.sampled_from([lambda: p @ u, lambda: u - v, lambda: u * v, lambda: q.T @ v]))()
    return mat, vec


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(_expressions(), st.sampled_from(["det", "norm", "quad", "tr", "logdet", "grad"]))
def test_the_chosen_form_is_never_costlier_and_always_equal(pair, shape):
    mat, vec = pair
    f = {"det": lambda: md.det(mat), "norm": lambda: md.norm(vec), "quad": lambda: vec.T @ mat @ vec,
         "tr": lambda: md.trace(mat @ mat.T), "logdet": lambda: md.logdet(mat @ mat.T + S),
         "grad": lambda: md.grad(md.norm(mat @ vec), x) if "x" in {v.node.name for v in vec.variables}
         else mat}[shape]()
    m = recognise(simplify(f.node))
    if isinstance(m, N.Index):
        return
    chosen = P.simplest(m)
    assert P.cost_of(chosen) <= P.cost_of(m) + 1e-9
    env = _values(3)
    want = notation_eval.evaluate(m, env, SIZES, {})
    got = notation_eval.evaluate(chosen, env, SIZES, {})
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("f,v", [
    (lambda: md.det(X @ X @ X), X), (lambda: md.norm(A @ x), x),
    (lambda: md.sum(md.softmax(x) * a), x), (lambda: md.logdet(S) + x.T @ md.inv(S) @ x, S),
], ids=["det X³", "‖Ax‖", "softmax", "logdet S + xᵀS⁻¹x"])
def test_a_derivation_concludes_with_the_printed_gradient_and_defines_names_outside_the_pairing(f, v):
    lines = str(md.derivation(f(), v)).splitlines()
    pairing = next(line for line in lines if "⟨" in line)
    assert "where" not in pairing[pairing.index("⟨"):pairing.index("⟩")]
    assert lines[-1] == f"⇒ ∇_{v.node.name} = {md.grad(f(), v)}"
    variables = {u.node.name for u in f().variables}
    for line in lines:  # a "where" name is never a variable's name
        if "  where " in line:
            names = {d.split(" = ")[0] for d in line.split("  where ")[1].split(", ") if " = " in d}
            assert not names & variables


def test_the_logistic_loss_typed_with_exp_compiles_as_its_softplus_form():
    Xm, wv, yv = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
    typed = md.sum(md.log(1 + md.exp(-yv * (Xm @ wv))))
    softplus = md.sum(md.softplus(-yv * (Xm @ wv)))
    sources = [md.codegen([f, md.grad(f, wv), md.hessian(f, wv)]) for f in (typed, softplus)]
    assert sources[0] == sources[1]
    assert ".T @ t" in sources[0] and "np.sqrt(" in sources[0]  # (√d ⊙ X)ᵀ(√d ⊙ X)
    md.check(typed, wv, order=2)


def test_the_flop_cost_chooses_among_the_same_equal_forms():
    """‖T − UVᵀ‖²_F by U: the length cost keeps 2(UVᵀ − T)V, the flop cost at a thin rank
    distributes it, U(VᵀV) − TV never forming the m × n residual; both equal in value."""
    Tm, U, V = md.matrix("T", "m", "n"), md.matrix("U", "m", "r"), md.matrix("V", "n", "r")
    m = recognise(simplify(md.grad(md.norm(Tm - U @ V.T) ** 2, U).node))
    thin = P.flops({"m": 1000, "n": 800, "r": 20})
    short, fast = P.simplest(m), P.simplest(m, cost=thin)
    render = lambda t: md.printing.render(t, md.printing.TEXT)  # noqa: E731
    assert render(short) == "2(UVᵀ − T)V" and render(fast) == "2(UVᵀV − TV)"
    assert P.cost_of(fast, thin) < P.cost_of(short, thin) / 1.5
    assert P.cost_of(short) < P.cost_of(fast)
    rng = np.random.default_rng(5)
    env = {"T": rng.standard_normal((4, 3)), "U": rng.standard_normal((4, 2)), "V": rng.standard_normal((3, 2))}
    sizes = {"m": 4, "n": 3, "r": 2}
    np.testing.assert_allclose(notation_eval.evaluate(fast, env, sizes, {}),
                               notation_eval.evaluate(short, env, sizes, {}), rtol=1e-12)
    wide = P.flops({"m": 1000, "n": 800, "r": 2000})  # a wide rank: the residual is cheaper
    assert render(P.simplest(m, cost=wide)) == "2(UVᵀ − T)V"


def test_powers_of_nonnegative_scalars_merge_and_others_keep_their_sign():
    """(‖x‖⁴)^(−1/2) = ‖x‖⁻², so ∂‖xᵀx‖/∂x = 2x (the Cookbook's form); (a²)^(1/2) = |a| stays."""
    x, a = md.vector("x", "n"), md.scalar("a")
    assert str(md.grad(md.norm(x.T @ x), x)) == "2x"
    assert str(md.grad(md.sqrt(a ** 2), a)) != "1"
    rng = np.random.default_rng(0)
    xv = rng.normal(size=4)
    np.testing.assert_allclose(md.grad(md.norm(x.T @ x), x).evaluate(x=xv), 2 * xv)
    np.testing.assert_allclose(md.grad(md.sqrt(a ** 2), a).evaluate(a=-1.5), -1.0)


_X, _w, _y = md.matrix("X", "n", "d"), md.vector("w", "d"), md.vector("y", "n")
_s = md.sigmoid(_X @ _w)
_bce = -(_y.T @ md.log(_s) + (1 - _y).T @ md.log(1 - _s))
_p, _q = md.vector("p", "n"), md.vector("q", "n")
EVERYDAY = [  # issue 20: results as a practitioner writes them, by the element-wise normal form
    ("BCE gradient", lambda: md.grad(_bce, _w), "Xᵀ(σ(Xw) − y)"),
    ("BCE Hessian", lambda: md.hessian(_bce, _w), "Xᵀdiag(σ(Xw) ⊙ (1 − σ(Xw)))X"),
    ("KL divergence", lambda: md.grad(md.sum(_p * md.log(_p / _q)), _p), "log(p ⊘ q) + 1"),
    ("‖xᵀx‖", lambda: md.grad(md.norm(_p.T @ _p), _p), "2p"),
]


@pytest.mark.parametrize("name,build,text", EVERYDAY, ids=[e[0] for e in EVERYDAY])
def test_everyday_results_print_in_their_short_form_and_read_back(name, build, text):
    d = build()
    assert str(d) == text
    back = md.parse(str(d), dialect="matdiff", result_shape=d.shape, **declarations(d))
    rng = np.random.default_rng(2)
    values = {"X": rng.normal(size=(5, 3)), "w": rng.normal(size=3), "y": (rng.random(5) > 0.5) * 1.0,
              "p": rng.uniform(0.2, 1.0, 5), "q": rng.uniform(0.2, 1.0, 5)}
    used = {v.node.name for v in d.variables}
    np.testing.assert_allclose(back.evaluate({k: v for k, v in values.items() if k in {x.node.name for x in back.variables}}),
                               d.evaluate({k: v for k, v in values.items() if k in used}), rtol=1e-12)


def test_terms_sharing_a_scalar_are_grouped_beside_the_others():
    """A + sB − sC = A + s(B − C) (the rule sP + sQ = s(P + Q) on some of a sum's terms): so
    the smoothed lasso's Hessian merges its two diagonal terms into one."""
    left = plus((1.0, nA), (1.0, prod(ns, nB)), (-1.0, prod(ns, nC)))
    right = plus((1.0, nA), (1.0, prod(ns, plus((1.0, nB), (-1.0, nC)))))
    np.testing.assert_allclose(notation_eval.evaluate(left, _env(), {"n": 3}, {}),
                               notation_eval.evaluate(right, _env(), {"n": 3}, {}), rtol=1e-12)
    g = P.EGraph()
    lc, rc = P.ingest(g, left, {}), P.ingest(g, right, {})
    P.saturate(g, [r for r in P.RULES if r.name == "sP + sQ = s(P + Q)"])
    assert g.find(lc) == g.find(rc)


def test_fréchet_derivatives_merge_where_that_is_shorter():
    """The cost decides the linearity of L_f(X, E) in E: 3L_exp(A, 2B) is L_exp(A, 6B) and
    L_exp(A, B) + L_exp(A, 2C) + D is L_exp(A, B + 2C) + D, but −L_exp(A, B) keeps its sign in
    front (inside the parentheses it weighs more) and derivatives at two points stay two."""
    cases = [(prod(L_exp(nA, prod(nB, c=2.0)), c=3.0), L_exp(nA, prod(nB, c=6.0))),
             (plus((1.0, L_exp(nA, nB)), (2.0, L_exp(nA, nC)), (1.0, nD)),
              plus((1.0, L_exp(nA, plus((1.0, nB), (2.0, nC)))), (1.0, nD))),
             (prod(L_exp(nA, nB), c=-1.0), prod(L_exp(nA, nB), c=-1.0)),
             (plus((1.0, L_exp(nA, nB)), (1.0, L_exp(nC, nB))), plus((1.0, L_exp(nA, nB)), (1.0, L_exp(nC, nB))))]
    for typed, written in cases:
        chosen = P.simplest(typed)
        assert chosen == written or set(getattr(chosen, "terms", ())) == set(getattr(written, "terms", [0])), \
            chosen  # a sum's order is the printer's
        np.testing.assert_allclose(notation_eval.evaluate(chosen, _env(), {"n": 3}, {}),
                                   notation_eval.evaluate(typed, _env(), {"n": 3}, {}), rtol=1e-10)
    # the evaluator of the check reads L_exp as the Fréchet derivative: a misread direction differs
    assert not np.allclose(notation_eval.evaluate(L_exp(nA, nB), _env(), {"n": 3}, {}),
                           notation_eval.evaluate(L_exp(nA, T(nB)), _env(), {"n": 3}, {}), rtol=1e-3)


# --------------------------------------------------------------------------- the fast e-graph (issue 24)

def _golden_trees():
    for _, f, wrt, how, _ in GOLDEN:
        r = _result(f, wrt, how)
        m = recognise(simplify(r.node))
        if not isinstance(m, N.Index):
            yield m


def test_the_incremental_rebuild_leaves_the_graph_as_a_full_one_would():
    """After saturation (rebuilt incrementally: only terms above a merge re-keyed, analyses
    recomputed only where an input changed) every term is canonical and in the memo, each
    class's operator index is its terms sorted, symmetry is a fixpoint over every class, and
    a range pass over every class narrows nothing the last rebuild left settled."""
    for m in _golden_trees():
        g = P.EGraph()
        P.ingest(g, m, {})
        P.saturate(g)
        for c, ts in g.nodes.items():
            assert g.find(c) == c
            for t in ts:
                assert all(g.find(k) == k for k in t[2]), t
                assert g.find(g.memo[t]) == c
            assert len({t[1][0] for t in ts}) > 1 or g.kind(c) == next(iter(ts))[1][0]
            for op in {t[0] for t in ts}:
                assert list(g.terms(c, op)) == sorted((t for t in ts if t[0] == op), key=P._order_key)
            if not g.sym[c]:
                assert not any(P._symmetric_term(g, t) for t in ts), c
            if not g.stale:
                new = g.range[c]
                for t in ts:
                    new = P._meet(new, P._interval(g, t))
                assert new == g.range[c], c


def test_a_result_no_rule_changes_is_returned_as_it_is():
    m = prod(T(nx), nA, kind="r")  # xᵀA: nothing to rewrite
    assert P.simplest(m) is m
    assert P.simplest(nA) is nA


def test_a_sum_the_input_also_holds_negated_is_minus_one_times_it():
    """U + V − S − I and S + I − U − V, terms in another order, share a class as the graph is
    made (so M·D + (−M)·ssᵀ can become M(D − ssᵀ)); a sum of two terms is not paired, and a
    sum beside no negation is left alone."""
    three = plus((1.0, nA), (1.0, nB), (-1.0, nC))
    negated = plus((1.0, nC), (-1.0, nB), (-1.0, nA))
    two, two_negated = plus((1.0, nA), (-1.0, nD)), plus((1.0, nD), (-1.0, nA))
    lone = plus((1.0, nA), (1.0, nC), (1.0, nD))
    g = P.EGraph()
    cs = [P.ingest(g, m, {}) for m in (three, negated, two, two_negated, lone)]
    g.rebuild()
    before = {c: set(g.nodes[g.find(c)]) for c in cs}
    P._pair_negated_sums(g)
    assert any(t[0] == "prod" and t[1][1] == -1.0 and g.find(t[2][0]) == g.find(cs[0])
               for t in g.nodes[g.find(cs[1])])
    for c in cs[2:]:
        assert set(g.nodes[g.find(c)]) == before[c]
    env = _env()
    np.testing.assert_allclose(notation_eval.evaluate(negated, env, {"n": 3}, {}),
                               -notation_eval.evaluate(three, env, {"n": 3}, {}), rtol=1e-12)
