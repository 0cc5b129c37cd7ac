"""Issue 22's short inputs that ran long: the work and the printed text grow linearly with the
input.  Sizes and counts are asserted, never times (benchmarks/derive.py growth22 times them);
every value and derivative is checked numerically."""
import re
from fractions import Fraction

import numpy as np
import pytest

import matdiff as md
from matdiff import notation as N
from matdiff import present
from matdiff.parse import declarations


def _central(f, x, h=1e-6):
    """The gradient of the scalar function f at x by central differences."""
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


# --------------------------------------------------------------------------- a·a·…·a, echoed


def _prod_factors(monkeypatch, text):
    """The echo of ``text`` and the factors that notation.prod was handed while making it."""
    seen = [0]
    original = N.prod

    def counting(coef, factors):
        factors = list(factors)
        seen[0] += len(factors)
        return original(coef, factors)
    monkeypatch.setattr(N, "prod", counting)
    echo = md.parse(text).echo()
    monkeypatch.setattr(N, "prod", original)
    return echo, seen[0]


def test_the_echo_of_a_typed_scalar_chain_reads_each_factor_once(monkeypatch):
    # each k-factor chain a fresh variable, so that no recognised level is remembered; reading
    # every level of the nested products built each level's flat product again: O(k²) factors
    _, small = _prod_factors(monkeypatch, "*".join(["b"] * 100))
    _, large = _prod_factors(monkeypatch, "*".join(["c"] * 200))
    assert 0 < large <= 2.2 * small


@pytest.mark.parametrize("k", [2, 7, 150])
def test_the_echo_of_a_scalar_chain_means_the_product(k):
    e = md.parse("*".join(["a"] * k))
    echo = e.echo()
    assert len(echo) < 10  # a power, not k factors
    back = md.parse(echo, dialect="matdiff", a="scalar")
    for a in (0.7, 1.003, -1.1):
        assert np.isclose(back.evaluate({"a": a}), a ** k)
        assert np.isclose(e.evaluate({"a": a}), a ** k)
    d = md.grad(e, md.scalar("a"))
    a = np.array(1.003)
    assert np.isclose(d.evaluate({"a": a}), _central(lambda v: float(e.evaluate({"a": v})), a), rtol=1e-6)


def test_a_product_of_distinct_scalars_echoes_in_order():
    e = md.parse("a*b*c*a")
    echo = e.echo()
    back = md.parse(echo, dialect="matdiff", a="scalar", b="scalar", c="scalar")
    vals = {"a": 1.5, "b": -0.3, "c": 2.0}
    assert np.isclose(back.evaluate(vals), e.evaluate(vals))
    assert np.isclose(e.evaluate(vals), 1.5 * -0.3 * 2.0 * 1.5)


# --------------------------------------------------------------------------- yᵀsoftmax(…softmax(x))


def _softmax_chain(d):
    x, y = md.vector("x", "n"), md.vector("y", "n")
    e = x
    for _ in range(d):
        e = md.softmax(e)
    return y.T @ e, x


def test_a_deep_softmax_chain_gradient_prints_a_linear_text():
    # the text grows by the same length per level (names past W99 are a character longer);
    # the whole-tree graph, stopped by its size limit, wrote the outer levels expanded
    lengths = {d: len(str(md.grad(*_softmax_chain(d)))) for d in (20, 40, 80)}
    low = (lengths[40] - lengths[20]) / 20
    high = (lengths[80] - lengths[40]) / 40
    assert 0 < high <= 1.25 * low


def test_a_deep_softmax_chain_is_presented_with_linear_work(monkeypatch):
    calls = {"terms": 0, "parts": 0}
    add, by_parts = present.EGraph.add, present._by_parts

    def counting_add(self, *a, **k):
        calls["terms"] += 1
        return add(self, *a, **k)

    def counting_parts(*a, **k):
        calls["parts"] += 1
        return by_parts(*a, **k)
    monkeypatch.setattr(present.EGraph, "add", counting_add)
    monkeypatch.setattr(present, "_by_parts", counting_parts)
    terms = {}
    for d in (30, 60):
        calls["terms"] = 0
        str(md.grad(*_softmax_chain(d)))
        terms[d] = calls["terms"]
    assert calls["parts"] == 2
    assert 0 < terms[60] <= 2.3 * terms[30]


@pytest.mark.parametrize("d", [3, 8, 12])
def test_a_softmax_chain_gradient_reads_back_and_matches_differences(d):
    f, x = _softmax_chain(d)
    g = md.grad(f, x)
    text = str(g)
    back = md.parse(text, dialect="matdiff", result_shape=g.shape, **declarations(g))
    rng = np.random.default_rng(d)
    for _ in range(3):
        xv, yv = rng.normal(size=5), rng.normal(size=5)
        got = g.evaluate({"x": xv, "y": yv})
        assert np.allclose(back.evaluate({"x": xv, "y": yv}), got, atol=1e-12)
        fd = _central(lambda v: float(f.evaluate({"x": v, "y": yv})), xv)
        assert np.allclose(got, fd, atol=1e-8)


def test_parts_keep_shared_subtrees_one_object():
    # a part chosen on its own is put back as one object wherever it was used, so printing
    # names it once: every where-name is defined exactly once
    text = str(md.grad(*_softmax_chain(12)))
    main, defs = text.split("  where ")
    names = [d.split(" = ")[0] for d in defs.split(", ")]
    assert len(names) == len(set(names)) and len(names) >= 3 * (12 - 1)


# --------------------------------------------------------------------------- the Hessian of tr(Aᵏ)
# Its index form is display-only (no dialect reads Σ); this small reader of the printed text
# evaluates it with NumPy, reading each bracketed matrix factor with the matdiff dialect, so
# that the printed text itself, with its named parts, is compared with the derivative.

LETTER = re.compile(r"[ijklmpqrstuvw]\d*")


def _split(text, seps):
    """text split at the separators that stand outside brackets (the separators kept)."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        depth += ch in "([{"
        depth -= ch in ")]}"
        hit = next((s for s in seps if depth == 0 and text.startswith(s, i)), None)
        if hit:
            out.append(text[start:i])
            out.append(hit)
            i += len(hit)
            start = i
            continue
        i += 1
    out.append(text[start:])
    return out


def _index_value(text, env, n):
    """(array, letters) of a printed index sum, letters sorted."""
    pieces = _split(text, [" + ", " − ", "−"])
    total, letters, sign = None, None, 1.0
    for piece in pieces:
        if piece in (" + ", " − ", "−"):
            sign = 1.0 if piece == " + " else -1.0
            continue
        if not piece:
            continue
        value, free = _term_value(piece, env, n)
        value = sign * value
        total, letters = (value, free) if total is None else (total + value, letters)
        assert free == letters
    return total, letters


def _term_value(text, env, n):
    coef, arrays, subs, summed = 1.0, [], [], set()
    for tok in _split(text, [" "]):
        if tok in (" ", ""):
            continue
        if tok.startswith("Σ_"):
            summed.add(tok[2:])
        elif re.fullmatch(r"\d+(/\d+)?", tok):
            coef *= float(Fraction(tok))
        elif tok.startswith("["):
            value, free = _index_value(tok[1:-1], env, n)
            arrays.append(value)
            subs.append(free)
        else:
            head, sub = tok.rsplit("_", 1)
            letters = tuple(LETTER.findall(sub))
            assert "".join(letters) == sub, tok
            if head == "δ":
                value = np.eye(n)
            elif head in env:
                value = env[head]()
            else:
                inner = head[1:-1] if head.startswith("(") else head
                value = md.parse(inner, dialect="matdiff", A="matrix(n, n)").evaluate(
                    {"A": env["A"]()}, sizes={"n": n})
            if len(letters) == 2 and letters[0] == letters[1]:
                value, letters = np.diagonal(value), letters[:1]
            arrays.append(value)
            subs.append(letters)
    every = sorted({x for s in subs for x in s})
    free = tuple(x for x in every if x not in summed)
    code = {x: chr(ord("a") + i) for i, x in enumerate(every)}
    spec = ",".join("".join(code[x] for x in s) for s in subs) + "->" + "".join(code[x] for x in free)
    return coef * np.einsum(spec, *arrays), free


def _printed_hessian_value(text, a):
    """The value of a printed 4-index result at A = a, entry [i, j, k, l]."""
    n = a.shape[0]
    main, _, where = text.partition("  where ")
    env = {"A": lambda: a}
    for d in _split(where, [", "]) if where else []:
        if d == ", ":
            continue
        lhs, body = d.split(" = ", 1)
        name, sub = lhs.rsplit("_", 1)

        def value(body=body, sub=sub, memo={}):
            if body not in memo:
                v, free = _index_value(body, env, n)
                order = tuple(LETTER.findall(sub))
                memo[body] = np.transpose(v, [free.index(x) for x in order])
            return memo[body]
        env[name] = value
    v, free = _index_value(main, env, n)
    return np.transpose(v, [free.index(x) for x in "ijkl"])


def _hessian_tr_power(k):
    A = md.matrix("A", "n", "n")
    f = md.trace(md.matrix_power(A, k))
    return f, md.hessian(f, A), md.grad(f, A)


@pytest.mark.parametrize("k", [3, 8, 16, 24])
def test_the_printed_hessian_of_tr_a_power_means_the_hessian(k):
    f, h, g = _hessian_tr_power(k)
    text = str(h)
    rng = np.random.default_rng(k)
    a = rng.normal(size=(3, 3)) / 2
    printed = _printed_hessian_value(text, a)
    assert np.allclose(printed, h.evaluate({"A": a}), atol=1e-9)
    # and the Hessian is the derivative of the gradient, by central differences
    step = 1e-6
    for p, q in ((0, 1), (2, 2)):
        e = np.zeros((3, 3))
        e[p, q] = step
        fd = (g.evaluate({"A": a + e}) - g.evaluate({"A": a - e})) / (2 * step)
        assert np.allclose(printed[:, :, p, q], fd, atol=1e-5 * max(1.0, np.abs(fd).max()))


def test_the_printed_hessian_of_tr_a_power_names_repeated_parts():
    # written out at each use, the 4-index parts the repeated squaring shares made the text
    # grow as k²; named once each, it grows at most linearly
    lengths = {k: len(str(_hessian_tr_power(k)[1])) for k in (32, 64, 128)}
    assert lengths[128] - lengths[64] <= 1.25 * 2 * (lengths[64] - lengths[32])
    assert lengths[128] <= 2.2 * lengths[64]
    text = str(_hessian_tr_power(32)[1])
    main, where = text.split("  where ")
    names = [d.split("_")[0] for d in _split(where, [", "]) if d != ", "]
    assert len(names) == len(set(names)) >= 2
    assert all(f"{name}_" in main + where.replace(f"{name}_ijkl =", "") for name in names)
