"""Generated code: expressions compiled into a readable NumPy, JAX or PyTorch function.

``codegen(outputs)`` writes one line per intermediate, each commented with its matrix
notation; subexpressions shared between outputs (a loss, its gradient, its Hessian) are
computed once, because equal IR nodes are the same node.  A contraction of several factors
is split into pairwise steps, smallest result first, and each step is written
with the NumPy primitive it is — ``a @ b``, ``a.T @ b``, ``a[:, None] * b``, ``(a * b).sum()``
— with ``np.einsum`` only where none fits.  Kronecker deltas, identities and diag(·) are
never built: their labels are merged before the split.  The output is a standalone module
(it imports numpy, jax.numpy or torch only).  This module holds the entry points
(``codegen``, ``compile``, ``hvp``), the walk that writes each node (``_node_code``) and the
passes over the written lines (products in place, temporaries freed, the prelude); the
planner (``plan.py``) decides how products are computed, the spectral code writers
(``spectral_code.py``) write divided differences, tie limits and the runtime checks, and
``writer.py`` holds the lines they write.  All write NumPy's spelling; the backends differ
only in their emitter tables (``emitters.py``), which say how each spells the steps.
"""
from __future__ import annotations

import builtins
import functools
import inspect
import keyword
import re
import sys
import unicodedata

import numpy as np

from . import dims as D
from .emitters import BACKENDS, CHOLESKY, HELPERS, NOT_FINITE, RANK_MESSAGE, TRIANGULAR
from .errors import EvaluationError, MatdiffError, NotSupportedError
from .evaluate import (CLOSE, _Complementary, _OffDiagonal, _trace, check_positive, check_shapes,
                       check_symmetric, complex_value, is_min_dim, min_arguments, variables)
from .expr import Expr, lift
from .ir import (Basis, Cholesky, Const, Contract, Delta, Det, DivDiff, DivDiff2, DivDiff3, DivDiff3Apply,
                 EigGap, Eigh, Elementwise, Frechet, Funm, Inv, LogDet, LogSumExp, MatFn, Node, Phi, Pinv,
                 Reshape, ScalarFn, Softmax, Sum, Svd, is_ones, walk)
from .library import positive_definite
from .plan import (_common_factors, _contract, _distributed_sums, _folded_spreads, _from_lu, _has_scipy,
                   _inline, _product, _rational_functions, _scaled_products, _sigmoid_pairs, _sum_text,
                   _sums_of_inverses, _uses)
from .plan import _nonnegative  # noqa: F401 - imported from here by tests/test_generate.py
from .simplify import numerical_forms, simplify
from .spectral_code import (NO_LIMIT_COMMENT, _checks_runtime, _divided_differences, _divided_differences3,
                            _divided_differences3_apply, _finite_code, _general_function, _Limit, _Scale,
                            _scaled_singular_code, _slope, _tie_branch, _tie_branch_order, _tie_code,
                            _tie_limits, _TieBranch, _Tied)
from .writer import LETTERS, _comment, _elementwise, _Writer, user_function_name


# ------------------------------------------------------------------ checks written into the source

DECOMPOSITION_CALL = re.compile(r"\b(?:np|jnp|torch)\.linalg\.(eigh|svd)\((\w+)(?:, full_matrices=False)?\)")


def _with_choices_noted(source: str, labels: dict, name: str = "f") -> str:
    """The generated source with each eigh and thin SVD through ``_spectra``
    (``_Decompositions``), a parameter added to the function."""
    head, sep, body = source.partition(f"\ndef {name}(")
    body = body.replace("):\n", ", _spectra=None):\n", 1)
    body = DECOMPOSITION_CALL.sub(lambda m: f"_spectra.{m.group(1)}({m.group(2)}, "
                                            f"{labels.get(m.group(2), 'a decomposed matrix')!r})", body)
    return head + sep + body


def _with_checks(source: str, name: str, backend: str, exprs: list, vs: list, params: list) -> str:
    """``source`` with md.compile's checks written into it (``checks=True``, code that decomposes
    a matrix): its function, renamed, takes each eigh and thin SVD through ``_spectra``
    (``_Decompositions``), and ``name`` calls it through ``_checking_choices`` (and, in NumPy and
    PyTorch, ``_refusing_no_limit`` where tie terms can find no limit)."""
    q = f"_{name}"
    while any(p.startswith(q) for p in params):
        q += "_"
    head, sep, body = source.partition(f"\ndef {name}(")
    signature, _, rest = body.partition("\n")
    doc = rest.split("\n", 1)[0]
    noted = _with_choices_noted(source.replace(f"\ndef {name}(", f"\ndef {q}_spectra(", 1),
                                {p: v.name for v, p in zip(vs, params)}, f"{q}_spectra")
    head, sep, body = noted.partition(f"\ndef {q}_spectra(")
    compared = [not any(isinstance(n, EigGap) for n in walk(numerical_forms(simplify(e.node))))
                for e in exprs]  # a result that divides by gaps takes its limit, or is NaN
    limits = NO_LIMIT_COMMENT in source
    wrap = [f"{q}_checked = _checking_choices({q}_spectra, {q}_spectra, {backend!r}, {compared!r}, "
            f"{len(exprs) == 1!r}, {limits!r})"]
    if limits and backend != "jax":
        wrap.append(f"{q}_checked = _refusing_no_limit({q}_checked, {NO_LIMIT_COMMENT!r}, {backend!r})")
    return (head + _checks_runtime(backend) + "\n\n" + sep + body + "\n\n" + "\n".join(wrap) + "\n\n\n" +
            f"def {name}({signature}\n{doc}\n    return {q}_checked({', '.join(params)})\n")


def _node_code(w: _Writer, n: Node, args: dict, size_of) -> str:
    a = [args[c] for c in n.children if c in args]
    if isinstance(n, Contract):
        return _contract(w, n, args, size_of)
    if isinstance(n, Sum):
        if not n.terms:
            return f"np.zeros(({', '.join(size_of(d) for d in n.shape)}{',' if n.shape else ''}))"
        if any(t in w.folded for _, t in n.terms):
            return _sum_onto(w, n, args, size_of)
        # a term used only here is written inline, so that NumPy adds into its temporary
        # instead of keeping it alive (an n⁴ Hessian is then one allocation, not three)
        names = [_inline(w.code_of[args[t]]) if w.uses.get(t) == 1 and args[t] in w.code_of
                 else args[t] for _, t in n.terms]
        if not all(is_ones(t) for _, t in n.terms):  # 1 − σ: the ones broadcast
            names = ["1.0" if is_ones(t) else a for a, (_, t) in zip(names, n.terms)]
        return _sum_text(names, [c for c, _ in n.terms])
    if isinstance(n, Elementwise):
        if n in w.sigmoid_pairs and w.sigmoid_pairs[n][0] in args:  # σ(u) and σ(−u): one exp
            u, k = w.sigmoid_pairs[n]
            return f"{w.emit(w.functions['__sigmoids'].format(args[u]))}[{k}]"
        return _elementwise(w, n, a[0])
    if isinstance(n, Softmax):
        if "__softmax" in w.functions:  # the backend's own, where it is as stable and faster
            return w.functions["__softmax"].format(a[0], n.axis)
        e = w.emit(f"np.exp({a[0]} - {a[0]}.max(axis={n.axis}, keepdims=True))")
        return f"{e} / {e}.sum(axis={n.axis}, keepdims=True)"
    if isinstance(n, LogSumExp):
        m = w.emit(f"{a[0]}.max(axis={n.axis}, keepdims=True)")
        return f"np.squeeze({m}, {n.axis}) + np.log(np.exp({a[0]} - {m}).sum(axis={n.axis}))"
    if isinstance(n, Eigh):  # one decomposition, its two parts
        return f"{w.emit(f'np.linalg.eigh({a[0]})')}[{0 if n.part == 'values' else 1}]"
    if isinstance(n, MatFn):  # U f(Λ) Uᵀ
        e = w.emit(f"np.linalg.eigh({a[0]})")
        values = _elementwise(w, Elementwise(n.fn, Eigh("values", n.arg)), f"{e}[0]")
        return f"({e}[1] * {values}) @ {e}[1].T"
    if isinstance(n, DivDiff):
        return _divided_differences(w, n, a[0])
    if isinstance(n, DivDiff3):  # f[λᵢ, λⱼ, λₖ] (the second-order Daleckii–Krein rule)
        return _divided_differences3(w, n, a[0])
    if isinstance(n, DivDiff3Apply):  # Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc without T where it can
        return _divided_differences3_apply(w, n, args)
    if isinstance(n, DivDiff2) and DivDiff3.has_series(n.args[0]):  # f[λᵢ, λᵢ, λⱼ] = T_iji (evaluate's)
        lam = args[n.children[0]]
        return _divided_differences3(w, DivDiff3(n.args[0], n.children[0]), lam, diagonal=True)
    if isinstance(n, DivDiff2):  # f[λᵢ, λᵢ, λⱼ]; (2f″ᵢ + f″ⱼ)/6 where λᵢ ≈ λⱼ (evaluate's)
        lam, second = (args[c] for c in n.children)
        F = w.emit(_divided_differences(w, DivDiff(n.args[0], n.children[0]), lam))  # written once
        slope = w.emit(_slope(n.args[0]).format(lam))
        a, b = f"{lam}[:, None]", f"{lam}[None, :]"
        gap = w.emit(f"{a} - {b}")
        close = w.emit(f"np.abs({gap}) <= {CLOSE!r} * np.maximum(np.abs({a}), np.abs({b}))")
        return (f"np.where({close}, (2 * {second}[:, None] + {second}[None, :]) / 6, "
                f"({slope}[:, None] - {F}) / np.where({close}, 1.0, {gap}))")
    if isinstance(n, (_Tied, _Limit)):  # at repeated eigenvalues (_tie_limits)
        return _tie_code(w, n, args)
    if isinstance(n, _OffDiagonal):  # a pair coefficient's diagonal, 0 (evaluate's _singular_divided)
        off = w.emit(f"np.eye({a[0]}.shape[0]) == 0")
        return f"np.where({off}, {a[0]}, 0.0)"
    if isinstance(n, _Complementary):  # 0 where the singular vectors span the space
        return f"np.ones(()) * float({a[0]}.shape[0] > {a[0]}.shape[1])"
    if isinstance(n, _Scale):  # 2⁻ᵉ for max|X| = m 2ᵉ, m in [1/2, 1): m / max|X|, exactly
        top = w.emit(f"np.abs({a[0]}).max()")
        tiny = w.emit(f"np.finfo({top}.dtype).tiny")
        ok = w.emit(f"({top} >= {tiny}) & ({top} <= 1 / {tiny})")
        c = w.emit(f"np.where({ok}, np.frexp({top})[0] / np.where({ok}, {top}, 1.0), 1.0)")
        return f"1 / {c}" if n.inverse else c
    if isinstance(n, EigGap):  # 1/(λⱼ − λᵢ) off the diagonal (inf where two coincide: unchecked)
        off = w.emit(f"np.eye({a[0]}.shape[0]) == 0")
        return f"np.where({off}, 1.0 / np.where({off}, {a[0]}[None, :] - {a[0]}[:, None], 1.0), 0.0)"
    if isinstance(n, (Funm, Frechet)):
        code = _general_function(w, n, args)
        return _finite_code(w, n, code) if w.checks else code
    if isinstance(n, Svd):  # one thin SVD, its parts
        e = w.emit(f"np.linalg.svd({a[0]}, full_matrices=False)")
        return {"values": f"{e}[1]", "left": f"{e}[0]", "right": f"{e}[2].T", "top": f"{e}[1][0]",
                "top_left": f"{e}[0][:, 0]", "top_right": f"{e}[2][0]"}[n.part]
    if isinstance(n, Inv):
        if w.tri is not None and isinstance(n.arg, Cholesky):  # L⁻¹ by a triangular solve, lower
            # triangular as L is (an LU inverse costs 6× and leaves rounding above the diagonal)
            return w.tri.format(a[0], f"np.eye({a[0]}.shape[0])", 0)
        return f"np.linalg.inv({a[0]})"
    if isinstance(n, Pinv):  # VΣ⁻¹Uᵀ
        f = w.emit(f"_pinv_factors({a[0]})", f"SVD of {_comment(n.arg)}")
        return f"({f}[2].T / {f}[1]) @ {f}[0].T"
    if isinstance(n, Cholesky):  # lower triangular, S = LLᵀ
        return f"np.linalg.cholesky({a[0]})"
    if isinstance(n, Phi):  # the lower triangle, the diagonal halved
        return f"0.5 * (np.tril({a[0]}) + np.tril({a[0]}, -1))"
    if isinstance(n, Det):
        return f"np.linalg.det({a[0]})"
    if isinstance(n, LogDet):
        return f"np.linalg.slogdet({a[0]})[1]"
    if isinstance(n, Reshape):
        return f"np.reshape({a[0]}, ({', '.join(size_of(d) for d in n.shape)},))"
    if isinstance(n, ScalarFn):
        raise NotSupportedError(f"codegen: {n.fn} is an abstract function; it has no code")
    if isinstance(n, Delta):
        k = size_of(n.dim)
        if n.order <= 2:
            return f"np.ones({k})" if n.order == 1 else f"np.eye({k})"
        spec = "a," + ",".join("a" + LETTERS[i + 1] for i in range(n.order - 1))
        spec += "->a" + "".join(LETTERS[i + 1] for i in range(n.order - 1))  # δ_abc = 1_a I_ab I_ac
        return f"np.einsum({spec!r}, np.ones({k}), {', '.join([f'np.eye({k})'] * (n.order - 1))})"
    if isinstance(n, Basis):
        return f"np.eye({size_of(n.dim)})[{n.pos}]"
    raise AssertionError(type(n).__name__)


def _sum_onto(w: _Writer, n: Sum, args: dict, size_of) -> str:
    """A sum holding diagonal outputs (``_folded_spreads``): its other terms computed into a
    new array, then each diagonal's entries added where its repeated labels agree."""
    rest = Sum(tuple((c, t) for c, t in n.terms if t not in w.folded), n.shape)
    code = _node_code(w, rest, args, size_of)
    if re.fullmatch(r"\(*\w+(\.T)?\)*", code) or \
            code.lstrip("(").startswith("np.broadcast_to("):  # another line's array, or a view,
        code = f"1.0 * {code}"  # which adding in place would change or refuse: add onto a copy
    full = w.emit(code, _comment(n), pure=False)
    for c, t in n.terms:
        if t in w.folded:
            w.into = full
            try:
                _product(w, t, args, size_of, coef=c)
            finally:
                w.into = None
    return full


# --------------------------------------------------------------------------- entry points


# names the generated code itself uses: a parameter never shadows them
RESERVED = {"np", "jnp", "jax", "torch", "scipy", "float", "_device", "_dtype", "_tie_terms",
            "_plain_terms"} | set(HELPERS) | \
    {h for table in BACKENDS.values() for h in table.get("helpers", ())} | \
    set(dir(builtins))


def _parameters(vs: list, fn_name: str, functions=()) -> list:
    """One Python parameter per variable: its name as Python reads it (NFKC-normalised:
    ｔ1 is t1), with _ appended until it is no keyword, no name the code uses (the user's
    functions' _g included), and no other parameter's name."""
    taken, out = set(RESERVED) | {fn_name} | {user_function_name(f) for f in functions}, []
    for v in vs:
        p = unicodedata.normalize("NFKC", v.name)
        while keyword.iskeyword(p) or p in taken:
            p += "_"
        taken.add(p)
        out.append(p)
    return out


def _as_list(outputs) -> list:
    """The outputs (an expression or a list of them) as a list of Expr."""
    return [lift(e) for e in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def _variables_of(exprs: list, args=None) -> list:
    """The variables a function computing ``exprs`` takes: in the order given by ``args``
    (variables or their names; it must hold every one the outputs use, and may hold more),
    else in the order they first appear in the expressions as written."""
    # every variable the outputs were written with, also one that simplifies away (a − a):
    # the function's signature, dtype and device follow what the user wrote
    used = variables(*(simplify(e.node) for e in exprs), *(e.node for e in exprs),
                     *(v for e in exprs for v in e.scope))
    if args is not None:
        return _ordered_by(args, used, exprs)
    seen, order = set(used), []
    stack = [e.node for e in reversed(exprs)]
    visited = set()
    while stack:  # depth first, left to right: x.T @ A @ x takes (x, A)
        n = stack.pop()
        if n in visited:
            continue
        visited.add(n)
        if n in seen:
            order.append(n)
            seen.discard(n)
        stack.extend(reversed(n.children))
    return order + [v for v in used if v in seen]


def _ordered_by(args, used: list, exprs: list) -> list:
    from .ir import Var
    if isinstance(args, (str, Expr)) or not hasattr(args, "__iter__"):
        raise MatdiffError(f"args must be a list of variables, such as [w, X, y], not {args!r}")
    everything = {v.name: v for v in variables(*(e.node for e in exprs))}
    everything.update({v.name: v for v in used})
    out = []
    for a in args:
        node = lift(a).node if isinstance(a, Expr) else everything.get(a) if isinstance(a, str) else None
        if isinstance(a, str) and node is None:
            raise MatdiffError(f"args names {a!r}, which is no variable of the outputs; they use "
                               f"{', '.join(v.name for v in used) or 'none'}")
        if not isinstance(node, Var):
            raise MatdiffError(f"args holds {a!r}, which is not a variable; list variables or names")
        if node in out:
            raise MatdiffError(f"args lists {node.name} twice")
        out.append(node)
    missing = [v.name for v in used if v not in out]
    if missing:
        raise MatdiffError(f"args leaves out {', '.join(missing)}, which the outputs use; list "
                           f"every variable (extra ones are allowed and ignored)")
    return out


def _check_name(name) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or \
            unicodedata.normalize("NFKC", name) in RESERVED:
        raise MatdiffError(f"codegen: name must be a Python identifier that is no keyword and "
                           f"no name the generated code uses, not {name!r}")


def codegen(outputs, backend: str = "numpy", name: str = "f", sizes: dict | None = None,
            args=None, checks: bool = True) -> str:
    """Source code of a function computing ``outputs`` (an expression or a list of them) from
    the variables, in the order they first appear in the outputs (or the order of ``args``,
    a list of variables or names); ``sizes`` (dims to ints) tunes the contraction order.
    ``checks`` (the default, as md.compile's) writes md.compile's checks into the code: a
    result that depends on which eigen- or singular vectors a decomposition chose where values
    tie is refused, and so is f(X) of a general matrix that is not finite (an overflow);
    NumPy and PyTorch raise (matdiff's EvaluationError where matdiff is installed), JAX raises
    outside jit and gives NaN under it. The printed module is the code md.compile runs, and runs
    on its own; ``checks=False`` prints the code without them.

    >>> x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
    >>> for line in md.codegen(md.grad(x.T @ A @ x, x)).splitlines()[5:]:
    ...     print(line)
        A = np.asarray(A)
        x = np.asarray(x)
        A = A if A.dtype.kind == 'f' else A.astype(np.float64)
        x = x if x.dtype.kind == 'f' else x.astype(np.float64)
        t1 = x @ A + A @ x  # (A + Aᵀ)x
        return t1
    >>> S = md.matrix("S", "n", "n", symmetric=True)
    >>> source = md.codegen(md.grad(md.eigvalsh(S)[-1], S))
    >>> "_checking_choices(" in source, source == md.compile(md.grad(md.eigvalsh(S)[-1], S)).source
    (True, True)
    >>> "_checking_choices(" in md.codegen(md.grad(md.eigvalsh(S)[-1], S), checks=False)
    False
    """
    return _source(outputs, backend, name, sizes, args, checks)


def _source(outputs, backend: str, name: str, sizes, args, checks: bool = True) -> str:
    """``codegen``'s source."""
    if backend not in BACKENDS:
        raise NotSupportedError(f"codegen: backend {backend!r} is not available yet; use one of "
                                f"{', '.join(map(repr, BACKENDS))}")
    _check_name(name)
    try:
        return _codegen(outputs, backend, name, sizes, args, checks)
    except RecursionError:
        raise MatdiffError(f"codegen: the expression is nested too deeply for Python's recursion "
                           f"limit of {sys.getrecursionlimit()}; raise it with "
                           f"sys.setrecursionlimit") from None


def _codegen(outputs, backend: str, name: str, sizes, order_args=None, checks: bool = True) -> str:
    table = BACKENDS[backend]
    exprs = _as_list(outputs)
    written = [numerical_forms(simplify(e.node)) for e in exprs]  # 1 − σ(u) as σ(−u)
    roots = _scaled_singular_code(_tie_limits(written))
    roots = _rational_functions(roots)
    vs = _variables_of(exprs, order_args)
    w = _Writer(dict(sizes or {}), table.get("functions", {}))
    w.checks = checks
    args: dict = {}
    params = _parameters(vs, name, _user_functions(exprs))
    while any(re.fullmatch(rf"{w.prefix}\d+", p) for p in params):
        w.prefix = "_" + w.prefix
    for v, p in zip(vs, params):
        args[v] = p
    dim_source = {}
    for v, p in zip(vs, params):
        for axis, d in enumerate(v.shape):
            for f in D.factors(d):
                if isinstance(f, str) and f not in dim_source and d == f:
                    dim_source[f] = f"{p}.shape[{axis}]"

    def size_of(d) -> str:
        if isinstance(d, int):
            return str(d)
        parts = []
        for f in D.factors(d):
            if isinstance(f, int):
                parts.append(str(f))
            elif f in dim_source:
                parts.append(dim_source[f])
            elif is_min_dim(f):  # min(k, n): the singular values of a matrix whose dims do not
                # say which is smaller, sized from the arguments' own sizes
                parts.append(f"min({', '.join(size_of(D.parse(a)) for a in min_arguments(f))})")
            else:
                raise MatdiffError(f"codegen: no argument fixes the size of {f!r}")
        return " * ".join(parts)

    order, seen = [], set()
    for r in roots:  # children before parents, each node once across all outputs
        stack = [(r, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            if n in seen or n in args:
                continue
            seen.add(n)
            stack.append((n, True))
            kids = [c for c in n.children if not (isinstance(n, Contract) and isinstance(c, Delta))]
            stack.extend((c, False) for c in reversed(kids) if c not in seen and c not in args)
    uses = _uses(order)
    ends = roots  # the results, and the results of each arm of a tie branch
    roots = [x for r in roots for x in (r.args[:2] if isinstance(r, _TieBranch) else (r,))]
    w.uses = {n: k for n, k in uses.items() if n not in roots}
    if "__sigmoids" in w.functions:
        w.sigmoid_pairs = _sigmoid_pairs(order)
    w.lu = table.get("lu") if backend != "numpy" or _has_scipy() else None
    if w.lu is not None:  # log|det X| beside X⁻¹ (or solves with X): one LU serves both
        w.shared_lu = {n.arg for n in order if isinstance(n, LogDet)} & \
            {n.arg for n in order if isinstance(n, Inv)}
    if backend != "numpy" or _has_scipy():  # Cholesky where the matrix is positive definite
        w.cho, w.tri = CHOLESKY[backend], TRIANGULAR[backend]
        w.spd = {n.arg for n in order if isinstance(n, (Inv, LogDet)) and
                 positive_definite(Expr(n.arg))}
        w.cholesky = {n.arg: n for n in order if isinstance(n, Cholesky) and n.arg in w.spd}
    for n in order:
        if isinstance(n, Contract):
            for op in n.operands:
                if isinstance(op, Inv):
                    w.inverse_uses[op] = w.inverse_uses.get(op, 0) + 1
    inlined = w.inlined = _distributed_sums(order, roots, uses, set(order) | set(args), w.hint,
                                            table.get("distribute_transposes", False))
    inverse_sums = _sums_of_inverses(order, roots, inlined, args)
    for n in order:  # each product reading a sum of inverses, applied as a sum of solves or
        if isinstance(n, Contract):  # distributed over it, solves with each of them
            for op in n.operands:
                solved = [inv for _, inv, kind in inverse_sums[op] if kind != "outer"] \
                    if op in inverse_sums else \
                    [t for _, t in op.terms if isinstance(t, Inv)] if op in inlined else ()
                for inv in solved:
                    w.inverse_uses[inv] = w.inverse_uses.get(inv, 0) + 1
    scaled = _scaled_products(order, roots, uses)
    common = w.common = _common_factors(order, roots, uses, inlined)
    folded = w.folded = _folded_spreads(order, roots, uses, inlined, common)

    def lower(n) -> None:
        if isinstance(n, Const):
            args[n] = repr(float(n.value))
            return
        if n in inlined or n in scaled or n in folded:
            return
        if isinstance(n, Sum) and n.terms and n.terms[0][1] in scaled:
            (c, t), = n.terms
            args[n] = w.emit(_product(w, t, args, size_of, coef=c), _comment(n))
            return
        if isinstance(n, Contract):
            args[n] = w.emit(_product(w, n, args, size_of), _comment(n))
            return
        if n in common:  # 2(UVᵀ − T)V: the sum without its factor, which its product takes
            args[n] = w.emit(_node_code(w, Sum(tuple((c / common[n], t) for c, t in n.terms),
                                                   n.shape), args, size_of))
        else:
            shared = isinstance(n, (Inv, LogDet)) and (n.arg in w.shared_lu or n.arg in w.spd)
            args[n] = w.emit(_from_lu(w, n, args) if shared else _node_code(w, n, args, size_of), _comment(n))
        if isinstance(n, Inv):  # formed only if a line still reads it once products are planned
            w.inverses[args[n]] = (args[n.arg], n)
        if n in inverse_sums and all(args.get(t) in w.inverses if kind != "outer" else  # (t: u, v)
                                     all(o in args or o in w.inlined for f in t for o in f.operands)
                                     for _, t, kind in inverse_sums[n]):
            w.inverse_sums[args[n]] = [  # without the common factor, which its products apply
                (c / common.get(n, 1.0), tuple(w.emit(_product(w, f, args, size_of)) for f in t)
                 if kind == "outer" else args[t], kind) for c, t, kind in inverse_sums[n]]
        if isinstance(n, Pinv):
            w.pinvs[args[n]] = w.emit(f"_pinv_factors({args[n.arg]})")

    before, tie_terms, plain_terms, after = _tie_branch_order(order, ends)
    for n in before:
        lower(n)
    if tie_terms or plain_terms:
        _tie_branch(w, [n for n in order if isinstance(n, _TieBranch)], (tie_terms, plain_terms), args, lower,
                    backend)
    for n in after:
        lower(n)
    for r in ends:  # a constant result is an array of the arguments' dtype, not a Python float
        if isinstance(r, Const):
            args[r] = w.emit(f"np.asarray({args[r]})", _comment(r))
    _inverse_from_lu(w)
    lines, results = w.live_lines([args[r] for r in ends])
    if backend == "numpy":
        lines = _in_place(lines, results, w.prefix)
    if backend != "jax":  # under jit XLA plans the memory itself
        lines = _freeing(lines, results, w.prefix)
    results = ", ".join(results)
    needs = sorted(user_function_name(fn) for fn in _user_functions(exprs))
    body = [_backend_line(line, table) for line in lines]
    helpers = {helper: source for helper, source in {**HELPERS, **table.get("helpers", {})}.items()
               if any(re.search(rf"(?<![\w.]){helper}\(", line) for line in body)}
    scipy_used = any(re.search(r"(?<![\w.])scipy\.linalg\.", line) for line in body + list(helpers.values()))
    imports = table["import"] + ("\nimport scipy.linalg" if scipy_used else "")
    for source in helpers.values():
        imports += source
    header = [
        imports + (f"  # and the user functions {', '.join(needs)}" if needs else ""),
        "",
        "",
        f"def {name}({', '.join(params)}):",
        f'    """{"; ".join(_comment(r) for r in written)[:90]}"""',  # as the user's results read
    ]
    casts = _prelude(table, backend, params, [v.ndim == 0 for v in vs],
                     any("_dtype" in line for line in body), any("_device" in line for line in body))
    source = "\n".join(header + casts + body + [f"    return {results}"]) + "\n"
    if checks and DECOMPOSITION_CALL.search(source.partition(f"\ndef {name}(")[2]):
        return _with_checks(source, name, backend, exprs, vs, params)
    return source


def _inverse_from_lu(w: _Writer) -> None:
    """An inverse X⁻¹ that a line still reads where solves with X use X's LU is computed
    from those factors (the backend's ``__lu_inverse``: getri in NumPy), the LU's line moved
    up to the inverse's: one factorisation where ``inv`` made a second
    (−A⁻ᵀdiag(sin(A⁻¹x))A⁻¹, the Hessian of Σ sin(A⁻¹x), solves with A and forms A⁻¹)."""
    if w.lu is None:
        return
    factor = re.compile(rf"    ({w.prefix}\d+) = " + re.escape(w.lu[0]).replace(re.escape("{0}"), "(.+)"))
    formed = re.compile(rf"    ({w.prefix}\d+) = np\.linalg\.inv\((.+)\)")
    lus = {}  # X's code -> (its LU's line number, the LU's name)
    for i, line in enumerate(w.lines):
        m = factor.fullmatch(line.partition("  # ")[0])
        if m:
            lus.setdefault(m.group(2), (i, m.group(1)))
    if not lus:
        return
    out: list = [[line] for line in w.lines]
    for i, line in enumerate(w.lines):
        code, hash_, comment = line.partition("  # ")
        m = formed.fullmatch(code)
        if m is None or m.group(2) not in lus:
            continue
        j, lu = lus[m.group(2)]
        code = w.functions["__lu_inverse"].format(lu, m.group(2))
        inverse = f"    {m.group(1)} = {code}{hash_}{comment}"
        if j > i:  # the factors are made where the inverse was; their later line goes
            out[i], out[j] = [w.lines[j], inverse], []
        else:
            out[i] = [inverse]
    w.lines = [x for group in out for x in group]


def _in_place(lines: list, results: list, prefix: str) -> list:
    """An element-wise product ``tK = tA * tB`` written into tA where this line is the only
    one that reads tA and tA's line made it afresh (an arithmetic result, or one of the two
    arrays ``_sigmoids`` returns): ``_mul_into`` (NumPy's ``out=``), which falls back to
    ``tA * tB`` unless both are arrays of one shape and dtype.  No new n × h array, no fresh
    pages: ∇W₁‖σ(XW₁)W₂ − Y‖² at 8000 × 100 × 50 × 10 writes two of its three products in place
    and took 14.7 ms where it took 16.4 (the closed form 15.6 and 14.7 ms; NumPy float64, one
    thread).  Code with blocks is left as written."""
    if any(re.match(r"    \s", line) for line in lines):
        return lines
    name = re.compile(rf"\b{prefix}\d+\b")
    assigned = re.compile(rf"    ({prefix}\d+) = (.*)")
    product = re.compile(rf"    ({prefix}\d+) = ({prefix}\d+) \* ({prefix}\d+)")
    kept = {x for r in results for x in name.findall(r)}
    code, reads, last = {}, {}, {}
    for i, line in enumerate(lines):
        body = line.split("  # ")[0]
        m = assigned.fullmatch(body)
        if m:
            code[m.group(1)] = (i, m.group(2))
        for x in set(name.findall(m.group(2) if m else body)):
            reads[x] = reads.get(x, 0) + 1
            last[x] = i

    def fresh(x: str, i: int) -> bool:
        if x in kept or reads.get(x) != 1 or x not in code:
            return False
        j, c = code[x]
        m = re.fullmatch(rf"({prefix}\d+)\[[01]\]", c)
        if m:  # σ(u) or σ(−u) of _sigmoids(u), the tuple read by nothing later
            return m.group(1) in code and code[m.group(1)][1].startswith("_sigmoids(") and \
                last[m.group(1)] < i
        return _top_level_arithmetic(c)

    out = list(lines)
    for i, line in enumerate(lines):
        body, hash_, comment = line.partition("  # ")
        m = product.fullmatch(body)
        if not m or m.group(2) == m.group(3):
            continue
        for a, b in ((m.group(2), m.group(3)), (m.group(3), m.group(2))):
            if fresh(a, i):
                out[i] = f"    {m.group(1)} = _mul_into({a}, {b})" + hash_ + comment
                break
    return out


def _top_level_arithmetic(code: str) -> bool:
    """Whether ``code`` is a binary arithmetic operation outside all brackets, or a negation
    of a bracket: its value is a new array, never a view of another."""
    if code.startswith("-(") and code.endswith(")"):
        return True
    depth = 0
    for k, ch in enumerate(code):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and code[k:k + 3] in (" * ", " @ ", " + ", " - ", " / "):
            return True
    return False


def _freeing(lines: list, results: list, prefix: str) -> list:
    """``lines`` with ``del`` after the line that reads a temporary last, where a later line
    computes more: NumPy and PyTorch free it there, and the next array of its size takes its
    memory, where one held to the return takes fresh pages (∇W₁ of ‖σ(XW₁)W₂ − Y‖² at 8000 ×
    50 held six n × h arrays; a page fault costs about 1.5 ms per 3.2 MB).  Code with blocks
    (tie branches) is left as written."""
    if any(re.match(r"    \s", line) for line in lines):
        return lines
    name = re.compile(rf"\b{prefix}\d+\b")
    kept = {x for r in results for x in name.findall(r)}
    last: dict = {}
    for i, line in enumerate(lines):
        for x in name.findall(line.split("  # ")[0]):
            last[x] = i
    dead: dict = {}
    for x, i in last.items():
        if x not in kept and i < len(lines) - 1:  # the return frees what the last line read
            dead.setdefault(i, []).append(x)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i in dead:
            out.append(f"    del {', '.join(sorted(dead[i], key=lambda x: int(x[len(prefix):])))}")
    return out


def _prelude(table: dict, backend: str, params: list, scalar: list, constants: bool,
             device: bool = True) -> list:
    """The lines that cast the arguments.  Arrays become the backend's arrays, integers and
    booleans float64; the arrays' promoted dtype is ``_dtype``, and scalar arguments and
    constants take it, as Python numbers do in NumPy: float32 arrays with a scalar 0.5
    compute and return float32.  PyTorch's ``_device`` is read only where the body (or a
    scalar's cast) uses it: reading ``X.device`` costs a tenth of a microsecond a call."""
    arrays = [p for p, s in zip(params, scalar) if not s] or params
    scalars = [p for p in params if p not in arrays]
    lines = [f"    {p} = {table['cast'].format(p=p)}" for p in arrays]
    lines += [f"    {table['floating'].format(p=p)}" for p in arrays]
    if backend == "torch" and params and (device or scalars):  # constants go where the arguments are
        lines.append(f"    _device = {arrays[0]}.device")
    if scalars or constants:
        promoted = arrays[0] + ".dtype" if arrays else ""
        for p in arrays[1:]:
            promoted = f"torch.promote_types({promoted}, {p}.dtype)"
        lines.append("    _dtype = " + (table["dtype"].format(ps=", ".join(arrays), promoted=promoted)
                                        if arrays else table["default_dtype"]))
    lines += [f"    {p} = {table['scalar'].format(p=p)}" for p in scalars]
    return lines


def _backend_line(line: str, table: dict) -> str:
    """A generated line in a backend's names: np. → jnp., and its way to write entries."""
    m = re.fullmatch(r"(\s*)<scatter(_add)? (.*)\|(.*)\|(.*)>", line)
    if m:
        line = m.group(1) + table["scatter" + (m.group(2) or "")].format(
            full=m.group(3), index=m.group(4), values=m.group(5))
    code, hash_, comment = line.partition("  # ")
    code = re.sub(r"\bnp\.", table["module"] + ".", code)
    for pattern, replacement in table.get("rewrites", ()):
        code = re.sub(pattern, replacement, code)
    return code + hash_ + comment


def compile(outputs, backend: str = "numpy", sizes: dict | None = None, args=None,  # noqa: A001
            checks: bool = True):
    """A function of the variables computing ``outputs``; shared subexpressions are computed
    once. Its parameters are the variables in the order they first appear in the outputs,
    or in the order of ``args`` (``md.compile(loss, args=[w, X, y])``); ``inspect.signature``
    shows them, and each may also be passed by its variable's name.

    >>> x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
    >>> f = md.compile([x.T @ A @ x, md.grad(x.T @ A @ x, x)])
    >>> value, gradient = f(x=[1.0, 1.0], A=[[1.0, 0.0], [0.0, 1.0]])
    >>> float(value), gradient.tolist()
    (2.0, [2.0, 2.0])

    With ``checks`` (the default), code that decomposes a matrix (eigh, svd) refuses, as
    ``evaluate`` does, a result that depends on which eigen- or singular vectors are chosen
    where values repeat: the gradient of λ_max at a repeated top eigenvalue, of ‖X‖₂ at a
    repeated σ₁. NumPy and PyTorch raise EvaluationError; JAX raises outside jit and returns
    NaN under it. A call with no repeated value costs what it would without checks; one with
    a repeated value computes its result again with the vectors turned. f(X) of a general
    matrix that is not finite (e^800 overflows) is refused too, and so is a second derivative
    through eigenvectors that has no limit at a tie. The checks are in the code (``.source``,
    md.codegen's with the same ``checks``). ``checks=False`` returns the value the
    decomposition's own vectors give (there, a subgradient), inf or NaN where those are.

    >>> S = md.matrix("S", "n", "n", symmetric=True)
    >>> g = md.compile(md.grad(md.eigvalsh(S)[-1], S))
    >>> g(S=np.diag([1.0, 2.0, 2.0]))
    Traceback (most recent call last):
    ...
    matdiff.errors.EvaluationError: not differentiable here: S has a repeated eigenvalue, λ = 2 (2 times), ...
    >>> md.compile(md.grad(md.eigvalsh(S)[-1], S), checks=False)(S=np.diag([1.0, 2.0, 2.0])).shape
    (3, 3)
    """
    source = _source(outputs, backend, "f", sizes, args, checks)
    fn = _compiled(source, outputs, backend, args)
    fn.source = source
    return fn


def _compiled(source: str, outputs, backend: str, args):
    """The function that ``source`` (generated for ``outputs``) defines, behind a check of its
    arguments (``_checked``); the checks of what it computes (a result that depends on a
    choice of vectors at a tie refused, f(X) that is not finite) are in the source."""
    namespace: dict = {user_function_name(fn): (fn.numpy if callable(fn.numpy) else fn.numpy[fn.order])
                       for fn in _user_functions(outputs)}
    try:
        exec(compile_source(source), namespace)  # our own generated code, never user text
    except ImportError as e:  # the backend (or SciPy) is an optional extra
        extra = {"jax": "jax", "torch": "torch", "scipy": "linalg"}.get((e.name or "").split(".")[0])
        hint = f'pip install "matdiff[{extra}]"' if extra else f"install {e.name}"
        raise NotSupportedError(f"md.compile(..., backend={backend!r}) needs {e.name}, which is not "
                                f"installed: {hint}") from None
    vs = _variables_of(_as_list(outputs), args)
    params = _parameters(vs, "f", _user_functions(outputs))
    _runtime_helpers(namespace, backend)
    fast, lean = None, _without_casts(source, backend, params)
    if lean is not None:
        lean_namespace = {k: v for k, v in namespace.items() if k != "f" and not k.startswith("__")}
        exec(compile_source(lean), lean_namespace)  # the same generated code, less its casts
        _runtime_helpers(lean_namespace, backend)
        fast = lean_namespace["f"]
    # with checks, the source checks what it computes (``_with_checks``): nothing is added here
    fn = _checked(namespace["f"], vs, params, fast, _native_types(backend))
    fn.source = source
    return fn


try:  # NumPy's floating-point error state, the context variable np.errstate sets (NumPy 2)
    from numpy._core._ufunc_config import _extobj_contextvar as _ERROR_STATE
    from numpy._core.umath import _make_extobj

    _ERROR_STATE.reset(_ERROR_STATE.set(_make_extobj(over="ignore")))  # works as np.errstate uses it
except Exception:  # noqa: BLE001  # pragma: no cover - another NumPy: compiled code keeps np.errstate
    _ERROR_STATE = _make_extobj = None
_overflow_ignored = (None, None)  # the last error state met, and it with overflow ignored


def _runtime_sigmoid(x):
    """The generated NumPy helper ``_sigmoid`` as compiled functions run it: the same
    operations, under the error state ``np.errstate(over="ignore")`` would set (the
    caller's, overflow ignored), set directly.  np.errstate costs 1.3 µs a call, and
    4–6 µs beside the matrix-vector product a BCE gradient does next (NumPy 2.4; a
    float32 gradient at 2000 × 200 takes 56 µs)."""
    global _overflow_ignored
    e = np.negative(x)
    out = e if type(e) is np.ndarray else None
    state = _ERROR_STATE.get()
    cached = _overflow_ignored
    if cached[0] is not state:
        cached = _overflow_ignored = (state, _make_extobj(over="ignore"))
    token = _ERROR_STATE.set(cached[1])
    try:
        e = np.exp(e, out=out)  # exp(−x) is inf for x ≪ 0, and σ(x) = 0 as it should be
    finally:
        _ERROR_STATE.reset(token)
    e += 1.0
    return np.reciprocal(e, out=out)


_invalid_ignored = (None, None)  # the same, with overflow and invalid operations ignored


def _runtime_sigmoids(x):
    """The generated NumPy helper ``_sigmoids`` as compiled functions run it: the same
    operations, its ``np.errstate`` set directly (as ``_runtime_sigmoid`` does)."""
    global _invalid_ignored
    e = np.negative(x)
    out = e if type(e) is np.ndarray else None
    state = _ERROR_STATE.get()
    cached = _invalid_ignored
    if cached[0] is not state:
        cached = _invalid_ignored = (state, _make_extobj(over="ignore", invalid="ignore"))
    token = _ERROR_STATE.set(cached[1])
    try:
        e = np.exp(e, out=out)
        s = e + 1.0
        s = np.reciprocal(s, out=s if out is not None else None)
        e = np.multiply(e, s, out=out)  # inf · 0 where exp overflowed: fmin makes it 1
    finally:
        _ERROR_STATE.reset(token)
    return s, np.fmin(e, 1.0, out=out)


def _runtime_helpers(namespace: dict, backend: str) -> None:
    """Swap the generated module's helpers for their equivalents above, where NumPy has them."""
    if backend == "numpy" and _ERROR_STATE is not None:
        for name, helper in (("_sigmoid", _runtime_sigmoid), ("_sigmoids", _runtime_sigmoids)):
            if name in namespace:
                namespace[name] = helper


def _native_types(backend: str) -> tuple:
    """The backend's own array types, which its generated code's casts leave as they are,
    and the real floating dtypes that need no cast: an argument of both may skip the casts."""
    floats = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.longdouble)}
    if backend == "numpy":
        return frozenset({np.ndarray}), frozenset(floats)
    if backend == "torch":
        torch = sys.modules.get("torch")  # the generated module has imported it
        if torch is None or not hasattr(torch, "Tensor"):
            return frozenset(), frozenset()
        floats = {getattr(torch, t) for t in ("float16", "bfloat16", "float32", "float64")
                  if hasattr(torch, t)}
        return frozenset({torch.Tensor}), frozenset(floats)
    # JAX's concrete array class, found without making an array (which would start a device);
    # where a JAX version keeps it elsewhere, its arrays take the general path, as tracers do
    array = getattr(sys.modules.get("jax._src.array"), "ArrayImpl", None)
    return (frozenset({array}) if isinstance(array, type) else frozenset()), frozenset(floats)


def _without_casts(source: str, backend: str, params: list) -> str | None:
    """The generated source less its array arguments' casts (``X = np.asarray(X)`` and the
    integer-to-float line), for arguments already of the backend's type and a floating dtype:
    the same code on the same arrays, without a few hundred nanoseconds per argument."""
    table = BACKENDS[backend]
    casts = {f"    {p} = {table['cast'].format(p=p)}" for p in params} | \
        {f"    {table['floating'].format(p=p)}" for p in params}
    lines = source.split("\n")
    kept = [line for line in lines if line not in casts]
    return "\n".join(kept) if len(kept) < len(lines) else None


def _singular(e: Exception) -> None:
    """NumPy's and PyTorch's LinAlgError (a singular matrix) as an EvaluationError; any
    other exception is left to propagate."""
    if isinstance(e, FloatingPointError) and str(e).endswith(NOT_FINITE):  # checks: f(X) not finite
        raise EvaluationError(str(e)) from None
    if "LinAlgError" in type(e).__name__ and str(e).startswith(RANK_MESSAGE):
        raise EvaluationError(f"the compiled function took the {e}") from None
    if "LinAlgError" in type(e).__name__ and re.search("positive.definite", str(e)):
        raise EvaluationError(f"the compiled function met a matrix that is not positive definite "
                              f"({e}): its Cholesky factor does not exist") from None
    if "LinAlgError" in type(e).__name__:
        raise EvaluationError(f"the compiled function met a singular matrix ({e}): an inverse, "
                              f"a solve or a logarithm is not defined at these values") from None


def _entry(vs: list, params: list, types: frozenset, floats: frozenset, fast, general, symmetric=()):
    """The compiled function's entry point: for arguments passed by parameter name or in
    order that are arrays of ``types`` with dtypes in ``floats`` and the declared shapes
    (the common call), ``fast`` on them; for any other call ``general(args, kwargs)``.
    It is written out for these parameters, in straight-line code: a loop over the
    declarations, and passing the keywords on twice, cost 1–3 µs a call, as much as the
    arithmetic of a small problem."""
    q = "_fits_"  # the prefix of the entry's own names, which no parameter may shadow
    while any(p.startswith(q) for p in params):
        q += "_"
    n = len(params)
    lines = [f"def {q}(*{q}args, **{q}kwargs):",
             f"    if {q}args:",
             f"        if {q}kwargs or {q}len({q}args) != {n}:",
             f"            return {q}general({q}args, {q}kwargs)",
             f"        {', '.join(params)}, = {q}args",
             f"    elif {q}len({q}kwargs) == {n}:"]
    lines += [f"        {p} = {q}kwargs.get({p!r}, {q}missing)" for p in params]
    lines += ["    else:",
              f"        return {q}general({q}args, {q}kwargs)",
              f"    if {' or '.join(f'{q}type({p}) not in {q}T' for p in params)} or \\",
              f"            {' or '.join(f'{p}.dtype not in {q}F' for p in params)}:",
              f"        return {q}general({q}args, {q}kwargs)",
              f"    {', '.join(f'{q}s{i}' for i in range(n))}, = {', '.join(f'{p}.shape' for p in params)},"]
    checks, first = [f"{q}len({q}s{i}) == {len(v.shape)}" for i, v in enumerate(vs)], {}
    for i, v in enumerate(vs):
        for j, d in enumerate(v.shape):
            if isinstance(d, int):
                checks.append(f"{q}s{i}[{j}] == {d}")
            elif d in first:
                checks.append(f"{q}s{i}[{j}] == {first[d]}")
            else:
                first[d] = f"{q}s{i}[{j}]"
    lines += [f"    if not ({' and '.join(checks)}):",
              f"        return {q}general({q}args, {q}kwargs)"]
    lines += [f"    {q}{'positive' if v.symmetric == 'positive' else 'symmetric'}({v.name!r}, {p})"
              for v, p in symmetric]  # one triangle is read; λ > 0 makes XᵀX + λI definite
    lines += ["    try:",
              f"        return {q}fast({', '.join(params)})",
              f"    except Exception as {q}e:",
              f"        {q}singular({q}e)",
              "        raise"]
    namespace = {q + "T": types, q + "F": floats, q + "type": type, q + "len": len, q + "fast": fast,
                 q + "general": general, q + "singular": _singular, q + "missing": object(),
                 q + "symmetric": check_symmetric, q + "positive": check_positive}
    exec(builtins.compile("\n".join(lines) + "\n", "<matdiff-entry>", "exec"), namespace)  # our own text
    return namespace[q]


def _checked(fn, vs: list, params: list, fast=None, native=(frozenset(), frozenset())):
    """``fn`` behind a check of its arguments' shapes against the variables' declarations,
    with evaluate's messages; arguments may also be passed by the variables' own names.
    The common call (arrays of the backend's own type and a real floating dtype, by keyword
    or in order, shapes that fit) is checked in well under a microsecond per argument and
    goes to ``fast``, the same function without the casts those arguments do not need."""
    sig = inspect.signature(fn)
    by_name = {v.name: p for v, p in zip(vs, params)}
    names = set(params)
    simple = all(isinstance(d, (str, int)) for v in vs for d in v.shape)
    symmetric = [(v, p) for v, p in zip(vs, params) if v.symmetric]

    def arguments(args, kwargs):
        if not args and kwargs.keys() == names:
            return kwargs
        kwargs = {by_name.get(k, k): a for k, a in kwargs.items()}
        try:
            return sig.bind(*args, **kwargs).arguments
        except TypeError as e:
            raise EvaluationError(f"the compiled function takes {', '.join(params)}: {e}") from None

    def general(args, kwargs):
        try:
            return call(args, kwargs)
        except Exception as e:
            _singular(e)
            raise

    def call(args, kwargs):
        given = arguments(args, kwargs)
        shapes, sizes, fits = {}, {}, simple
        for v, p in zip(vs, params):
            a = given[p]
            dtype = getattr(a, "dtype", None)
            if (dtype is None and np.iscomplexobj(a)) or getattr(dtype, "kind", "") == "c" or \
                    getattr(dtype, "is_complex", False):
                raise complex_value(v.name)
            shape = shapes[v] = tuple(a.shape) if dtype is not None else np.shape(a)
            if len(shape) != len(v.shape):
                fits = False
            for d, n in zip(v.shape, shape):
                if (sizes.setdefault(d, n) if isinstance(d, str) else d) != n:
                    fits = False
        if not fits:
            check_shapes(vs, shapes)  # raises with evaluate's message, or passes (n·k dims)
        for v, p in symmetric:  # the decompositions read one triangle: the other must agree
            (check_positive if v.symmetric == "positive" else check_symmetric)(v.name, given[p])
        return fn(**given)

    if fast is not None and native[0] and params and simple:
        checked = _entry(vs, params, *native, fast, general, symmetric)
    else:
        def checked(*args, **kwargs):
            return general(args, kwargs)
    functools.update_wrapper(checked, fn)
    checked.unchecked = fn  # the generated function itself, for callers that check once
    return checked


def _user_functions(outputs) -> set:
    """The user-defined element-wise functions with values that the outputs call: with the
    derivatives of their lists [f, f′, f″, …] where a divided difference of f (of f(S)) takes
    its series (``_user_divided_code``)."""
    roots = [simplify(e.node) for e in _as_list(outputs)]
    out = {n.fn for n in walk(*roots)
           if isinstance(n, Elementwise) and not n.fn.builtin and n.fn.numpy is not None}
    for n in walk(*roots):
        fn = n.args[0] if isinstance(n, (DivDiff, DivDiff2, DivDiff3, DivDiff3Apply)) else None
        if fn is not None and not fn.builtin and fn.deriv is None and isinstance(fn.numpy, tuple):
            out |= {type(fn)(fn.name, k, numpy=fn.numpy) for k in range(fn.order, len(fn.numpy))}
        elif fn is not None and not fn.builtin and fn.numpy is not None and _trace(fn) is None:
            out.add(fn)  # f with a derivative= expression: its values (f′, f″, … are written out)
    return out


def compile_source(source: str):
    import builtins

    return builtins.compile(source, "<matdiff-generated>", "exec")


def hvp(f, x, v) -> Expr:
    """The Hessian-vector product ∇²f(x)·v as an expression, without forming the Hessian:
    the gradient of ⟨∇f, v⟩.  ``v`` is a variable of x's shape."""
    from .library import _variable, dot, grad

    var = _variable(v, "hvp")
    xv = _variable(x, "hvp")
    if var.shape != xv.shape:
        raise MatdiffError(f"hvp: {var.name} must have {xv.name}'s shape "
                           f"{D.fmt_shape(xv.shape)}, not {D.fmt_shape(var.shape)}")
    return grad(dot(grad(f, x), v), x)
