"""The networks of the tutorial (seed 002, section 6) and the element-by-element checks of
notebook 000: matdiff's gradients against the closed forms and recursions the documents
derive by hand, and against finite differences."""
import numpy as np
import pytest

import matdiff as md

N, D_IN, H, K = 5, 3, 4, 3


def _rows_summing_to_one(rng, shape):
    p = rng.uniform(0.1, 1.0, shape)
    return p / p.sum(1, keepdims=True)


# ----------------------------------------------------------------------------- 6.1 single layer
@pytest.mark.parametrize("activation", ["tanh", "abstract"])
def test_single_layer_regression(activation):
    X, Y = md.matrix("X", "N", "d"), md.matrix("Y", "N", "h")
    W, b = md.matrix("W", "d", "h"), md.vector("b", "h")
    f = md.tanh if activation == "tanh" else md.function("f")
    fprime = (lambda a: 1 - md.tanh(a) ** 2) if activation == "tanh" else f.derivative
    A = X @ W + md.ones("N") @ b.T
    J = md.norm(f(A) - Y) ** 2 / 2
    Z, Cm = f(A) - Y, fprime(A)
    closed = {W: X.T @ (Z * Cm), b: (Z * Cm).T @ md.ones("N")}
    for var, want in closed.items():
        assert md.check(J, var, order=2) < 1e-6
        _assert_same(md.grad(J, var), want, J)


def _assert_same(got, want, source, seed=0, **fixed):
    from matdiff.check import _sample, _stand_ins
    from matdiff.evaluate import variables

    rng = np.random.default_rng(seed)
    vs = {v.name: v for e in (got, want, source) for v in variables(e.node)}
    size = {"N": N, "d": D_IN, "h": H, "k": K, "n": 3, "m": 2}
    values = {k: _sample(v, "normal", size, rng) for k, v in vs.items()}
    values.update(fixed)
    functions = {**_stand_ins(source.node), **_stand_ins(want.node)}
    g = got.evaluate({k: v for k, v in values.items() if k in {u.name for u in got.scope}}, functions)
    w = want.evaluate({k: v for k, v in values.items() if k in {u.name for u in variables(want.node)}},
                      functions, sizes=size)
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- 6.2 multi-layer
def test_multilayer_regression_with_l2():
    L, reg = 3, 0.1
    widths = ["d", "h1", "h2", "k"]
    X, Y = md.matrix("X", "N", "d"), md.matrix("Y", "N", "k")
    Ws = [md.matrix(f"W{j}", widths[j - 1], widths[j]) for j in range(1, L + 1)]
    bs = [md.vector(f"b{j}", widths[j]) for j in range(1, L + 1)]
    acts = [md.tanh, md.sigmoid, md.tanh]
    Z = X
    for W, b, f in zip(Ws, bs, acts):
        Z = f(Z @ W + md.ones("N") @ b.T)
    J = md.norm(Z - Y) ** 2 / (2 * N) + reg / 2 * sum(md.norm(W) ** 2 for W in Ws)

    rng = np.random.default_rng(0)
    size = {"N": N, "d": 3, "h1": 4, "h2": 5, "k": 2}
    vals = {"X": rng.normal(size=(N, 3)), "Y": rng.normal(size=(N, 2))}
    for j in range(L):
        vals[f"W{j + 1}"] = rng.normal(size=(size[widths[j]], size[widths[j + 1]]))
        vals[f"b{j + 1}"] = rng.normal(size=size[widths[j + 1]])

    # the tutorial's recursion: ∇Z_L = (Z_L − Y)/N, S_j = ∇Z_j ⊙ f′(A_j), ∇Z_{j−1} = S_j W_jᵀ,
    # ∇W_j = Z_{j−1}ᵀ S_j + λ W_j, ∇b_j = S_jᵀ 1
    Zs, As = [vals["X"]], []
    fs = [np.tanh, lambda a: 1 / (1 + np.exp(-a)), np.tanh]
    dfs = [lambda a: 1 - np.tanh(a) ** 2, lambda a: fs[1](a) * (1 - fs[1](a)),
           lambda a: 1 - np.tanh(a) ** 2]
    for j in range(L):
        As.append(Zs[-1] @ vals[f"W{j + 1}"] + vals[f"b{j + 1}"])
        Zs.append(fs[j](As[-1]))
    gZ = (Zs[-1] - vals["Y"]) / N
    want = {}
    for j in reversed(range(L)):
        Sj = gZ * dfs[j](As[j])
        want[f"W{j + 1}"] = Zs[j].T @ Sj + reg * vals[f"W{j + 1}"]
        want[f"b{j + 1}"] = Sj.T @ np.ones(N)
        gZ = Sj @ vals[f"W{j + 1}"].T
    for var in Ws + bs:
        got = md.grad(J, var).evaluate(vals)
        np.testing.assert_allclose(got, want[var.node.name], rtol=1e-9, atol=1e-12)
        assert md.check(J, var) < 1e-6


# ----------------------------------------------------------------------------- 6.4 RNN
def test_rnn_through_time_three_steps():
    tau = 3
    W, U, V = md.matrix("W", "h", "h"), md.matrix("U", "d", "h"), md.matrix("V", "h", "k")
    b, c, Z0 = md.vector("b", "h"), md.vector("c", "k"), md.matrix("Z0", "N", "h")
    Xs = [md.matrix(f"X{t}", "N", "d") for t in range(1, tau + 1)]
    Ys = [md.matrix(f"Y{t}", "N", "k") for t in range(1, tau + 1)]
    one = md.ones("N")
    Z, J = Z0, 0
    for Xt, Yt in zip(Xs, Ys):
        Z = md.tanh(Z @ W + Xt @ U + one @ b.T)
        O = Z @ V + one @ c.T
        J = J - md.sum(Yt * md.log(md.softmax(O, axis=1))) / N

    rng = np.random.default_rng(1)
    vals = {"W": rng.normal(size=(H, H)) / 2, "U": rng.normal(size=(D_IN, H)),
            "V": rng.normal(size=(H, K)), "b": rng.normal(size=H), "c": rng.normal(size=K),
            "Z0": rng.normal(size=(N, H))}
    for t in range(1, tau + 1):
        vals[f"X{t}"] = rng.normal(size=(N, D_IN))
        vals[f"Y{t}"] = _rows_summing_to_one(rng, (N, K))

    # the tutorial's backpropagation through time
    Zn, On = [vals["Z0"]], []
    for t in range(1, tau + 1):
        Zn.append(np.tanh(Zn[-1] @ vals["W"] + vals[f"X{t}"] @ vals["U"] + vals["b"]))
        O = Zn[-1] @ vals["V"] + vals["c"]
        e = np.exp(O - O.max(1, keepdims=True))
        On.append(e / e.sum(1, keepdims=True))
    gO = [(On[t - 1] - vals[f"Y{t}"]) / N for t in range(1, tau + 1)]
    gA, nxt = [None] * (tau + 1), np.zeros((N, H))
    for t in range(tau, 0, -1):
        nxt = (nxt @ vals["W"].T + gO[t - 1] @ vals["V"].T) * (1 - Zn[t] ** 2)
        gA[t] = nxt
    want = {
        "W": sum(Zn[t - 1].T @ gA[t] for t in range(1, tau + 1)),
        "U": sum(vals[f"X{t}"].T @ gA[t] for t in range(1, tau + 1)),
        "b": sum(gA[t].T @ np.ones(N) for t in range(1, tau + 1)),
        "V": sum(Zn[t].T @ gO[t - 1] for t in range(1, tau + 1)),
        "c": sum(gO[t - 1].T @ np.ones(N) for t in range(1, tau + 1)),
        "Z0": gA[1] @ vals["W"].T,
    }
    for var in (W, U, V, b, c, Z0):
        got = md.grad(J, var).evaluate(vals)
        np.testing.assert_allclose(got, want[var.node.name], rtol=1e-9, atol=1e-12)
    assert md.check(J, W, U) < 1e-6


# ----------------------------------------------------------------------------- notebook 000
sp = pytest.importorskip("sympy")


@pytest.mark.parametrize("outer", ["sum", "lambda"])
@pytest.mark.parametrize("wrt", ["W", "X"])
def test_element_by_element_equals_closed_form(outer, wrt):
    """As notebook 000: L = λ(σ(XW)) on 3×3 and 3×2 matrices, expanded entry by entry, whose
    component-wise derivative equals matdiff's closed form."""
    X, W = md.matrix("X", 3, 3), md.matrix("W", 3, 2)
    sigma, lam = md.function("sigma"), md.scalar_function("lambda")
    L = md.sum(sigma(X @ W)) if outer == "sum" else lam(sigma(X @ W))
    var = {"W": W, "X": X}[wrt]
    closed = md.explicit(md.grad(L, var))
    full = md.explicit(L)
    rows, cols = var.shape
    syms = sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{wrt}_{i + 1}{j + 1}"))
    componentwise = sp.Matrix(rows, cols, lambda i, j: sp.diff(full, syms[i, j]))
    assert sp.simplify(closed - componentwise) == sp.zeros(rows, cols)


def test_explicit_shapes_and_sizes():
    X, w = md.matrix("X", "n", "k"), md.vector("w", "k")
    e = md.explicit(X @ w, sizes={"n": 2, "k": 3})
    assert e.shape == (2, 1)
    assert sp.expand(e[0] - sum(sp.Symbol(f"X_1{j}") * sp.Symbol(f"w_{j}") for j in (1, 2, 3))) == 0
    assert md.explicit(w.T, sizes={"k": 2}).shape == (1, 2)
    assert md.explicit(md.trace(md.matrix("A", 2, 2))) == sp.Symbol("A_11") + sp.Symbol("A_22")
    with pytest.raises(md.MatdiffError, match="give sizes for k, n"):
        md.explicit(X @ w)
