"""A plain, unambiguous text form of IR nodes (einsum notation for products).

This is the fallback form used by ``repr`` and in error messages; conventional matrix
notation is recognised and printed by a later stage of the pipeline.
"""
from __future__ import annotations

from . import dims as D
from .ir import (GENERAL_FUNCTIONS, Basis, Cholesky, Const, Contract, Delta, Det, DivDiff, DivDiff2, DivDiff3,
                 DivDiff3Apply, EigGap, Eigh, Elementwise, Frechet, Funm, Hole, Inv, LogDet, LogSumExp, MatFn,
                 Node, Phi, Pinv, Reshape, ScalarFn, Softmax, Sum, Svd, Var, register_text_form)

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _num(c: float) -> str:
    return str(int(c)) if float(c).is_integer() and abs(c) < 1e15 else repr(float(c))


def _contract(n: Contract) -> str:
    sym = {}
    for x in [x for lab in n.labels for x in lab] + list(n.out):
        sym.setdefault(x, LETTERS[len(sym) % len(LETTERS)])
    spec = ",".join("".join(sym[x] for x in lab) for lab in n.labels)
    spec += "->" + "".join(sym[x] for x in n.out)
    return f"einsum('{spec}', {', '.join(_form(o) for o in n.operands)})"


def _sum(n: Sum) -> str:
    if not n.terms:
        return f"zeros{D.fmt_shape(n.shape)}"
    parts = []
    for c, t in n.terms:
        body = _form(t)
        sign = "-" if c < 0 else "+"
        mag = "" if abs(c) == 1 else _num(abs(c)) + "*"
        parts.append(f"{sign} {mag}{body}")
    text = " ".join(parts)
    return "(" + (text[2:] if text.startswith("+ ") else "-" + text[2:]) + ")"


def _delta(n: Delta) -> str:
    if n.order == 1:
        return f"ones({D.fmt(n.dim)})"
    if n.order == 2:
        return f"eye({D.fmt(n.dim)})"
    return f"delta({D.fmt(n.dim)}, {n.order})"


def _elementwise(n: Elementwise) -> str:
    if n.fn.name == "pow" and n.fn.builtin:
        return f"{_form(n.arg)}**{_num(n.fn.param)}"
    return f"{n.fn}({_form(n.arg)})"


def _scalar_fn(n: ScalarFn) -> str:
    prefix = "" if n.order == 0 else ("∇" if n.order == 1 else f"∇{n.order}")
    return f"{prefix}{n.fn}({_form(n.arg)})"


FORMS = {
    Var: lambda n: n.name,
    Hole: lambda n: "d",
    Const: lambda n: _num(n.value),
    Delta: _delta,
    Basis: lambda n: f"unit({D.fmt(n.dim)}, {n.pos})",
    Contract: _contract,
    Sum: _sum,
    Elementwise: _elementwise,
    Softmax: lambda n: f"softmax({_form(n.arg)}, axis={n.axis})",
    LogSumExp: lambda n: f"logsumexp({_form(n.arg)}, axis={n.axis})",
    Inv: lambda n: f"inv({_form(n.arg)})",
    Pinv: lambda n: f"pinv({_form(n.arg)})",
    Det: lambda n: f"det({_form(n.arg)})",
    LogDet: lambda n: f"logdet({_form(n.arg)})",
    ScalarFn: _scalar_fn,
    Reshape: lambda n: f"reshape({_form(n.arg)}, {D.fmt_shape(n.shape)})",
    Eigh: lambda n: f"eigh({_form(n.arg)}).{'eigenvalues' if n.part == 'values' else 'eigenvectors'}",
    MatFn: lambda n: f"matrix_function({_form(n.arg)}, {n.fn})",
    DivDiff: lambda n: f"divided_differences({n.fn}, {_form(n.arg)})",
    EigGap: lambda n: f"eigenvalue_gaps({_form(n.arg)})",
    DivDiff2: lambda n: f"second_divided_differences({n.args[0]}, {_form(n.args[1])})",
    DivDiff3: lambda n: f"divided_differences3({n.fn}, {_form(n.arg)})",
    DivDiff3Apply: lambda n: f"divided_differences3_apply({n.fn}, {', '.join(_form(c) for c in n.children)})",
    Svd: lambda n: f"svd({_form(n.arg)}).{n.part}",
    Funm: lambda n: f"{GENERAL_FUNCTIONS[n.fn]}({_form(n.arg)})",
    Frechet: lambda n: f"{GENERAL_FUNCTIONS[n.args[0]]}_frechet({_form(n.args[1])}, {_form(n.args[2])})",
    Cholesky: lambda n: f"cholesky({_form(n.arg)})",
    Phi: lambda n: f"tril_half({_form(n.arg)})",
}


class _Budget:
    left = 0


def index_form(n: Node, limit: int = 20_000) -> str:
    """An unambiguous one-line text of ``n``, cut with … after about ``limit`` characters
    (a DAG with much sharing would otherwise print exponentially long)."""
    outer = _Budget.left
    _Budget.left = limit if outer <= 0 else min(limit, outer)
    try:
        return _form(n)
    finally:
        _Budget.left = outer


def _form(n: Node) -> str:
    if _Budget.left <= 0:
        return "…"
    text = FORMS[type(n)](n)
    _Budget.left -= len(text) if not n.children else 8  # about a compound's own characters
    return text


register_text_form(index_form)  # repr(node) shows this text (ir imports nothing of show)
