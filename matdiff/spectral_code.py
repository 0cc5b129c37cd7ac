"""The code generator's writers for the spectral nodes and general matrix functions.

Divided differences of f at the eigenvalues, in forms accurate at every gap (``_exact_divided_code``,
as ``evaluate._exact_divided``), for a user's f and for traced functions, whose composites are
written entry by entry (``_traced_divided_code``, ``_entries_code``), and at kinks (relu, |·|:
``_kink_code``, ``_kinks_refused``); second divided differences, and their application to two
matrices without forming the n³ tensor (``_divided_differences3``, ``_divided_differences3_apply``);
f(X) of a general matrix (``_general_function``, ``_finite_code``); the limits of second
derivatives at repeated eigenvalues and the branch that computes them (``_tie_limits``,
``_tie_code``, ``_tie_branch``); and the runtime of md.compile's checks (``CHECKS_RUNTIME``:
``_Decompositions``, ``_checking_choices``, ``_refusing_no_limit``), whose text a checked module
defines.  Steps are written in NumPy's spelling, as the planner's (``plan.py``).
"""
from __future__ import annotations

import functools
import inspect
import linecache
import math
import sys

import numpy as np

from .errors import EvaluationError, NotSupportedError
from .evaluate import (C_SERIES, CHOICE_TOLERANCE, CLOSE, CLUSTER, GAP_COINCIDE, KINKS, PAIR_CLOSE,
                       TAYLOR_CLOSE, TAYLOR_ORDER, TIE_CANCEL, _children_first, _Complementary,
                       _derivative_polynomials, _grows, _in_units, _OffDiagonal, _rescaled, _scaled_variable,
                       _sech2_polynomials, _shown, _singular_divided, _singular_gap_matrices, _svd_squares,
                       _taylor_scale, _trace, _user_nodes, _user_radius, traced_unsupported)
from .ir import (GENERAL_FUNCTIONS, Basis, Const, Contract, Delta, DivDiff, DivDiff2, DivDiff3, DivDiff3Apply,
                 EigGap, Eigh, Elementwise, Frechet, Funm, MatFn, Node, Sum, Svd, Unary, walk)
from .show import FORMS, index_form
from .simplify import simplify
from .writer import SCATTER, _elementwise, _Writer, user_function_name


# --------------------------------------------------------------------------- divided differences


SLOPES = {  # f′ of the functions a divided-difference matrix may need, as code
    "exp": "np.exp({})", "log": "1.0 / {}", "sqrt": "0.5 / np.sqrt({})", "sin": "np.cos({})",
    "cos": "-np.sin({})", "tanh": "1.0 - np.tanh({}) ** 2", "cosh": "np.sinh({})", "sinh": "np.cosh({})",
    # the kinks' one-sided slopes: exact away from 0, where checked code refuses (_kinks_refused)
    "relu": "(({0}) > 0) + 0.0 * ({0})", "abs": "np.sign({0})", "step": "0.0 * ({0})", "sign": "0.0 * ({0})",
}


def _slope(fn) -> str:
    """f′ as code (a format string), for the divided differences of f."""
    if fn.builtin and fn.name == "pow":
        return f"{fn.param!r} * np.power({{}}, {fn.param - 1 if fn.param else 0.0!r})"
    if not fn.builtin or fn.name not in SLOPES:
        raise NotSupportedError(f"codegen: the divided differences of {fn} are not generated "
                                f"yet (functions: {', '.join(SLOPES)}); evaluate() computes them")
    return SLOPES[fn.name]


C_FULL = {"sinh": "np.sinh({0})", "sin": "np.sin({0})", "artanh": "np.arctanh({0})"}


def _c_code(w: _Writer, kind: str, x: str) -> str:
    """sinh(x)/x, sin(x)/x or artanh(x)/x as code, 1 at x = 0 (evaluate's ``_c``)."""
    x = w.emit(x)
    small = w.emit(f"np.abs({x}) < 1e-4")
    safe = w.emit(f"np.where({small}, 0.5, {x})")  # artanh(1) = ∞
    taylor = f"1.0 + {C_SERIES[kind]!r} * ({x} * {x})"
    return f"np.where({small}, {taylor}, {C_FULL[kind].format(safe)} / {safe})"


def _exact_divided_code(w: _Writer, fn, a: str, b: str):
    """evaluate's ``_exact_divided`` as code: f[a, b] accurate at every gap; None where f
    has no such form."""
    name, param = fn.name, fn.param
    if not fn.builtin or name in KINKS:  # (relu(S) itself: the traced relu(u), by its pieces)
        return _traced_divided_code(w, fn, (a, b))[2] if _trace(fn) is not None and \
            (DivDiff3.has_series(fn) or _kinked(fn)) else None
    if name in ("exp", "log", "sin", "cos", "sinh", "cosh", "tanh", "expm1", "log1p", "tan"):
        m, h = w.emit(f"({a} + {b}) / 2"), w.emit(f"({a} - {b}) / 2")
    if name in ("exp", "expm1"):
        return f"np.exp({m}) * {_c_code(w, 'sinh', h)}"
    if name in ("tanh", "sigmoid", "softplus", "log1p", "arctan", "tan"):
        return _more_divided_code(w, name, a, b, m if name in ("log1p", "tan") else None,
                                  h if name in ("log1p", "tan") else None)
    if name == "log":
        z = w.emit(f"{h} / {m}")
        far = w.emit(f"np.abs({z}) > 0.5")
        quotient = f"(np.log({a}) - np.log({b})) / np.where({far}, {a} - {b}, 1.0)"
        near = f"{_c_code(w, 'artanh', f'np.where({far}, 0.0, {z})')} / {m}"
        return f"np.where({far}, {quotient}, {near})"
    if name == "sqrt":
        return f"1.0 / (np.sqrt({a}) + np.sqrt({b}))"
    if name in ("sin", "cos", "sinh", "cosh"):
        outer = {"sin": "np.cos({})", "cos": "-np.sin({})", "sinh": "np.cosh({})", "cosh": "np.sinh({})"}
        return f"{outer[name].format(m)} * {_c_code(w, 'sin' if name in ('sin', 'cos') else 'sinh', h)}"
    if name == "pow" and float(param).is_integer() and abs(param) <= 8:
        p, q = int(param), abs(int(param))
        if p == 0:
            return f"0.0 * ({a} + {b})"
        total = " + ".join(f"{a} ** {k} * {b} ** {q - 1 - k}" for k in range(q))
        return f"({total})" if p > 0 else f"-({total}) / ({a} ** {q} * {b} ** {q})"
    if name == "pow":
        L = w.emit(f"np.log({a}) - np.log({b})")
        same = w.emit(f"{L} == 0")
        return (f"np.where({same}, {param!r}, np.expm1({param!r} * {L}) / "
                f"np.where({same}, 1.0, np.expm1({L}))) * {b} ** {param - 1!r}")
    return None


def _divided_differences(w: _Writer, n: DivDiff, lam: str) -> str:
    """F_ij = f[λᵢ, λⱼ] as evaluate computes it: a form accurate at every gap for the
    built-in functions, else the quotient with f′ at the midpoint where λᵢ, λⱼ agree to
    CLOSE relative to the larger."""
    if w.checks and (n.fn.builtin and n.fn.name in KINKS or not n.fn.builtin and _kinked(n.fn)):
        lam = _kinks_refused(w, n.fn, lam)
    a, b = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
    if not n.fn.builtin and _trace(n.fn) is None:  # a user's md.function
        return _user_divided_code(w, n, lam, a, b)
    exact = _exact_divided_code(w, n.fn, a, b)
    if exact is not None:  # each form takes both λᵢ and λⱼ: it is the full matrix already
        return exact
    gap = w.emit(f"{a} - {b}")
    values = w.emit(_elementwise(w, Elementwise(n.fn, n.arg), lam))
    close = w.emit(f"np.abs({gap}) <= {CLOSE!r} * np.maximum(np.abs({a}), np.abs({b}))")
    slope = _slope(n.fn).format(f"(({a} + {b}) / 2)")
    return (f"np.where({close}, {slope}, ({values}[:, None] - {values}[None, :]) / "
            f"np.where({close}, 1.0, {gap}))")


def _kinks_refused(w: _Writer, fn, lam: str, order: int = 1) -> str:
    """λ through ``_finite_value`` (md.codegen's checks), NaN where an eigenvalue sits at the kink
    of relu, |·|, step or sign (within 64ε of the largest |λ|, evaluate's ``_refuse_kinks``): NumPy
    and PyTorch raise, md.compile's functions evaluate's EvaluationError; JAX raises outside jit
    and gives NaN under it. O(n): it tests the eigenvalues only. ``order`` 2 (a Hessian's second
    divided differences): a traced callable's f″ too, as evaluate's ``_one_sided_differ``."""
    floor = w.emit(f"64 * np.finfo({lam}.dtype).eps * np.abs({lam}).max()")
    kinds = [fn.name] if fn.builtin else sorted({n.fn.name for n in walk(_trace(fn)[0])
                                                 if type(n) is Elementwise and n.fn.name in KINKS})
    why = (f"{fn.name}(S) is not differentiable here{' twice' if order > 1 else ''}: {' or '.join(kinds)} "
           "has a kink at 0, and an eigenvalue (within 64ε of the largest |λ|) puts its argument there")
    if fn.builtin:
        at = f"np.abs({lam}) <= {floor}"
    else:  # a traced callable: where a kink's argument is 0 and f or f′ differ on its two sides
        args: list = []
        _traced_divided_code(w, fn, (lam, lam), args)
        hit = " | ".join(f"(np.abs({g}) <= {floor})" for g in args)
        d = w.emit(f"1e-7 * np.maximum(1.0 + 0.0 * {lam}, np.abs({lam}))")
        sides = [_traced_divided_code(w, fn, (p, p))
                 for p in (w.emit(f"{lam} + {d}"), w.emit(f"{lam} - {d}"))]
        jumps = list(zip(sides[0][::2], sides[1][::2]))  # (f, f′) to the right and left
        if order > 1:  # f″ by one-sided differences of f′ at λ ± d, λ ± 2d
            far = [_traced_divided_code(w, fn, (p, p))[2]
                   for p in (w.emit(f"{lam} + 2 * {d}"), w.emit(f"{lam} - 2 * {d}"))]
            jumps.append((w.emit(f"({far[0]} - {sides[0][2]}) / {d}"),
                          w.emit(f"({sides[1][2]} - {far[1]}) / {d}")))
        differ = " | ".join(f"~(np.abs({r} - {q}) <= 1e-4 * (np.abs({r}) + np.abs({q})) + "
                            f"1e-6 * (1.0 + np.abs({r})))" for r, q in jumps)
        at = f"({hit}) & ({differ})"
    return w.emit(f"_finite_value(np.where({at}, np.nan, {lam}), {why!r})")


def _kinked(fn) -> bool:
    """A traced callable built from relu, |·|, step or sign besides DivDiff3.SERIES's functions,
    constants, sums and products: its first divided differences by the chain rule, exact away
    from the kinks (each kink's own: its one-sided slope on one side, the quotient across)."""
    trace = _trace(fn)  # relu, |·|, step and sign themselves: their own trace, f(t)
    kinds = [n.fn for n in walk(trace[0]) if type(n) is Elementwise] if trace is not None else []
    return any(f.builtin and f.name in KINKS for f in kinds) and \
        all(f.builtin and f.name in KINKS + DivDiff3.SERIES for f in kinds)


def _user_derivative_code(w: _Writer, fn, k: int, x: str) -> str:
    """f⁽ᵏ⁾(x) as code for a user's md.function: a call of its list's entry k (compile()
    supplies it, ``user_function_name``), or its ``derivative=`` expression (and that
    differentiated again: evaluate's ``_user_nodes``) written entry by entry at x."""
    if fn.deriv is not None and _trace(fn) is None:
        t, nodes = _user_nodes(fn)
        if k > len(nodes):
            raise NotSupportedError(f"codegen: {fn.name}" + "′" * k + " is not known in closed form: its "
                                    f"derivative= is differentiated {len(nodes) - 1} times (functions: "
                                    f"{', '.join(DivDiff3.SERIES)}, constants, +, ·, powers, "
                                    f"{fn.name} itself)")
        return _entries_code(w, nodes[k - 1], t, x, fn)
    if not isinstance(fn.numpy, tuple):
        raise NotSupportedError(f"codegen: the divided differences of {fn.name}(S) need its "
                                f"derivatives: give md.function({fn.name!r}, numpy=[f, f′, f″, …]) "
                                f"or derivative=")
    if fn.order + k >= len(fn.numpy):
        raise NotSupportedError(f"codegen: {fn.name}" + "′" * (fn.order + k) + " has no values; give "
                                f"md.function({fn.name!r}, numpy=[f, f′, f″, …])")
    return f"{user_function_name(type(fn)(fn.name, fn.order + k, numpy=fn.numpy))}({x})"


def _entries_code(w: _Writer, node: Node, t: Node, x: str, fn) -> str:
    """node, an expression of the vector t entry by entry (constants, sums, products, functions
    of the table and the user's f itself: a ``derivative=`` and its derivatives), as code at the
    array x (any shape)."""
    memo: dict = {}

    def go(n):
        if n in memo:
            return memo[n]
        if n is t:
            out = x
        elif isinstance(n, Const):
            out = w.emit(f"0.0 * ({x}) + {float(n.value)!r}")
        elif isinstance(n, Delta) and n.order == 1:
            out = w.emit(f"0.0 * ({x}) + 1.0")
        elif isinstance(n, Sum):
            out = w.emit(" + ".join(f"{float(c)!r} * {go(term)}" for c, term in n.terms) if n.terms
                         else f"0.0 * ({x})")
        elif isinstance(n, Contract) and all(lab in ((), n.out) for lab in n.labels):
            out = w.emit(" * ".join(f"({go(op)})" for op in n.operands))
        elif isinstance(n, Elementwise) and (n.fn.builtin or n.fn == fn):
            out = w.emit(_elementwise(w, n, go(n.arg)))
        else:
            raise traced_unsupported(n, f"codegen: {fn.name}′ is not generated", "has no code",
                                     f"powers, {fn.name} itself", where="in its derivative=")
        memo[n] = out
        return out

    return go(node)


def _user_scale_code(w: _Writer, c: list, lam: str) -> str:
    """evaluate's ``_user_scale`` as code: ρ at each λ from the coefficients c = [c₂ … c_N]
    there — the largest (|cⱼ|/|c_K|)^(1/(K − j)), c_K the last not 0, at most max(|λ|, 1)."""
    mag = w.emit(f"np.abs({lam})")
    cap = w.emit(f"np.where({mag} > 1.0, {mag}, 1.0)")
    rho, found = w.emit(f"0.0 * {lam}"), w.emit(f"{mag} < 0.0")
    for K in range(len(c) - 1, 0, -1):
        last = w.emit(f"np.abs({c[K]})")
        use = w.emit(f"~{found} & ({last} > 0.0) & ({last} * 0.0 == 0.0)")  # not 0, finite
        safe = w.emit(f"np.where({use}, {last}, 1.0)")
        est = None
        for j in range(K):
            r = w.emit(f"(np.abs({c[j]}) / {safe}) ** {1.0 / (K - j)!r}")
            est = r if est is None else w.emit(f"np.where({r} > {est}, {r}, {est})")
        rho = w.emit(f"np.where({use}, {est}, {rho})")
        found = w.emit(f"{found} | {use}")
    return w.emit(f"np.where({found} & ({rho} < {cap}), {rho}, {cap})")


def _user_divided_code(w: _Writer, n: DivDiff, lam: str, a: str, b: str) -> str:
    """evaluate's ``_user_divided`` as code: F = f[λᵢ, λⱼ] of a user's md.function, the
    quotient, and near the diagonal the Taylor series about the midpoint from the odd
    derivatives of its list."""
    fn = n.fn
    known = min(DivDiff3.user_orders(fn), TAYLOR_ORDER)
    if fn.deriv is not None:  # a derivative= expression: f′ at least (evaluate's _user_derivatives)
        known = max(1, known)
    K = known if known % 2 else known - 1
    gap = w.emit(f"{a} - {b}")
    if K >= 3:
        c = [w.emit(code) for code in _taylor_coefficients_code(w, fn, lam)]
        rho = _user_scale_code(w, c, lam)
        pair = w.emit(f"np.where({rho}[:, None] < {rho}[None, :], {rho}[:, None], {rho}[None, :])")
        close = w.emit(f"(np.abs({gap}) <= {_user_radius(K + 2)!r} * {pair}) | ({gap} == 0)")
    else:
        close = w.emit(f"np.abs({gap}) <= {CLOSE!r} * np.maximum(np.abs({a}), np.abs({b}))")
    at = w.emit(f"np.where({close}, ({a} + {b}) / 2, {a} + 0.0 * {b})")
    half = w.emit(f"np.where({close}, {gap} / 2, 0.0)")
    h2 = w.emit(f"{half} * {half}")
    series, power = w.emit(_user_derivative_code(w, fn, 1, at)), None
    for k in range(3, K + 1, 2):
        power = h2 if power is None else w.emit(f"{power} * {h2}")
        term = f"{_user_derivative_code(w, fn, k, at)} * {power} * {1 / math.factorial(k)!r}"
        series = w.emit(f"{series} + {term}")
    values = w.emit(_elementwise(w, Elementwise(fn, n.arg), lam))
    return (f"np.where({close}, {series}, ({values}[:, None] - {values}[None, :]) / "
            f"np.where({close}, 1.0, {gap}))")


def _taylor_coefficients_code(w: _Writer, fn, lam: str) -> list:
    """evaluate's ``_taylor_coefficients`` as code: [f⁽ⁿ⁾(λ)/n! for n = 2 … TAYLOR_ORDER]."""
    name = fn.name if fn.builtin else None
    orders = range(2, TAYLOR_ORDER + 1)
    if name in KINKS:
        return []  # relu(S) itself: as a traced callable, by its pieces
    if name is None and _trace(fn) is None and DivDiff3.has_series(fn):  # a user's md.function
        return [f"{_user_derivative_code(w, fn, n, lam)} * {1 / math.factorial(n)!r}"
                for n in range(2, min(DivDiff3.user_orders(fn), TAYLOR_ORDER) + 1)]
    if name is None and DivDiff3.has_series(fn):
        return []  # a traced callable: the chain rule (_traced_divided_code), no series of its own
    if name in ("exp", "expm1"):
        e = w.emit(f"np.exp({lam})")
        return [f"{e} * {1 / math.factorial(n)!r}" for n in orders]
    if name in ("tanh", "sigmoid", "softplus", "tan", "log1p", "arctan"):
        return _more_coefficients_code(w, name, lam)
    if name in ("sin", "cos", "sinh", "cosh"):
        first, second = {"sin": ("sin", "cos"), "cos": ("cos", "sin"),
                         "sinh": ("sinh", "cosh"), "cosh": ("cosh", "sinh")}[name]
        f0, f1 = w.emit(f"np.{first}({lam})"), w.emit(f"np.{second}({lam})")
        signs = {"sin": (1, 1, -1, -1), "cos": (1, -1, -1, 1)}.get(name, (1, 1, 1, 1))
        return [f"{f0 if n % 2 == 0 else f1} * {signs[n % 4] / math.factorial(n)!r}" for n in orders]
    if name == "log":  # in units of λ (evaluate's _in_units): constants
        return [f"{(-1.0) ** (n - 1) / n!r} + 0.0 * {lam}" for n in orders]
    if name in ("sqrt", "pow"):
        p = 0.5 if name == "sqrt" else float(fn.param)
        if not _in_units(fn):  # p = 0 … 8: (p choose n) x^(p−n) up to n = p (right at x = 0;
            # no terms past it, whose hₙ₋₂(u, v) may overflow), 0 for p < 2
            return [(f"{math.prod((p - k) / (k + 1) for k in range(n))!r} * {lam} ** {int(p) - n}"
                     if n < p else f"{1.0 if n == p else 0.0!r} + 0.0 * {lam}")
                    for n in range(2, max(int(p), 2) + 1)]
        return [f"{math.prod((p - k) / (k + 1) for k in range(n))!r} + 0.0 * {lam}" for n in orders]
    raise NotSupportedError(f"codegen: the second divided differences of {fn} are not generated "
                            f"(functions: {', '.join(DivDiff3.SERIES)}, and Python functions built "
                            f"from them); evaluate() computes them")


def _divided_differences3(w: _Writer, n: DivDiff3, lam: str, diagonal: bool = False, pairs=None) -> str:
    """T_ijk = f[λᵢ, λⱼ, λₖ] as evaluate computes it (``_divided_differences3``): the quotient
    of first divided differences over the two points farthest apart, and the Taylor series
    about λᵢ where the three lie within TAYLOR_CLOSE of f's scale; ``diagonal``: only
    T_iji = f[λᵢ, λⱼ, λᵢ], a matrix; ``pairs`` (index arrays P and C): T_PₘjCₘ, a matrix
    (``DivDiff3Apply``'s close pairs). A traced callable's by the chain rule of divided
    differences, and softplus's at the points themselves (``_three_points_code``)."""
    coefficients = _taylor_coefficients_code(w, n.fn, lam)  # refuses what has no series first
    if w.checks and not diagonal and not pairs and _kinked(n.fn):  # f″ jumps at a kink: refused
        lam = _kinks_refused(w, n.fn, lam, order=2)
    if diagonal:
        x, y = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
        z, pad, corner = x, "[:, None]", ("{0}[0]", "{0}[1]", "{0}[0]")
    elif pairs:
        P, C = pairs
        x, y, z = w.emit(f"{lam}[{P}][:, None]"), w.emit(f"{lam}[None, :]"), w.emit(f"{lam}[{C}][:, None]")
        pad, corner = f"[{P}][:, None]", (f"{P}[{{0}}[0]]", "{0}[1]", f"{C}[{{0}}[0]]")
    else:
        x, y, z = (w.emit(f"{lam}[{i}]") for i in (":, None, None", "None, :, None", "None, None, :"))
        pad, corner = "[:, None, None]", ("{0}[0]", "{0}[1]", "{0}[2]")
    user = not n.fn.builtin and _trace(n.fn) is None  # a user's md.function: its series' own reach
    if (not n.fn.builtin or n.fn.name in KINKS) and not user:  # relu(S) itself too: by its pieces
        return _traced_divided_code(w, n.fn, (x, y, z))[-1]
    if n.fn.name == "softplus":
        return _three_points_code(w, n.fn, x, y, z)
    F = w.emit(_divided_differences(w, DivDiff(n.fn, n.arg), lam))  # written once
    u, v = w.emit(f"{y} - {x}"), w.emit(f"{z} - {x}")
    au, av, aw = w.emit(f"np.abs({u})"), w.emit(f"np.abs({v})"), w.emit(f"np.abs({u} - {v})")
    spread = w.emit(f"np.maximum(np.maximum({au}, {av}), {aw})")
    xz = w.emit(f"{av} >= np.maximum({au}, {aw})")  # the pair farthest apart
    yz = w.emit(f"~{xz} & ({aw} >= {au})")
    Fij, Fik, Fjk = f"{F}[:, :, None]", f"{F}[:, None, :]", f"{F}[None, :, :]"
    if diagonal:
        Fij, Fik, Fjk = F, w.emit(f"{F}.diagonal()[:, None]"), f"{F}.T"
    elif pairs:  # F symmetric: F[j, Cₘ] = F[Cₘ, j]
        Fij, Fik, Fjk = f"{F}[{P}]", w.emit(f"{F}[{P}, {C}][:, None]"), f"{F}[{C}]"
    num = w.emit(f"np.where({xz}, {Fij} - {Fjk}, np.where({yz}, {Fij} - {Fik}, {Fik} - {Fjk}))")
    den = w.emit(f"np.where({xz}, {x} - {z}, np.where({yz}, {y} - {z}, {x} - {y}))")
    c = [w.emit(code) for code in coefficients]
    if user:
        reach = _user_radius(len(c) + 1)
        close = w.emit(f"({spread} <= {reach!r} * {_user_scale_code(w, c, lam)}{pad}) | ({spread} == 0)")
    else:
        close = _close_code(w, n.fn, spread, x)
    if close is not None and not w.functions.get("__expm", "").startswith("jax."):
        # NumPy and PyTorch: the series only where the three are close (a few of n³ entries,
        # λᵢ = λⱼ = λₖ at least), written into the quotient; JAX (under jit: static shapes)
        # computes it everywhere, in one fused pass
        out = w.emit(f"{num} / np.where({close}, 1.0, {den})", pure=False)
        where = w.emit(f"np.where({close})", pure=False)
        i, j, k = (w.emit(m.format(where), pure=False) for m in corner)
        lam_i = w.emit(f"{lam}[{i}]", pure=False)
        u1, v1 = w.emit(f"{lam}[{j}] - {lam_i}", pure=False), w.emit(f"{lam}[{k}] - {lam_i}", pure=False)
        unit = w.emit(_unit_code(n.fn, lam_i), pure=False)
        total = _taylor_series_code(w, n.fn, [w.emit(f"{x_}[{i}]", pure=False) for x_ in c], u1, v1, unit,
                                    pure=False)
        w.lines.append(SCATTER.format(op="", full=out, index=where, values=total))
        return out
    uu = w.emit(f"np.where({close}, {u}, 0.0)") if close else u  # no overflow where unused
    vv = w.emit(f"np.where({close}, {v}, 0.0)") if close else v
    total = _taylor_series_code(w, n.fn, [f"{x_}{pad}" for x_ in c], uu, vv, w.emit(_unit_code(n.fn, x)),
                                pure=True)
    if close is None:
        return total
    return f"np.where({close}, {total}, {num} / np.where({close}, 1.0, {den}))"


def _unit_code(fn, x: str) -> str:
    """evaluate's ``_taylor_unit`` as code: 1 + x for log1p, √(1 + x²) for arctan (as hypot:
    finite past |x| = 1e154), else x."""
    return {"log1p": f"(1.0 + {x})", "arctan": f"np.hypot(1.0 + 0.0 * {x}, {x})"}.get(fn.name, x)


def _close_code(w: _Writer, fn, spread: str, x: str):
    """Where three points with this spread about x take f's Taylor series (evaluate's
    ``_three_points``); None for a polynomial (everywhere)."""
    scale = _taylor_scale(fn)
    if scale == "polynomial":  # a finite series: exact everywhere
        return None
    if scale == "one":
        return w.emit(f"{spread} <= {TAYLOR_CLOSE!r}")
    if scale == "pole":  # min(1, the distance to tan's nearest pole)
        d = w.emit(f"np.abs({x} - (np.round({x} / {math.pi!r} - 0.5) + 0.5) * {math.pi!r})")
        size = w.emit(f"np.where({d} < 1.0, {d}, 1.0)")
    else:
        size = w.emit(f"np.abs({_unit_code(fn, x)})")
    return w.emit(f"({spread} <= {TAYLOR_CLOSE!r} * {size}) | ({spread} == 0)")


def _three_points_code(w: _Writer, fn, x: str, y: str, z: str) -> str:
    """evaluate's ``_three_points`` as code at any points x, y, z (broadcast together): the
    quotient of the pairs' ``_exact_divided_code`` over the pair farthest apart, the series
    about x where the three are close (computed everywhere, chosen by np.where); softplus
    at −x, −y, −z where x + y + z > 0 (its F ≈ 1 would cancel there)."""
    if fn.name == "softplus":
        flip = w.emit(f"{x} + {y} + {z} > 0")
        x, y, z = (w.emit(f"np.where({flip}, -{p}, {p})") for p in (x, y, z))
    Fij, Fik, Fjk = (w.emit(_exact_divided_code(w, fn, p, q)) for p, q in ((x, y), (x, z), (y, z)))
    u, v = w.emit(f"{y} - {x}"), w.emit(f"{z} - {x}")
    au, av, aw = w.emit(f"np.abs({u})"), w.emit(f"np.abs({v})"), w.emit(f"np.abs({u} - {v})")
    spread = w.emit(f"np.maximum(np.maximum({au}, {av}), {aw})")
    xz = w.emit(f"{av} >= np.maximum({au}, {aw})")
    yz = w.emit(f"~{xz} & ({aw} >= {au})")
    num = w.emit(f"np.where({xz}, {Fij} - {Fjk}, np.where({yz}, {Fij} - {Fik}, {Fik} - {Fjk}))")
    den = w.emit(f"np.where({xz}, {x} - {z}, np.where({yz}, {y} - {z}, {x} - {y}))")
    close = _close_code(w, fn, spread, x)
    c = [w.emit(code) for code in _taylor_coefficients_code(w, fn, x)]
    uu = w.emit(f"np.where({close}, {u}, 0.0)") if close else u
    vv = w.emit(f"np.where({close}, {v}, 0.0)") if close else v
    total = _taylor_series_code(w, fn, c, uu, vv, w.emit(_unit_code(fn, x)), pure=True)
    if close is None:
        return total
    return w.emit(f"np.where({close}, {total}, {num} / np.where({close}, 1.0, {den}))")


def _traced_divided_code(w: _Writer, fn, points: tuple, kinks: list | None = None) -> tuple:
    """evaluate's ``_traced_divided`` as code: a traced callable's values and divided
    differences at two points — (f(x), f(y), f[x, y]) — or three — (f(x), f(y), f(z), f[x, y],
    f[y, z], f[x, y, z]) — by the chain rule of divided differences on its expression (its
    justification there), entry by entry: the same lines in every backend."""
    node, t = _trace(fn)
    three = len(points) == 3
    width = 6 if three else 3
    zero = w.emit(f"0.0 * ({' + '.join(points)})")
    memo: dict = {}

    def constant(c):
        value = w.emit(f"{zero} + {float(c)!r}")
        return (value,) * len(points) + (zero,) * (width - len(points))

    def go(n):
        if n in memo:
            return memo[n]
        if n is t:
            one = w.emit(f"{zero} + 1.0")
            out = tuple(w.emit(f"{zero} + {p}") for p in points) + ((one, one, zero) if three else (one,))
        elif isinstance(n, Const):
            out = constant(n.value)
        elif isinstance(n, Delta) and n.order == 1:
            out = constant(1.0)
        elif isinstance(n, Sum):
            parts = [(c, go(term)) for c, term in n.terms]
            out = tuple(w.emit(" + ".join(f"{float(c)!r} * {part[m]}" for c, part in parts))
                        for m in range(width))
        elif isinstance(n, Contract) and all(lab in ((), n.out) for lab in n.labels):
            out = None
            for op in n.operands:
                G = go(op)
                out = G if out is None else _product_code(w, out, G, three)
        elif isinstance(n, Elementwise) and n.fn.builtin and n.fn.name in KINKS:
            G = go(n.arg)  # (kinks: each one's argument at the first point)
            if kinks is not None:
                kinks.append(G[0])
            out = _kink_code(w, n, G, three)
        elif isinstance(n, Elementwise) and n.fn.builtin and n.fn.name in DivDiff3.SERIES:
            G = go(n.arg)
            f = tuple(w.emit(_elementwise(w, n, v)) for v in G[:len(points)])
            if not three:
                out = (*f, w.emit(f"{G[2]} * {_exact_divided_code(w, n.fn, G[0], G[1])}"))
            else:
                a, b, c, g12, g23, g13 = G
                F12, F23, F13 = (w.emit(_exact_divided_code(w, n.fn, p, q))
                                 for p, q in ((a, b), (b, c), (a, c)))
                T = _three_points_code(w, n.fn, a, b, c)
                out = (*f, w.emit(f"{g12} * {F12}"), w.emit(f"{g23} * {F23}"),
                       w.emit(f"{g13} * {F13} + {g12} * {g23} * {T}"))
        else:
            raise traced_unsupported(n, f"codegen: the divided differences of {fn.name} are not generated",
                                     "has no exact divided differences", "powers")
        memo[n] = out
        return out

    return go(node)


KINK_PIECES = {  # relu, |·|, step and sign by the sign c of their argument: the piece's (slope, offset)
    "relu": ("(({0}) > 0) + 0.0 * ({0})", None), "abs": ("{0}", None),
    "step": (None, "(({0}) > 0) + 0.0 * ({0})"), "sign": (None, "{0}")}


def _kink_code(w: _Writer, n: Elementwise, G: tuple, three: bool) -> tuple:
    """evaluate's ``_kink_compose`` as code: h(G) for a kink h at two or three points —
    h[a, b] the slope of the piece where a, b share a side of 0, the quotient across; h[a, b, c]
    0 on one side, Δ(q)/((p − q)(r − q)) where p, r share a side and q lies on another
    (Δ(q) = h(q) − the piece of p and r at q), Lagrange's form where the three lie below, at
    and above 0."""
    k = 3 if three else 2
    x = G[:k]
    s = [w.emit(f"np.sign({p})") for p in x]
    f = tuple(w.emit(_elementwise(w, n, p)) for p in x)

    def pair(i, j):
        same = w.emit(f"{s[i]} == {s[j]}")
        return (f"np.where({same}, {SLOPES[n.fn.name].format(x[i])}, "
                f"({f[i]} - {f[j]}) / np.where({same}, 1.0, {x[i]} - {x[j]}))")
    if not three:
        return (*f, w.emit(f"{G[2]} * {pair(0, 1)}"))
    a, b, c = x
    ab, bc, ac = (w.emit(f"{s[i]} == {s[j]}") for i, j in ((0, 1), (1, 2), (0, 2)))
    p = w.emit(f"np.where({ab}, {a}, np.where({bc}, {b}, {a}))")
    r = w.emit(f"np.where({ab}, {b}, {c})")
    q = w.emit(f"np.where({ab}, {c}, np.where({bc}, {a}, {b}))")
    cp = w.emit(f"np.sign({p})")
    apart = w.emit(f"~({ab} | {bc} | {ac})")  # below, at and above 0
    alone = w.emit(f"(np.sign({q}) != {cp}) & ~{apart}")
    slope, offset = KINK_PIECES[n.fn.name]
    hq = w.emit(_elementwise(w, n, q))
    delta = w.emit(f"{hq} - ({slope.format(cp)}) * {q}" if slope else f"{hq} - ({offset.format(cp)})")
    one = w.emit(f"np.where({alone}, {delta} / np.where({alone}, ({p} - {q}) * ({r} - {q}), 1.0), 0.0 * {q})")
    terms = " + ".join(f"{f[m]} / np.where({apart}, ({x[m]} - {x[(m + 1) % 3]}) * "
                       f"({x[m]} - {x[(m + 2) % 3]}), 1.0)" for m in range(3))
    corner = w.emit(f"np.where({apart}, {terms}, {one})")
    g12, g23, g13 = G[3:]
    return (*f, w.emit(f"{g12} * {pair(0, 1)}"), w.emit(f"{g23} * {pair(1, 2)}"),
            w.emit(f"{g13} * {pair(0, 2)} + {g12} * {g23} * {corner}"))


def _product_code(w: _Writer, G: tuple, H: tuple, three: bool) -> tuple:
    """The product of two triangular matrices of values and divided differences (Leibniz's
    rule), each entry as GH or HG, whichever cancels less (evaluate's ``_less_cancelled``)."""
    def less_cancelled(first, second):
        sizes = [w.emit(" + ".join(f"np.abs({t})" for t in terms)) for terms in (first, second)]
        return w.emit(f"np.where({sizes[0]} <= {sizes[1]}, {' + '.join(first)}, {' + '.join(second)})")
    if not three:
        return (w.emit(f"{G[0]} * {H[0]}"), w.emit(f"{G[1]} * {H[1]}"),
                less_cancelled([f"{G[0]} * {H[2]}", f"{G[2]} * {H[1]}"],
                               [f"{H[0]} * {G[2]}", f"{H[2]} * {G[1]}"]))
    a, b, c, g12, g23, g13 = G
    p, q, r, h12, h23, h13 = H
    return (w.emit(f"{a} * {p}"), w.emit(f"{b} * {q}"), w.emit(f"{c} * {r}"),
            less_cancelled([f"{a} * {h12}", f"{g12} * {q}"], [f"{p} * {g12}", f"{h12} * {b}"]),
            less_cancelled([f"{b} * {h23}", f"{g23} * {r}"], [f"{q} * {g23}", f"{h23} * {c}"]),
            less_cancelled([f"{a} * {h13}", f"{g12} * {h23}", f"{g13} * {r}"],
                           [f"{p} * {g13}", f"{h12} * {g23}", f"{h13} * {c}"]))


def _more_divided_code(w: _Writer, name: str, a: str, b: str, m, h) -> str:
    """f[a, b] as code for tanh, σ, softplus, log1p, arctan and tan (evaluate's ``_exact_divided``)."""
    if name in ("tanh", "sigmoid"):  # tanh[a, b] scaled by e^(−|a|−|b|) (evaluate's _tanh_divided)
        if name == "sigmoid":
            a, b = w.emit(f"{a} / 2"), w.emit(f"{b} / 2")
        s, d = w.emit(f"np.abs({a}) + np.abs({b})"), w.emit(f"{a} - {b}")
        near = w.emit(f"np.abs({d}) <= 1.0")
        dn = w.emit(f"np.where({near}, {d}, 0.0)")
        lo = w.emit(f"2 * (np.where({a} < 0, {a}, 0.0) - np.where({b} > 0, {b}, 0.0))")  # d − s, exactly
        hi = w.emit(f"2 * (np.where({b} < 0, {b}, 0.0) - np.where({a} > 0, {a}, 0.0))")  # −d − s
        num = w.emit(f"np.where({near}, {_c_code(w, 'sinh', dn)} * np.exp(-{s}), (np.exp({lo}) - "
                     f"np.exp({hi})) / (2 * np.where({near}, 1.0, {d})))")
        out = f"{num} * 4.0 / ((1.0 + np.exp(-2 * np.abs({a}))) * (1.0 + np.exp(-2 * np.abs({b}))))"
        return out if name == "tanh" else f"{w.emit(out)} / 4"
    if name == "log1p":
        one = w.emit(f"1.0 + {m}")
        z = w.emit(f"{h} / {one}")
        far = w.emit(f"np.abs({z}) > 0.5")
        quotient = f"(np.log1p({a}) - np.log1p({b})) / np.where({far}, {a} - {b}, 1.0)"
        return f"np.where({far}, {quotient}, {_c_code(w, 'artanh', f'np.where({far}, 0.0, {z})')} / {one})"
    if name == "tan":
        return f"{_c_code(w, 'sin', f'2 * {h}')} / (np.cos({a}) * np.cos({b}))"
    if name == "arctan":
        p = w.emit(f"1.0 + {a} * {b}")
        ok = w.emit(f"{p} > 0")
        safe = w.emit(f"np.where({ok}, {p}, 1.0)")
        r = w.emit(f"({a} - {b}) / {safe}")
        quotient = f"(np.arctan({a}) - np.arctan({b})) / np.where({ok}, 1.0, {a} - {b})"
        return f"np.where({ok}, {_ratio_code(w, 'arctan', r)} / {safe}, {quotient})"
    # softplus (evaluate's _softplus_divided)
    d = w.emit(f"{a} - {b}")
    near = w.emit(f"np.abs({d}) <= 2.0")
    dn = w.emit(f"np.where({near}, {d}, 0.0)")
    sb = w.emit(w.functions["sigmoid"].format(b))
    half = w.emit(f"{dn} / 2")
    close = (f"{_ratio_code(w, 'log1p', f'{sb} * np.expm1({dn})')} * {sb} * np.exp({half}) * "
             f"{_c_code(w, 'sinh', half)}")
    dd = w.emit(f"np.where({near}, 1.0, {d})")
    sp = w.functions["softplus"]
    far = (f"np.where({a} + {b} >= 0, 1.0 - ({sp.format(f'-{b}')} - {sp.format(f'-{a}')}) / {dd}, "
           f"({sp.format(a)} - {sp.format(b)}) / {dd})")
    return f"np.where({near}, {close}, {far})"


def _ratio_code(w: _Writer, g: str, x: str) -> str:
    """g(x)/x with its limit 1 at 0, g = log1p or arctan (evaluate's ``_ratio``)."""
    x = w.emit(x)
    zero = w.emit(f"{x} == 0")
    safe = w.emit(f"np.where({zero}, 1.0, {x})")
    return f"np.where({zero}, 1.0, np.{g}({safe}) / {safe})"


def _more_coefficients_code(w: _Writer, name: str, lam: str) -> list:
    """evaluate's ``_taylor_coefficients`` as code for tanh, σ, softplus, tan, log1p and arctan."""
    orders = range(2, TAYLOR_ORDER + 1)
    if name == "log1p":  # in units of 1 + λ: constants
        return [f"{(-1.0) ** (n - 1) / n!r} + 0.0 * {lam}" for n in orders]
    if name == "arctan":  # (−1)ⁿ⁻¹ sin(nφ)/n in units of √(1 + λ²); sin(nπ/2 − nψ) where |λ| < 1
        small = w.emit(f"np.abs({lam}) < 1.0")
        psi = w.emit(f"np.arctan({lam})")
        phi = w.emit(f"np.arctan(1.0 / np.where({small}, 1.0, {lam})) + "
                     f"np.where({lam} < 0, {math.pi!r} + 0.0 * {lam}, 0.0 * {lam})")  # float64 in torch
        turn = {0: "-np.sin({})", 1: "np.cos({})", 2: "np.sin({})", 3: "-np.cos({})"}
        return [f"np.where({small}, {turn[n % 4].format(f'{n} * {psi}')}, np.sin({n} * {phi})) * "
                f"{(-1.0) ** (n - 1) / n!r}" for n in orders]

    def horner(poly, t, scale):
        code = repr(float(poly[-1]) / scale)
        for c in poly[-2::-1]:
            code = f"({code}) * {t} + {float(c) / scale!r}"
        return code

    if name == "tan":
        t = w.emit(f"np.tan({lam})")
        polys = _derivative_polynomials(TAYLOR_ORDER, 1.0)
        return [horner(polys[n], t, math.factorial(n)) for n in orders]
    y = lam if name == "tanh" else w.emit(f"{lam} / 2")  # tanh⁽ᵏ⁾ = sech² Rₖ(tanh)
    t, e = w.emit(f"np.tanh({y})"), w.emit(f"np.exp(-2 * np.abs({y}))")
    s2 = w.emit(f"4.0 * {e} / ((1.0 + {e}) * (1.0 + {e}))")
    polys = _sech2_polynomials(TAYLOR_ORDER)
    k = (lambda n: n - 1) if name == "softplus" else (lambda n: n)
    div = (lambda n: 1.0) if name == "tanh" else (lambda n: 2.0 ** (k(n) + 1))
    return [f"{s2} * ({horner(polys[k(n)], t, div(n) * math.factorial(n))})" for n in orders]


def _divided_differences3_apply(w: _Writer, n: DivDiff3Apply, args: dict) -> str:
    """M_pc = Σ_q f[λ_p, λ_q, λ_c] X_pq Y_qc as evaluate computes it
    (``_divided_differences3_apply``): G ⊙ ((F ⊙ X)Y − X(F ⊙ Y)) on the pairs (p, c) apart,
    and on the close pairs T's rows T_p:c — in NumPy and PyTorch gathered (a row per close
    pair, p = c among them); in JAX, with static shapes, the diagonal's rows, and the rows of
    the pairs (p, p ± d) for each offset d that holds a close pair (``_by_offsets``: under jit a
    lax.scan over d with a lax.cond in each step): O(n²) memory, exact at every gap."""
    lam, X, Y = (args[c] for c in n.children)
    node = DivDiff3(n.fn, n.arg)
    _taylor_coefficients_code(w, n.fn, lam)  # refuses what has no series
    if w.checks and _kinked(n.fn):  # a traced callable with a kink: refused where f″ jumps
        lam = _kinks_refused(w, n.fn, lam, order=2)
    F = w.emit(_divided_differences(w, DivDiff(n.fn, n.arg), lam))
    a, b = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
    gap = w.emit(f"{a} - {b}")
    larger = w.emit(f"np.maximum(np.abs({a}), np.abs({b}))")
    if _taylor_scale(n.fn) != "relative":  # f's scale is 1 (or f a polynomial): at least 1
        larger = w.emit(f"np.where({larger} > 1.0, {larger}, 1.0)")
    if _grows(n.fn):  # F_pq − F_qc cancels to ε|λ_q|/gap: near within 10⁻³ of the largest |λ|
        larger = w.emit(f"np.maximum({larger}, np.abs({lam}).max())")
    near = w.emit(f"(np.abs({gap}) <= {PAIR_CLOSE!r} * {larger}) | ({gap} == 0)")
    G = w.emit(f"np.where({near}, 0.0, 1.0 / np.where({near}, 1.0, {gap}))")
    far = w.emit(f"{G} * (({F} * {X}) @ {Y} - {X} @ ({F} * {Y}))")
    if n.fn.builtin and n.fn.name == "softplus":  # F − 1 = −softplus[−λ_p, −λ_q] where λ_p + λ_c > 0
        na, nb = w.emit(f"-{a}"), w.emit(f"-{b}")  # (evaluate's: F ≈ 1 would cancel there)
        F1 = w.emit(f"-({_more_divided_code(w, 'softplus', na, nb, None, None)})")
        far = w.emit(f"np.where({a} + {b} > 0, {G} * (({F1} * {X}) @ {Y} - {X} @ ({F1} * {Y})), {far})")
    if not w.functions.get("__expm", "").startswith("jax."):
        # NumPy and PyTorch: T's rows T_p:c on the close pairs (p, c) alone — p = c among them
        out = w.emit(f"{far} + 0.0", pure=False)
        where = w.emit(f"np.where({near})", "the close pairs (p, c): T's rows there", pure=False)
        P, C = (w.emit(f"{where}[{m}]", pure=False) for m in range(2))
        rows = _divided_differences3(w, node, lam, pairs=(P, C))
        values = w.emit(f"({rows} * {X}[{P}] * {Y}.T[{C}]).sum(1)", pure=False)
        w.lines.append(SCATTER.format(op="", full=out, index=where, values=values))
        return out
    # JAX (under jit: static shapes): T's rows T_p:p on the diagonal; then, for each offset
    # d = |p − c| that holds a close pair (the eigenvalues are sorted: close pairs lie near the
    # diagonal), the rows of the 2n pairs (p, p + d) and (p + d, p) (indices clipped, and
    # nothing added off the matrix or where the pair is not close): n² work per such offset
    D = w.emit(_divided_differences3(w, node, lam, diagonal=True))
    plain = w.emit(f"{far} + np.diag(({D} * {X} * {Y}.T).sum(1))")
    for code in _taylor_coefficients_code(w, n.fn, lam):  # written once, outside the steps
        w.emit(code)
    r = w.emit(f"np.arange({lam}.shape[0])")
    name, add, m, d = w.fresh(), *(f"_{w.fresh()}" for _ in range(3))
    written, code_of = dict(w.written), dict(w.code_of)
    w.lines.append(f"    def {add}({m}, {d}):  # the close pairs (p, p ± d): T's rows there")
    start = len(w.lines)
    c = w.emit(f"np.minimum({r} + {d}, {r}.shape[0] - 1)", pure=False)
    P, C = (w.emit(f"np.concatenate([{u}, {v}])", pure=False) for u, v in ((r, c), (c, r)))
    ok = w.emit(f"np.concatenate([{r} + {d} < {r}.shape[0]] * 2) & {near}[{P}, {C}]", pure=False)
    rows = _divided_differences3(w, node, lam, pairs=(P, C))
    values = w.emit(f"np.where({ok}, ({rows} * {X}[{P}] * {Y}.T[{C}]).sum(1), 0.0)", pure=False)
    w.lines.append(SCATTER.format(op="_add", full=m, index=f"{P}, {C}", values=values))
    w.lines.append(f"    return {m}")
    w.lines[start:] = ["    " + line for line in w.lines[start:]]
    w.written, w.code_of = written, code_of
    w.lines.append(f"    {name} = _by_offsets({add}, {plain}, {near})")
    return name


def _taylor_series_code(w: _Writer, fn, c: list, u: str, v: str, x: str, pure: bool) -> str:
    """Σₙ cₙ hₙ₋₂(u, v) about x (hₘ(u, v) = u hₘ₋₁ + vᵐ), in units of x for log and the powers;
    ``pure``: lines that other code may share (not the arrays gathered for one scatter)."""
    units = _in_units(fn)
    if units:
        u, v = w.emit(f"{u} / {x}", pure=pure), w.emit(f"{v} / {x}", pure=pure)
    total, h, power = w.emit(f"{c[0]} + 0.0 * ({u} + {v})", pure=pure), None, None
    for coefficient in c[1:]:
        power = v if power is None else w.emit(f"{power} * {v}", pure=pure)
        h = w.emit(f"{u} + {v}", pure=pure) if h is None else w.emit(f"{u} * {h} + {power}", pure=pure)
        total = w.emit(f"{total} + {coefficient} * {h}", pure=pure)
    if units:  # x: the unit (_unit_code)
        p = -2.0 if fn.name in ("log", "log1p", "arctan") else \
            (0.5 if fn.name == "sqrt" else float(fn.param)) - 2.0
        r = w.emit(f"1.0 / {x}", pure=pure)
        total = w.emit(f"{total} * {r} * {r}" if p == -2.0 else f"{total} * {x} ** {p!r}", pure=pure)
    return total


def _general_function(w: _Writer, n: Funm | Frechet, args: dict) -> str:
    """f(X) and L_f(X, E) of a general matrix: the backend's own function where its table has
    one (SciPy's expm, logm and sqrtm for NumPy; expm in JAX and PyTorch); the others by
    funm's helper ``_matfun``, from expm, square roots, series and solves, never diagonalising
    X (so a defective X is right), L_f by the block [[X, sE], [0, X]] — in JAX and PyTorch log
    by inverse scaling and squaring and sqrt by Denman–Beavers, scaled (``_mf_log``,
    ``_mf_sqrt``): NaN outside the principal branch, which checked code refuses."""
    fn, frechet = (n.args[0], True) if isinstance(n, Frechet) else (n.fn, False)
    x = args[n.children[0]]
    key = f"__{GENERAL_FUNCTIONS[fn]}{'_frechet' if frechet else ''}"
    if fn not in ("exp", "log", "sqrt") or key not in w.functions:  # funm's helper _matfun
        return f"_matfun({fn!r}, {', '.join(args[c] for c in n.children)})"
    template, operands = w.functions[key], [args[c] for c in n.children]
    # a direction E rescaled before a block construction (L is linear in E): {small} makes it
    # 10⁻³‖X‖ (logm's block), {unit} the size of X, at least 1 (expm's block).  E is divided by
    # its norm first and the result multiplied by it after: a scale ‖X‖/‖E‖ overflows float32
    # where ‖E‖ is tiny or 0 (1/1e-300 is inf there, and inf · 0 a NaN where L is 0)
    scales = {name: w.emit(factor) for name, factor in
              (("small", f"1e-3 * np.linalg.norm({x})"), ("unit", f"max(np.linalg.norm({x}), 1.0)"))
              if f"{{{name}}}" in template}
    if not scales:
        return template.format(*operands)
    size = w.emit(f"np.linalg.norm({operands[-1]})")
    size = w.emit(f"{size} if {size} > 0 else 1.0")  # E = 0: L(X, 0) = 0
    operands[-1] = w.emit(f"{operands[-1]} / {size}")
    return f"{w.emit(template.format(*operands, **scales))} * {size}"


ENTIRE = ("exp", "expm1", "sinh", "cosh", "sin", "cos")  # not finite only where they overflow


def _finite_code(w: _Writer, n: Funm | Frechet, code: str) -> str:
    """f(X) or L_f(X, E) of a general matrix through ``_finite_value`` (md.codegen's checks):
    where it is not finite, NumPy and PyTorch raise FloatingPointError (md.compile's functions
    evaluate's EvaluationError, ``_singular``), JAX raises outside jit and gives NaN under it."""
    fn = n.args[0] if isinstance(n, Frechet) else n.fn
    what = f"L_{fn}(X, E)" if isinstance(n, Frechet) else f"{GENERAL_FUNCTIONS[fn]}(X)"
    why = (f"{what} overflowed: X's eigenvalues are too large for the method (through expm)" if fn in ENTIRE
           else f"{what} is not finite here: X has an eigenvalue at a pole, outside the principal "
                f"branch, or too large for the method")
    return f"_finite_value({w.emit(code)}, {why!r})"


# --------------------------------------------------------------------------- repeated eigenvalues

TIE_AGREE = 1e-6  # |L(T)| above this, relative to the limit's scale: no limit at the tie


class _Tied(Unary):
    """What generated code needs of eigenvalues λ at a tie (``_tie_limits``): "split", the
    direction p = (1, 2, …, n) that moves each eigenvalue apart from those it coincides with;
    "tie", T_ij = 1/(p_j − p_i) where λᵢ and λⱼ are tied (i ≠ j), else 0; "regular", EigGap's
    1/(λⱼ − λᵢ) where they are not, else 0; "near", EigGap's where they are.  Eigenvalues are
    tied where they are within √ε of the larger (or 64ε of the largest |λ|, a repeated 0):
    there a difference over the gap loses ε/gap, and the limit is off by about the gap.
    "split_singular" (λ = σ², the singular vectors' gaps): p/(2σ) where σ is tied and not 0,
    else 0, the move of σ that moves σ² by p.  "tie_sym": |T|; "merged": λ with each run of
    tied values set to its first, exactly (the tie itself, where ``_Limit`` asks whether the
    terms that diverge as 1/gap cancel)."""

    fields = ("part", "arg")

    @staticmethod
    def _shape(part, arg):
        return arg.shape if part in ("split", "split_singular", "merged") else arg.shape * 2


class _AllChildren(Node):
    """A node of generated code's own whose arguments are all nodes, its children."""

    @property
    def children(self):
        return self.args

    def with_children(self, children):
        return type(self)(*children)


class _Limit(_AllChildren):
    """``regular`` + ``slope`` (the limit) where ``lin``, the part of a second derivative
    through eigenvectors that is linear in the tie gaps, vanishes (the derivative has a limit
    at the tie); where it does not, the formula (``regular`` + ``near``) for eigenvalues that
    are distinct as evaluate counts them (``GAP_COINCIDE``), else NaN: no limit, no value.
    ``anti`` and ``sym`` are ``lin`` at the tie itself (the tied values made one) for T and
    |T|: the terms cancel there, by structure (equal weights on the tie), where
    |anti| ≤ 64ε|sym| (evaluate's ``_tie_terms_cancel``); where they do not, the limit would
    drop a term of about |anti|/gap, and the formula is kept.  ``slope`` may be left out (0)."""

    @staticmethod
    def _shape(regular, lin, lam, near, anti, sym, *slope):
        return regular.shape


class _TieBranch(_AllChildren):
    """A second derivative through eigenvectors as generated code computes it: ``limit`` (a
    ``_Limit``: the formula with its tie terms) where two eigenvalues of λ are tied (within
    √ε), else ``plain``, the formula as written, which costs 2–5× less (``_tie_branch``)."""

    @staticmethod
    def _shape(limit, plain, lam):
        return plain.shape


class _Scale(Unary):
    """A power of 2, c, that brings a matrix X's largest entry into [1/2, 1) (1 where that is
    0, not finite, or outside the dtype's normal range), or its inverse (``inverse``): the
    scale of X's singular values for ``_scaled_singular_code``."""

    fields = ("inverse", "arg")

    @staticmethod
    def _shape(inverse, arg):
        return ()


def _scaled_singular_code(roots: list) -> list:
    """Second derivatives through singular vectors computed with σ scaled by c (``_Scale``),
    scaled back by its degree in σ (evaluate's ``_rescaled``): they multiply up to three
    singular values before dividing by σⱼ² − σᵢ², which underflows (overflows) where σ is
    below 10⁻¹⁰⁰ (above 10¹⁰⁰); every scaling is exact, so the values are otherwise the same."""
    out = []
    for r in roots:
        found = _singular_gap_matrices(r)
        if not found:
            out.append(r)
            continue
        matrices = {m: (lambda x, d, m=m: Contract((_Scale(d < 0, m), x), ((), tuple(range(x.ndim))),
                                                   tuple(range(x.ndim))))
                    for m in found}
        out.append(_rescaled(r, matrices, _tie_degree))
    return out


def _tie_degree(n: Node, degrees: list):
    """The degree in σ of a tie node (``_rescaled``'s rule) from its children's, or None."""
    if isinstance(n, _Tied):
        d = degrees[0]
        return {"split": 0, "tie": 0, "tie_sym": 0, "regular": -d, "near": -d, "merged": d,
                "split_singular": -d // 2 if d % 2 == 0 else None}[n.part]
    if isinstance(n, _Limit):
        regular, lin, lam, near, anti, sym, *slope = degrees
        ok = near == regular and lin == regular + lam and anti == sym and all(x == regular for x in slope)
        return regular if ok else None
    if isinstance(n, _TieBranch):  # each arm scaled back within it (the branch stays a result);
        return 0, (False, False, True)  # its ties, relative, read from σ² scaled
    return None


def _gap_degree(root: Node, gaps: set):
    """How many factors of the EigGap nodes ``gaps`` each term of root holds at most, or None
    where one sits inside a node that is not a product or a sum (not a polynomial in them)."""
    degree: dict = {}
    for n in _children_first(root):
        if n in gaps:
            degree[n] = 1
            continue
        kids = [degree[c] for c in n.children]
        if any(k is None for k in kids):
            degree[n] = None
        elif isinstance(n, Contract):
            degree[n] = sum(kids)
        elif isinstance(n, Sum):
            degree[n] = max(kids, default=0)
        else:
            degree[n] = None if any(kids) else 0
    return degree[root]


def _substituted(root: Node, swap: dict) -> Node:
    memo: dict = {}
    for n in _children_first(root):
        memo[n] = swap[n] if n in swap else n.with_children([memo[c] for c in n.children])
    return memo[root]


def _hadamard(a: Node, b: Node) -> Node:
    labels = tuple(range(a.ndim))
    return Contract((a, b), (labels, labels), labels)


def _tangent(root: Node, seeds: dict):
    """The derivative of root along the directions ``seeds`` gives its leaves (node → tangent;
    None: held fixed), forward, by the product, sum and chain rules: None where it is 0, and
    NotSupportedError at a node with no rule here."""
    memo: dict = dict(seeds)
    for n in _children_first(root):
        if n in memo:
            continue
        kids = [memo.get(c) for c in n.children]
        if not any(k is not None for k in kids):
            memo[n] = None
        elif isinstance(n, Contract):
            memo[n] = Sum(tuple((1.0, Contract(n.operands[:k] + (d,) + n.operands[k + 1:], n.labels, n.out))
                                for k, d in enumerate(kids) if d is not None), n.shape)
        elif isinstance(n, Sum):
            memo[n] = Sum(tuple((c, d) for (c, _), d in zip(n.terms, kids) if d is not None), n.shape)
        elif isinstance(n, Elementwise):
            slope = n.fn.derivative(n.arg)
            if slope.shape != n.shape:
                raise NotSupportedError("a slope of another shape")
            memo[n] = _hadamard(slope, kids[0])
        elif isinstance(n, DivDiff):  # dF_ij = A_ij dλᵢ + A_ji dλⱼ (A: f[λᵢ, λᵢ, λⱼ])
            second = _tangent(n.fn.derivative(n.arg), {n.arg: Delta(n.arg.shape[0], 1)})
            A = DivDiff2(n.fn, n.arg, simplify(second) if second is not None else Sum((), n.arg.shape))
            memo[n] = Sum(((1.0, Contract((A, kids[0]), ((0, 1), (0,)), (0, 1))),
                           (1.0, Contract((A, kids[0]), ((1, 0), (1,)), (0, 1)))), n.shape)
        elif isinstance(n, MatFn):  # Daleckii–Krein: U (F ⊙ (Uᵀ dS U)) Uᵀ
            U, F = Eigh("vectors", n.arg), DivDiff(n.fn, Eigh("values", n.arg))
            i, a, b, j, k, m = range(6)
            memo[n] = Contract((U, F, U, kids[0], U, U),
                               ((i, a), (a, b), (j, a), (j, k), (k, b), (m, b)), (i, m))
        else:
            raise NotSupportedError(f"no forward rule for {type(n).__name__} here")
    return memo[root]


def _tie_limits(roots: list) -> list:
    """Second derivatives through eigenvectors, written so that they keep their limit where
    eigenvalues coincide.  Such a result R is affine in G = EigGap(λ) (1/(λⱼ − λᵢ)); split G
    into its regular part and the tie pairs', which along S(h) = U diag(λ + hp) Uᵀ (U fixed: the
    path evaluate's split limit takes) are T/h.  Then R(h) = R[G_reg] + L(T)/h + O(h), where
    L(T) = R[T] − R[0] is the part linear in the gaps; the limit exists where L(T) = 0 at the
    tie, and is R[G_reg] + d/dh L(T), the last a forward derivative that moves λ by p and S by
    U diag(p) Uᵀ and holds U and T fixed.  Results where that does not apply (a gap of a matrix
    that is not a multiple of a variable, several decomposed matrices, a gap squared) are kept
    as they are.

    Through singular vectors the gaps are G = EigGap(σ²) (1/(σⱼ² − σᵢ²)), and the path is
    X(h) = U diag(√(σ² + hp)) Vᵀ (U, V fixed), along which σ² moves by hp: the same limit,
    the forward derivative moving σ by p/(2σ) where σ is tied (and not 0) and X by
    U diag(p/(2σ)) Vᵀ.  First the terms through singular vectors that cancel at a tie are
    combined, with exact divided differences of σ (evaluate's ``_singular_divided``)."""
    out = []
    for r in map(_singular_divided, roots):
        gaps = {n for n in walk(r)
                if isinstance(n, EigGap) and (isinstance(n.arg, Eigh) or _svd_squares(n.arg)
                                              and isinstance(n.arg.arg, Svd))}
        ms = {g.arg.arg if isinstance(g.arg, Eigh) else g.arg.arg.arg for g in gaps}
        lams = {g.arg for g in gaps}
        if len(ms) != 1 or len(lams) != 1 or _gap_degree(r, gaps) != 1:
            out.append(r)
            continue
        (m,), (lam,) = ms, lams
        scaled = _scaled_variable(m)
        if scaled is None:
            out.append(r)
            continue
        v, c = scaled
        p = _Tied("split", lam)
        regular = simplify(_substituted(r, {g: _Tied("regular", lam) for g in gaps}))
        zero = simplify(_substituted(r, {g: Sum((), g.shape) for g in gaps}))
        lin, near = (simplify(Sum(((1.0, simplify(_substituted(r, {g: _Tied(part, lam) for g in gaps}))),
                                   (-1.0, zero)), r.shape)) for part in ("tie", "near"))
        fixed = {t: None for t in walk(lin) if isinstance(t, _Tied)}
        source = lam if isinstance(lam, Eigh) else lam.arg  # λ, or σ for σ² (their ties: σ's)
        sym = _substituted(lin, {t: _Tied("tie_sym", t.arg) for t in fixed if t.part == "tie"})
        anti, sym = (simplify(_substituted(x, {source: _Tied("merged", source)})) for x in (lin, sym))
        if isinstance(lam, Eigh):
            U = Eigh("vectors", m)
            moved = Contract((U, p, U), ((0, 2), (2,), (1, 2)), (0, 1))
            seeds = {lam: p, U: None}
        else:  # σ moves by p/(2σ) where tied; u₁, v₁ and σ₁ (‖X‖₂) with U, V and σ
            sv = lam.arg
            U, Vr, moves = Svd("left", sv.rank, m), Svd("right", sv.rank, m), _Tied("split_singular", lam)
            moved = Contract((U, moves, Vr), ((0, 2), (2,), (1, 2)), (0, 1))
            seeds = {sv: moves, **{n: None for n in walk(lin) if isinstance(n, Svd) and n.arg is m
                                   and n.part in ("left", "right", "top_left", "top_right")},
                     **{n: Contract((moves, Basis(sv.rank, 0)), ((0,), (0,)), ()) for n in walk(lin)
                        if isinstance(n, Svd) and n.arg is m and n.part == "top"}}
        seeds = {**seeds, v: Sum(((1.0 / c, moved),), v.shape), **fixed}
        try:
            slope = _tangent(lin, seeds)
        except NotSupportedError:
            out.append(r)
            continue
        limit = _Limit(regular, lin, lam, near, anti, sym, *([simplify(slope)] if slope is not None else []))
        out.append(_TieBranch(limit, r, lam))  # r itself away from ties: the tie terms cost 2–5×
    return out


def _tied_code(w: _Writer, lam: str, tol: str) -> str:
    """Where λᵢ and λⱼ (i ≠ j) are within ``tol`` of the larger, or 64ε of the largest |λ|, as
    a boolean matrix: tied (tol √ε, ``_Tied``) or coinciding (evaluate's ``_coinciding``)."""
    a, b = w.emit(f"{lam}[:, None]"), w.emit(f"{lam}[None, :]")
    off = w.emit(f"np.eye({lam}.shape[0]) == 0")
    eps = w.emit(f"np.finfo({lam}.dtype).eps")
    return w.emit(f"(np.abs({a} - {b}) <= np.maximum({tol} * np.maximum(np.abs({a}), np.abs({b})), "
                  f"64 * {eps} * np.abs({lam}).max())) & {off}")


def _tie_values(w: _Writer, node: Node, code: str) -> str:
    """The values whose ties count for gaps of ``node``: σ where node is σ² (the singular
    vectors' gaps; σ₁/σᵢ of 10⁸ puts σᵢ² below 64ε of σ₁², yet σᵢ is resolved), else node's."""
    return w.emit(f"np.sqrt({code})") if _svd_squares(node) else code


def _tie_code(w: _Writer, n: Node, args: dict) -> str:
    if isinstance(n, _Limit):
        regular, lin, lam, near, anti, sym, *slope = (args[c] for c in n.children)
        value = w.emit(f"{regular} + {slope[0]}") if slope else regular
        eps = w.emit(f"np.finfo({lam}.dtype).eps")
        bad = w.emit(f"(np.abs({lin}).max() > max({TIE_AGREE!r}, 64 * {eps}) * np.abs({value}).max() * "
                     f"np.abs({lam}).max()) | (np.abs({anti}).max() > {TIE_CANCEL} * {eps} * "
                     f"np.abs({sym}).max())", "the 1/gap terms do not cancel at the tie: no limit")
        values = _tie_values(w, n.children[2], lam)
        coincide = w.emit(f"{_tied_code(w, values, repr(GAP_COINCIDE))}.any()", NO_LIMIT_COMMENT)
        return f"np.where({bad}, np.where({coincide}, np.nan, {regular} + {near}), {value})"
    lam = args[n.arg]
    if n.part == "split":
        return f"(0.0 * {lam} + 1.0).cumsum(0)"
    values = _tie_values(w, n.arg, lam)
    tied = _tied_code(w, values, f"{w.emit(f'np.finfo({lam}.dtype).eps')} ** 0.5")
    if n.part == "merged":  # each run of tied values (sorted) as its first
        first = w.emit(f"np.argmax(np.where({tied} | (np.eye({lam}.shape[0]) != 0), 1.0, 0.0), 1)")
        return f"{lam}[{first}]"
    if n.part == "split_singular":  # lam = σ²: σ's move p/(2σ) where tied and not 0, else 0
        p = w.emit(_tie_code(w, _Tied("split", n.arg), args))
        moving = w.emit(f"{tied}.any(1) & ({lam} > 0)")
        return f"np.where({moving}, {p} / (2 * np.sqrt(np.where({moving}, {lam}, 1.0))), 0.0)"
    if n.part in ("tie", "tie_sym"):
        p = w.emit(_tie_code(w, _Tied("split", n.arg), args))
        tie = f"np.where({tied}, 1.0 / np.where({tied}, {p}[None, :] - {p}[:, None], 1.0), 0.0)"
        return tie if n.part == "tie" else f"np.abs({tie})"
    if n.part == "near":  # used only where no pair coincides: those are 0, not inf
        tied = w.emit(f"{tied} & ~{_tied_code(w, values, repr(GAP_COINCIDE))}")
    else:
        tied = w.emit(f"(np.eye({lam}.shape[0]) == 0) & ~{tied}")
    return f"np.where({tied}, 1.0 / np.where({tied}, {lam}[None, :] - {lam}[:, None], 1.0), 0.0)"


NO_LIMIT_COMMENT = "no limit at a repeated eigenvalue: NaN"
TIE_BRANCH_COMMENT = "two eigenvalues within √ε: the tie terms"


def _tie_branch_order(order: list, roots: list) -> tuple:
    """``order`` (children before parents) in four parts, for ``_tie_branch``: the nodes computed
    before the branch (what the results need apart from the branches, and what both arms of
    one need), the nodes only the arms with tie terms need, those only the plain arms need,
    and the nodes that read a branch (none where the branches are the results)."""
    branches = [n for n in order if isinstance(n, _TieBranch)]
    if not branches:
        return order, [], [], []

    def below(starts, stop):
        found, stack = set(), list(starts)
        while stack:
            n = stack.pop()
            if n not in found and n not in stop:
                found.add(n)
                stack.extend((n.children[2],) if isinstance(n, _TieBranch) else n.children)
        return found
    main = below(roots, set())
    tied = below([b.children[0] for b in branches], main)
    plain = below([b.children[1] for b in branches], main)
    late: set = set()
    for n in order:
        if isinstance(n, _TieBranch) or any(c in late for c in n.children):
            late.add(n)
    before = [n for n in order if (n in main or (n in tied and n in plain)) and n not in late]
    return (before, [n for n in order if n in tied and n not in plain], [n for n in order if n in plain
            and n not in tied], [n for n in order if n in late and not isinstance(n, _TieBranch)])


def _tie_branch(w: _Writer, branches: list, arms: tuple, args: dict, lower, backend: str) -> None:
    """The ``_TieBranch`` nodes as one branch on "two eigenvalues of a decomposed matrix are
    tied" (within √ε, ``_tied_code``): one arm computes the nodes only their limits need (the
    tie terms), the other those only the plain formulas need, so that away from ties the code
    costs what it costs without the tie terms.  NumPy and PyTorch get an if block; JAX two
    functions of which ``_tie_cond`` runs one (``lax.cond`` under jit), so that the code stays
    traceable and differentiable."""
    tied = []
    for node in dict.fromkeys(b.children[2] for b in branches):
        lam = _tie_values(w, node, args[node])
        eps = w.emit(f"np.finfo({lam}.dtype).eps")
        tied.append(w.emit(f"{_tied_code(w, lam, f'{eps} ** 0.5')}.any()", TIE_BRANCH_COMMENT))
    condition = tied[0] if len(tied) == 1 else w.emit(" | ".join(tied))
    names = [w.fresh() for _ in branches]
    written, code_of = dict(w.written), dict(w.code_of)  # what an arm writes stays in it
    for arm, (nodes, header) in enumerate(zip(arms, ("    def _tie_terms():" if backend == "jax" else
                                                     f"    if {condition}:", "    def _plain_terms():"
                                                     if backend == "jax" else "    else:"))):
        w.lines.append(header)
        start = len(w.lines)
        for n in nodes:
            lower(n)
        results = [args[b.children[arm]] for b in branches]
        if backend == "jax":
            w.lines.append(f"    return {', '.join(results)}")
        else:
            w.lines += [f"    {name} = {result}" for name, result in zip(names, results)]
        w.lines[start:] = ["    " + line for line in w.lines[start:]]
        w.written, w.code_of = dict(written), dict(code_of)
    if backend == "jax":
        w.lines.append(f"    {', '.join(names)}{',' if len(names) > 1 else ''} = "
                       f"_tie_cond({condition}, _tie_terms, _plain_terms)")
    for b, name in zip(branches, names):
        args[b] = name


def _refusing_no_limit(fn, source: str, backend: str):
    """``fn``, raising evaluate's error where its code found that a second derivative through
    eigenvectors has no limit at a repeated eigenvalue (there the code returns NaN: JAX's
    functions do, as under jit no value can raise)."""
    if fn is None or backend == "jax" or NO_LIMIT_COMMENT not in source:
        return fn

    @functools.wraps(fn)
    def refusing(*args, **kwargs):
        out = fn(*args, **kwargs)
        for r in out if isinstance(out, tuple) else (out,):
            nan = r != r
            if bool(nan.any() if hasattr(nan, "any") else nan):
                raise EvaluationError(
                    "not differentiable here: a decomposed matrix has a repeated eigenvalue, and "
                    "this second derivative through its eigenvectors has no limit there (it grows "
                    "as they split apart), as the Hessian of one eigenvalue at a tie does; the "
                    "compiled function returns no value silently")
        return out
    return refusing


# ------------------------------------------------------------------ checks: a choice of vectors at a tie


class _Decompositions:
    """eigh and the thin SVD as compiled functions with ``checks`` compute them: each notes
    whether its values have a tie (neighbours within CLUSTER of the larger, or 64ε of the
    largest; for the SVD also σ = 0).  With ``snap`` each tied group of values is made one
    (its mean; σ = 0 exactly), so that a function of them is constant on it, not different
    by rounding; with ``turn`` also the vectors are turned within each tie (U ← UR,
    R = (I − K)⁻¹(I + K) orthogonal for K skew and zero outside the tied pairs; for σ = 0 the
    left and right null vectors apart, the left ones flipped), as evaluate's
    ``_refuse_choices`` draws them.  Array operations only, so that JAX can trace them."""

    def __init__(self, backend: str, snap: bool = False, turn: bool = False, lift: float = 0.0):
        self.backend, self.snap, self.turn, self.ties, self.seen = backend, snap or turn, turn, [], []
        self.lift = lift  # > 0: each σ = 0 (within the tolerance) set to lift · tolerance · σ₁
        self.zeros = False  # whether an SVD met a σ = 0 (outside JAX's jit: a bool)
        # the backend's module, which the generated code has imported
        self.xp = np if backend == "numpy" else sys.modules["jax.numpy" if backend == "jax" else "torch"]

    def _eps(self, v) -> float:
        return float(self.xp.finfo(v.dtype).eps)

    def _close(self, a, b, v, rel):
        xp = self.xp
        floor = 64 * self._eps(v) * xp.abs(v).max()
        return xp.abs(a - b) <= xp.maximum(rel * xp.maximum(xp.abs(a), xp.abs(b)), floor)

    def _neighbours_tied(self, v, rel):
        """Whether two neighbours of the sorted values v are tied; outside JAX, a first test
        on the smallest gap alone (three operations) settles the common case, no tie."""
        if self.backend != "jax" and v.shape[0] > 1:
            gap = float(self.xp.abs(v[1:] - v[:-1]).min())
            if gap > rel * max(abs(float(v[0])), abs(float(v[-1]))):  # every tolerance is below this
                return False
        return self._close(v[1:], v[:-1], v, rel).any()

    def _tolerance(self, v) -> float:
        return max(CLUSTER, 256 * self._eps(v))

    def _like(self, a, v):
        if self.backend == "torch":
            return self.xp.as_tensor(a, dtype=v.dtype, device=v.device)
        return self.xp.asarray(a, dtype=v.dtype)

    def _rotation(self, mask, v, seed: int, flip=None):
        """Cayley's orthogonal matrix of a fixed random skew K kept where ``mask``, times a
        sign flip of the columns where ``flip``."""
        xp, n = self.xp, v.shape[0]
        k = np.random.default_rng(seed).standard_normal((n, n))
        k = self._like((k - k.T) / 2, v)
        k = xp.where(mask, k, xp.zeros_like(k))
        eye = self._like(np.eye(n), v)
        r = xp.linalg.solve(eye - k, eye + k)
        if flip is not None:
            r = r * xp.where(flip, -xp.ones_like(v), xp.ones_like(v))[None, :]
        return r

    def _pairs(self, v, rel):
        off = self._like(np.eye(v.shape[0]) == 0, v) > 0
        return self._close(v[:, None], v[None, :], v, rel) & off

    def eigh(self, x, label: str):
        lam, u = self.xp.linalg.eigh(x)
        rel = self._tolerance(lam)
        self.ties.append(self._neighbours_tied(lam, rel))
        self.seen.append((label, "eigenvalue", lam))
        if self.snap:
            pairs = self._pairs(lam, rel)
            lam = self._snapped(lam, pairs)
            if self.turn:
                u = u @ self._rotation(pairs, lam, 0)
        return lam, u

    def svd(self, x, label: str):
        u, s, vt = self.xp.linalg.svd(x, full_matrices=False)
        if s.shape[0] == 0:
            return u, s, vt
        rel = self._tolerance(s)
        zero = s <= rel * s[0]
        self.ties.append(self._neighbours_tied(s, rel) | zero.any())
        self.zeros = self.zeros | zero.any()
        self.seen.append((label, "singular value", s))
        if self.lift:
            s = self.xp.where(zero, self.lift * rel * s[0] * self.xp.ones_like(s), s)
        if self.snap:
            both = zero[:, None] & zero[None, :]
            tied = self._pairs(s, rel) & ~zero[:, None] & ~zero[None, :]
            s = self.xp.where(zero, self.xp.zeros_like(s), self._snapped(s, tied))
            if self.turn:
                u = u @ self._rotation(tied | both, s, 0, flip=zero)
                vt = self._rotation(tied, s, 0).T @ vt
                vt = self._rotation(both, s, 1).T @ vt
        return u, s, vt

    def _snapped(self, v, pairs):
        """Each value the mean of those it is tied with (and itself)."""
        xp = self.xp
        w = xp.where(pairs, xp.ones_like(pairs, dtype=v.dtype), xp.zeros_like(pairs, dtype=v.dtype)) + \
            self._like(np.eye(v.shape[0]), v)
        return (w @ v) / w.sum(1)

    def tied(self):
        out = False
        for t in self.ties:
            out = out | t
        return out

    def refusal(self, finite: bool = True) -> EvaluationError:
        """evaluate's error (``_Spectra.refusal``) for the ties this call met."""
        parts, kinds = [], set()
        for label, what, values in self.seen:
            v, eps = np.sort(_as_numpy(values).astype(float)), float(self.xp.finfo(values.dtype).eps)
            rel, scale = max(CLUSTER, 256 * eps), float(np.abs(v).max(initial=0.0))
            zero = v <= rel * scale if what != "eigenvalue" else np.zeros(v.shape, bool)
            said = [f"{'λ' if what == 'eigenvalue' else 'σ'} = {_shown(v[~zero], g):.6g} ({len(g)} times)"
                    for g in _groups(v[~zero], rel, 64 * eps * scale)]
            if zero.any():
                said.append(f"σ = 0 ({int(zero.sum())} time{'s' if zero.sum() > 1 else ''}: "
                            f"it is rank-deficient)")
            if said:
                kinds.add(what)
                parts.append(f"{label} has a repeated {'or zero ' if what != 'eigenvalue' else ''}{what}, "
                             f"{', '.join(said)}")
        vectors = " or ".join((["eigenvectors"] if "eigenvalue" in kinds else []) +
                              (["singular vectors"] if "singular value" in kinds else [])) or "vectors"
        where = "; ".join(dict.fromkeys(parts)) or "a decomposed matrix has a repeated value"
        if not finite:
            return EvaluationError(f"{where}: the {vectors} are not differentiable here, and this result, "
                                   f"which differentiates them, is not finite; the compiled function "
                                   f"returns no value silently")
        examples = (["the gradient of one eigenvalue at a tie (λ_max at a repeated top eigenvalue)"]
                    if "eigenvalue" in kinds else []) + \
            (["the spectral norm's at a repeated σ₁", "the nuclear norm's at a rank-deficient matrix"]
             if "singular value" in kinds else [])
        return EvaluationError(
            f"not differentiable here: {where}, and this result depends on which {vectors} are "
            f"chosen for it, as {' or '.join(examples) or 'a subgradient'} does; the compiled function "
            f"returns no subgradient silently (md.compile(..., checks=False) returns one)")


def _groups(v, rel: float, floor: float) -> list:
    """Index groups of sorted values whose neighbours are within ``rel`` of the larger or
    ``floor`` (evaluate's ``_clusters``, at a tolerance of the dtype's)."""
    groups, current = [], [0] if v.size else []
    for i in range(1, v.size):
        if abs(v[i] - v[i - 1]) <= max(rel * max(abs(v[i]), abs(v[i - 1])), floor):
            current.append(i)
        else:
            groups, current = groups + [current], [i]
    return [g for g in groups + [current] if len(g) > 1]


def _checking_choices(variant, fn, backend: str, compared: list, single: bool, limits: bool = False):
    """``fn`` (the generated function) as ``variant`` (its source with each decomposition
    through ``_Decompositions``) computes it, refusing a result that depends on the choice of
    eigen- or singular vectors where values tie, as evaluate does: where a call met a tie, the
    outputs ``compared`` (those that do not divide by eigenvalue gaps, which take their limit
    or are NaN) are computed again with the vectors turned within the ties, and one that moves
    (relative CHOICE_TOLERANCE, or 4096ε in float32) is refused; an output that is not finite
    at a tie is refused too.  NumPy and PyTorch raise EvaluationError; JAX raises outside jit
    and gives NaN under it (no value can raise there), and runs the second computation only at
    a tie (``lax.cond``).  With ``limits`` (the code has tie terms) an output that does not
    divide by gaps is left to ``_refusing_no_limit`` where it is NaN; without, at a zero σ such
    an output is computed again with that σ at two tiny values (``lift``: the tolerance times
    σ₁, and half that) and refused where the two differ or are not finite: it has no limit at
    σ = 0 (the nuclear norm's Hessian at a rank-deficient X: 1/σ terms, 10¹⁵ at σ = 10⁻¹⁶),
    where Σσᵢ³'s, whose terms vanish there, stays."""

    @functools.wraps(fn)
    def checking(*args, **kwargs):
        noted = _Decompositions(backend)
        out = variant(*args, _spectra=noted, **kwargs)
        tied = noted.tied()
        if backend == "jax":
            return _jax_choices(variant, args, kwargs, out, tied, noted, compared, single, limits) \
                if any(compared) or not limits else out
        if not bool(tied):
            return out
        if not any(compared):  # every result divides by gaps: only its finiteness is checked
            snapped = turned = out
        else:
            snapped, turned = (variant(*args, _spectra=_Decompositions(backend, snap=True, turn=turn),
                                       **kwargs) for turn in (False, True))
        lifted = [out] * 2 if limits or all(compared) or not bool(noted.zeros) else \
            [variant(*args, _spectra=_Decompositions(backend, lift=c), **kwargs)
             for c in (1.0, 0.5)]  # a limit at σ = 0? (read only by results that divide by σ)
        for o, a, b, p, q, c in zip(*((x,) if single else tuple(x) for x in (out, snapped, turned, *lifted)),
                                    compared):
            if (not limits or c) and not _all_finite(o) or c and not (_all_finite(a) and _all_finite(b)):
                raise noted.refusal(finite=False)  # (the tie terms' NaN: _refusing_no_limit's error)
            if not limits and not c and (not (_all_finite(p) and _all_finite(q)) or _moved(p, q)):
                raise noted.refusal()  # (no limit at σ = 0: evaluate's words)
            if c and _moved(a, b):
                raise noted.refusal()
        return out
    return checking


def _as_numpy(a):
    return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)


def _all_finite(a) -> bool:
    return bool(np.all(np.isfinite(_as_numpy(a))))


def _moved(a, b) -> bool:
    a, b = _as_numpy(a), _as_numpy(b)
    eps = float(np.finfo(a.dtype).eps) if a.dtype.kind == "f" else 0.0
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    return float(np.abs(a.astype(float) - b).max(initial=0.0)) > max(CHOICE_TOLERANCE, 4096 * eps) * scale


def _jax_choices(variant, args, kwargs, out, tied, noted, compared, single, limits=False):
    jax, jnp = sys.modules["jax"], sys.modules["jax.numpy"]  # as the generated code imported them
    checked = [c or not limits for c in compared]  # (without tie terms: finite at the tie itself)

    def verdicts():  # per result checked: (moved with the vectors turned, or with a zero σ lifted; finite)
        a, b = (variant(*args, _spectra=_Decompositions("jax", snap=True, turn=turn), **kwargs)
                for turn in (False, True))
        p, q = (variant(*args, _spectra=_Decompositions("jax", lift=c), **kwargs) for c in (1.0, 0.5)) \
            if checked != compared else (a, b)  # (only results that divide by σ without tie terms read them)
        out = []
        for x, y, z, w, c, k in zip(*((r,) if single else tuple(r) for r in (a, b, p, q)), compared, checked):
            if c or k:
                x, y = (x, y) if c else (z, w)
                tol = jnp.maximum(CHOICE_TOLERANCE, 4096 * jnp.finfo(x.dtype).eps)
                finite = jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(y))
                moved = ~(jnp.abs(x - y).max() <= tol * jnp.maximum(jnp.abs(x).max(), jnp.abs(y).max()))
                out.append((moved | ~finite, finite))
        return tuple(out)
    calm = tuple((jnp.asarray(False), jnp.asarray(True)) for k in checked if k)
    if isinstance(tied, jax.core.Tracer):  # under jit: computed only at a tie, and only verdicts
        found = iter(jax.lax.cond(tied, verdicts, lambda: calm))  # come out (no copies of a result)
    else:
        found = iter(verdicts() if bool(tied) else calm)
    kept = []
    for o, k in zip((out,) if single else tuple(out), checked):
        if not k:
            kept.append(o)
            continue
        moved, finite = next(found)
        if isinstance(moved, jax.core.Tracer):
            kept.append(jnp.where(moved, jnp.nan, o))  # under jit: NaN, as the tie terms give
        elif bool(moved):
            raise noted.refusal(finite=bool(finite))
        else:
            kept.append(o)
    return kept[0] if single else tuple(kept)


def _source(f) -> str:
    """f's source text, as inspect.getsource gives it; a class's found by its ``class`` line
    (inspect parses the whole module to find a class: 90 ms of matdiff's import)."""
    if not inspect.isclass(f):
        return inspect.getsource(f)
    lines = linecache.getlines(inspect.getsourcefile(f))
    start = next(i for i, line in enumerate(lines) if line.startswith(f"class {f.__name__}:"))
    return "".join(inspect.getblock(lines[start:]))


# what a checked module (``_with_checks``) defines ahead of its function: these, written out
# (their text read once, at import, as funm's helper is: the file may change under a long run)
CHECKS_RUNTIME = "".join("\n\n\n" + _source(f).rstrip() for f in (
    _shown, _Decompositions, _groups, _checking_choices, _as_numpy, _all_finite, _moved, _jax_choices,
    _refusing_no_limit))


def _checks_runtime(backend: str) -> str:
    """The checks' code as generated code defines it (``CHECKS_RUNTIME`` and their constants):
    the same functions md.compile ran before, for one code printed and run."""
    imports = ["import functools", "import sys"] + (["import numpy as np"] if backend != "numpy" else [])
    lines = ["", ""] + imports + [
        "try:  # matdiff's error where matdiff is installed",
        "    from matdiff.errors import EvaluationError",
        "except ImportError:  # pragma: no cover - the module run on its own",
        "    class EvaluationError(ValueError):",
        "        pass",
        "",
        f"CLUSTER = {CLUSTER!r}  # values this close (relative) are one",
        f"CHOICE_TOLERANCE = {CHOICE_TOLERANCE!r}  # a result that moves this much with the vectors: refused",
        f"NO_LIMIT_COMMENT = {NO_LIMIT_COMMENT!r}"]
    return "\n".join(lines) + CHECKS_RUNTIME


SHOWN = {"split": "tie_split", "tie": "tie_gaps", "regular": "eigenvalue_gaps_apart",
         "near": "eigenvalue_gaps_tied", "split_singular": "tie_split_singular",
         "tie_sym": "tie_gaps_symmetric", "merged": "tie_merged"}
FORMS[_OffDiagonal] = lambda n: f"offdiag({index_form(n.arg, 40)})"
FORMS[_Complementary] = lambda n: f"[{index_form(n.arg, 20)} has a complement]"
FORMS[_Scale] = lambda n: f"{'1 / ' if n.inverse else ''}scale({index_form(n.arg, 40)})"
FORMS[_Tied] = lambda n: f"{SHOWN[n.part]}({index_form(n.arg, 40)})"  # the code's comments
FORMS[_Limit] = lambda n: index_form(Sum(tuple((1.0, t) for t in (n.args[:1] + n.args[6:])), n.shape), 80)
