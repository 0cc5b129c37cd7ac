"""Printing matrix notation as text and LaTeX: one renderer, two tables of symbols, one
table of precedences deciding every parenthesis."""
from __future__ import annotations

import collections
import dataclasses
import functools
import re
from fractions import Fraction
from typing import NamedTuple

from . import dims as D
from . import notation as N
from .functions import (GREEK as GREEK_LETTERS, LETTER_SUBSCRIPTS, PRINTED_FUNCTIONS, SUBSCRIPTS,
                        TABLE as F_TABLE, UNSUBSCRIPT, Function, ScalarFunction)
from .errors import NotSupportedError
from .ir import (Const, Contract, Delta, DivDiff3, DivDiff3Apply, Eigh, Elementwise, Frechet, Node, Phi,
                 Reshape, ScalarFn, Sum, Svd, Var, walk)
from .recognise import recognise
from .recognise import _divdiff_name, _second_frechets, defined_by_trace, definition
from .show import index_form

# precedence: a child binding more loosely than its context is parenthesised
ADD, NEG, HAD, PROD, POSTFIX, ATOM = 1, 2, 3, 4, 5, 6

GREEK = list(GREEK_LETTERS)  # spelled-out Greek names print as their letters: Sigma → Σ, \Sigma
GREEK_TEXT = GREEK_LETTERS
SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")

TEXT = {
    "T": "ᵀ", "inv": "⁻¹", "invT": "⁻ᵀ", "had": " ⊙ ", "kron": " ⊗ ", "div": " ⊘ ",
    "pinv": "⁺", "pinvT": "⁺ᵀ",
    "minus": "−", "plus": " + ", "sub": " − ", "one": "1", "eye": "I", "zero": "0",
    "lparen": "(", "rparen": ")", "sqrt": "√", "nabla": "∇", "prime": "′",
    "functions": {"tr": "tr", "det": "det", "logdet": "log det", "diag": "diag", "sigmoid": "σ",
                  "exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan",
                  "tanh": "tanh", "softplus": "softplus", "relu": "relu", "step": "step",
                  "sign": "sign", "softmax": "softmax", "logsumexp": "logsumexp",
                  "cosh": "cosh", "sinh": "sinh", "log1p": "log1p", "expm1": "expm1",
                  "arctan": "arctan"},
}
LATEX = {
    "latex": True,
    "T": "^\\top", "inv": "^{-1}", "invT": "^{-\\top}", "had": " \\odot ", "kron": " \\otimes ",
    "pinv": "^{+}", "pinvT": "^{+\\top}",
    "div": " \\oslash ", "minus": "-", "plus": " + ", "sub": " - ", "one": "\\mathbf{1}",
    "eye": "I", "zero": "0", "lparen": "\\left(", "rparen": "\\right)", "sqrt": "\\sqrt",
    "nabla": "\\nabla ", "prime": "'",
    "functions": {"tr": "\\operatorname{tr}", "det": "\\det", "logdet": "\\log\\det",
                  "diag": "\\operatorname{diag}", "sigmoid": "\\sigma", "exp": "\\exp",
                  "log": "\\log", "sin": "\\sin", "cos": "\\cos", "tan": "\\tan",
                  "tanh": "\\tanh", "softplus": "\\operatorname{softplus}",
                  "relu": "\\operatorname{relu}", "step": "\\operatorname{step}",
                  "sign": "\\operatorname{sign}", "softmax": "\\operatorname{softmax}",
                  "logsumexp": "\\operatorname{logsumexp}", "cosh": "\\cosh", "sinh": "\\sinh",
                  "log1p": "\\operatorname{log1p}", "expm1": "\\operatorname{expm1}",
                  "arctan": "\\arctan"},
}


_PLAIN_STYLE = dict(TEXT, names={}, display={})  # the style of str(result): text, nothing named

NAMES = {"m": "SUVGHKLMPQR", "c": "suvghpqrz", "r": "suvghpqrz", "s": "αβγκμνρτ"}


def _tex(style) -> bool:
    return "latex" in style


def _spare_name(k: int, taken) -> str:
    """A name past the pools: W8, W9, … (never E8, which 2E8 would read as 2·10⁸)."""
    while f"W{k}" in set(taken):
        k += 1
    return f"W{k}"


def _calls_abstract(m, name: str) -> bool:
    stack, seen = [m], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, N.Call) and isinstance(x.fn, (Function, ScalarFunction)) and \
                not getattr(x.fn, "builtin", False) and x.name == name:
            return True
        stack.extend(N.children(x))
    return False


def render(m: N.M, style: dict, taken=(), display=None) -> str:
    """The text of ``m``; subexpressions used three times or more, or twice in a long
    result, are named once: Xᵀdiag(s ⊙ (1 − s))X  where s = σ(−y ⊙ Xw).  The parts of one
    decomposition are named as textbooks name them: uₙuₙᵀ  where S = UΛUᵀ."""
    style, defined = _defined_functions(_scan(m).traced, style, taken)
    m, clause = _textbook(m, style, taken)
    if clause or defined:  # (taken is read only where a name is chosen: it may be lazy)
        taken = set(taken) | ({"U", "V", "u", "v", "Λ", "Σ"} if clause else set()) | set(defined)
    return _render_named(m, dict(style, names={}, display=display or {}), taken,
                         ([clause] if clause else []) + list(defined.values()))


DEFINED_NAMES = ("f", "g", "h")  # a traced function's name where its own is taken (then f2, f3, …)


class _Scan(NamedTuple):
    """What ``_scan`` reads of a notation tree (see there)."""
    traced: tuple  # (the traced functions in writing order, the abstract functions' names)
    index: bool  # whether the tree holds index notation
    parts: list  # the calls naming a decomposition's parts
    sigma: bool  # whether it may call an abstract function named sigma
    counts: tuple | None  # (N.occurrences(m), a non-leaf written twice); None where unknown


def _scan(m: N.M) -> "_Scan":
    """What text and LaTeX both read of m, in one walk, memoised on the tree (the two
    printers of one result print one tree): (the traced functions in m (``defined_by_trace``:
    of fₘ(S), Δh(λ), Δ²h(λ)[X, Y]) in the order they are written, and the names of the
    abstract functions it calls (σ(X))); whether m holds index notation; the calls naming a
    decomposition's parts (Q(S), eigvalsh(S), U(X), …); whether it may call an abstract
    function named sigma; and ``N.occurrences(m)`` with whether a subtree other than a leaf
    is written twice (None where a leaf carries arguments, which the walk counted too)."""
    cached = m.__dict__.get("_scan")
    if cached is not None:
        return cached
    found, stack, counts, used = [], [m], {}, set()
    index, parts, sigma, shared, carried = False, [], False, False, False
    get, children, leaves = counts.get, N.children, (N.Sym, N.Num, N.Index)
    while stack:
        x = stack.pop()
        key = id(x)
        seen = get(key, 0)
        counts[key] = seen + 1
        kind = type(x)  # (the notation classes have no subclasses)
        if seen:  # (a leaf has no children: written twice, it is no shared subtree)
            if not shared and seen == 1 and kind not in leaves:
                shared = bool(children(x))
            continue
        if kind is N.Sym:
            if x.params:
                if x.role == "divdiff3" and defined_by_trace(x.params[0]) and x.params[0] not in found:
                    found.append(x.params[0])
                carried = carried or any(isinstance(p, N.M) for p in x.params)
                stack.extend(reversed(_inside(x)))
        elif kind is N.T or kind is N.Inv:
            stack.append(x.arg)
        elif kind is N.Prod or kind is N.Had:
            stack.extend(reversed(x.factors))
        elif kind is N.Call:
            fn = x.fn
            if fn is None:
                if x.name in EIGEN_PARTS or x.name in SVD_PARTS:
                    parts.append(x)
            elif defined_by_trace(fn):
                if fn not in found:
                    found.append(fn)
            elif isinstance(fn, (Function, ScalarFunction)):
                used.add(fn.name)
            if x.name == "sigma" and isinstance(fn, (Function, ScalarFunction)) and \
                    not getattr(fn, "builtin", False):
                sigma = True
            stack.append(x.arg)
        elif kind is N.Index:
            index = True
        else:
            stack.extend(reversed(children(x)))
    cached = _Scan((found, used), index, parts, sigma, None if carried else (counts, shared))
    object.__setattr__(m, "_scan", cached)
    return cached


def _defined_functions(traced: tuple, style, taken) -> tuple:
    """(the style with each traced function's printed name, {name: its definition}): its
    Python name where free (cubeₘ(S)), else f, g, h, …; the definitions — f(u) = u³,
    h(u) = u exp(u) + exp(u) — which the where-clause writes, so that the text says what f
    is and the reader reads fₘ(S) back (md.matrix_function of the function it defines).
    Functions traced to the same expression share one name and one definition:
    fₘ(S) + fₘ(X)  where f(u) = u³ for two lambdas u: u**3 (a def's name before a lambda's f)."""
    found, used = traced
    if not found:
        return style, {}
    blocked = set(taken) | set(used) | PRINTED_FUNCTIONS | set(F_TABLE) | set(GREEK_LETTERS) | \
        {"u", "t", "e", "I", "d"}
    same: dict = {}  # the traced expression → the functions traced to it, in order
    for fn in found:
        same.setdefault(fn.deriv.on_entries, []).append(fn)
    names = {}
    for fns in same.values():
        own = [fn.name for fn in fns]  # a def's name (cube) before a lambda's f or diff's h
        pool = sorted(own, key=lambda c: c in DEFINED_NAMES) + list(DEFINED_NAMES) + \
            [f"f{k}" for k in range(2, 1000)]
        name = next(c for c in pool if c.isidentifier() and c.isascii() and c not in blocked)
        names.update(dict.fromkeys(fns, name))
        blocked.add(name)
    style = dict(style, fn_names=names)
    return style, {names[fn]: _definition(names[fn], fn, style, taken) for fn in found}


def _defined_name(fn, style) -> str:
    """The name a traced function prints as (``_defined_functions``), or its own."""
    return style.get("fn_names", {}).get(fn) or str(fn)


def _lambda(fn, functions: dict) -> str:
    """lambda u: u ** 3.0, the Python function of a traced f (Expr.python)."""
    return f"lambda u: {python_code(definition(fn, 'u'), functions)}"


def _definition(name: str, fn, style, taken) -> str:
    """f(u) = u³: a traced function's definition, its expression of one scalar u written as
    any scalar expression is (t, x or z where u is a variable's name)."""
    param = next(c for c in ("u", "t", "x", "z", "w") if c not in set(taken))
    lp, rp = style["lparen"], style["rparen"]
    head = _tex_name(name, style) if _tex(style) else name
    body = _render(definition(fn, param), dict(style, names={}))[0]  # no where of its own
    return f"{head}{lp}{param}{rp} = {body}"


def _render_named(m: N.M, style: dict, taken, lead: list) -> str:
    """m's text with its repeated subtrees named, after the definitions in ``lead``."""
    where = " \\quad\\text{where } " if _tex(style) else "  where "
    # σ is taken by the user's function: sigmoid is spelled out
    if _scan(m).sigma and _calls_abstract(m, "sigma"):
        style["functions"] = dict(style["functions"], sigmoid="\\operatorname{sigmoid}"
                                  if _tex(style) else "sigmoid")
    repeated = _named_subtrees(m)
    if not repeated:
        text = m.__dict__.get("_plain_text")  # the text _named_subtrees wrote, in this style
        if text is None or style != _PLAIN_STYLE:
            text = _render(m, style)[0]
        return text + where + ", ".join(lead) if lead else text
    free = {k: [c for c in v if c not in set(taken)] for k, v in NAMES.items()}
    parts = any(_part_name(r) for r in repeated)
    for r in repeated:
        pool = free[r.kind]
        own = _part_name(r)  # U(X) is U where U is free; beside parts, no name a part prints as
        picks = [c for c in pool if c == own] or [c for c in pool if not (parts and c in PART_LETTERS)]
        name = picks[0] if picks else _spare_name(len(style["names"]), taken)
        if name in pool:
            pool.remove(name)
        for other in free.values():  # columns and rows share letters: each name once
            if name in other:
                other.remove(name)
        style["names"][id(r)] = name
    style["named"] = {r: r for r in repeated}  # by value: the arguments a leaf carries
    style["used"] = set()  # names the text refers to: one written inside x ⊘ y may not be
    main = _render(m, style)[0]
    texts, pending = {}, [r for r in repeated if id(r) in style["used"]]
    while pending:  # a definition is written when the text, or a written definition, uses it
        r = pending.pop()
        own = style["names"].pop(id(r))
        texts[id(r)] = f"{own} = {_render(r, style)[0]}"
        style["names"][id(r)] = own
        queued = {id(x) for x in pending}
        pending.extend(x for x in repeated if id(x) in style["used"] and id(x) not in texts
                       and id(x) not in queued)
    defs = lead + [texts[id(r)] for r in repeated if id(r) in texts]
    if not defs:
        return main
    return main + where + ", ".join(defs)


def _named_subtrees(m) -> list:
    """The subtrees of m that its text names (``_repeated``), memoised on the tree: text
    and LaTeX name the same ones."""
    cached = m.__dict__.get("_named")
    if cached is not None:
        return cached
    repeated = _repeated(m)
    # short results name only triples; a tree of over 120 nodes prints over 60 characters
    # (every node but a juxtaposition writes one at least, and those have two children)
    # (and not a product of a few variables, which reads as itself: the Matrix Cookbook
    # writes (XᵀCX)⁻¹ three times in (126))
    if repeated and _size(m) <= 120 and len(_plain_text(m)) <= 60:
        known = _scan(m).counts
        counts = known[0] if known is not None else N.occurrences(m)
        repeated = [r for r in repeated if counts[id(r)] >= 3 and not _few_variables(r)]
    object.__setattr__(m, "_named", repeated)
    return repeated


def _plain_text(m) -> str:
    """m's text with nothing named (``_PLAIN_STYLE``), kept on the tree: where it names nothing
    after all, ``_render_named`` writes this text."""
    text = _render(m, dict(TEXT, names={}, display={}))[0]
    object.__setattr__(m, "_plain_text", text)
    return text


def _few_variables(r) -> bool:
    """Whether r is a product of at most three variables, each maybe transposed: XᵀCX."""
    return isinstance(r, N.Prod) and r.coef == 1 and len(r.factors) <= 3 and all(
        isinstance(f.arg if isinstance(f, N.T) else f, N.Sym) and
        (f.arg if isinstance(f, N.T) else f).role == "var" for f in r.factors)


PART_LETTERS = {"U", "V", "Q"}  # what a decomposition's part call prints as: U(X), V(X), Q(S)


def _part_name(r) -> str | None:
    """The letter a decomposition's part is known by (U for Q(S) and U(X), V for V(X))."""
    if isinstance(r, N.Call) and r.fn is None and r.name in PART_LETTERS:
        return "U" if r.name == "Q" else r.name
    if isinstance(r, N.Call) and r.fn is None and r.name == "chol":  # S = LLᵀ
        return "L"
    return None


EIGEN_PARTS = {"Q": ("m", "U"), "eigvalsh": ("c", "λ")}  # S = UΛUᵀ, λ = diag(Λ)
SVD_PARTS = {"U": ("m", "U"), "V": ("m", "V"), "svdvals": ("c", "σ"), "u₁": ("c", "u₁"),
             "v₁": ("c", "v₁")}  # X = UΣVᵀ, σ = diag(Σ), u₁ and v₁ the first columns
PART_TEX = {"λ": "\\lambda", "Λ": "\\Lambda", "σ": "\\sigma", "Σ": "\\Sigma", "u₁": "u_{1}",
            "v₁": "v_{1}"}
GREEK_PARTS = {"λ": "\\lambda", "σ": "\\sigma"}


def _textbook(m: N.M, style: dict, taken):
    """m with the parts of its one decomposition named as textbooks do — U and λ (Λ for
    diag(λ)) for S = UΛUᵀ; U, V, σ (Σ), u₁, v₁ for X = UΣVᵀ; a column Ueₖ as uₖ — and the
    clause that defines them; (m, None) where m decomposes no matrix, or two, or the names
    are the user's."""
    scan = _scan(m)
    index, calls = scan.index, scan.parts
    if index or not calls:
        return m, None  # index notation names the parts itself (index_notation)
    eigen = {c.arg for c in calls if c.name in EIGEN_PARTS}
    svd = {c.arg for c in calls if c.name in SVD_PARTS}
    vectors = any(c.name in ("Q", "U", "V", "u₁", "v₁") for c in calls)  # λ alone stays eigvalsh(S)
    if not vectors or len(eigen) + len(svd) != 1 or set(taken) & _part_names(bool(eigen)):
        return m, None
    arg = next(iter(eigen or svd))
    out = m.__dict__.get("_textbook")  # text and LaTeX rename one tree alike
    if out is None:
        out = _parts_renamer(arg, bool(eigen))(m)
        object.__setattr__(m, "_textbook", out)
    if out is m:
        return m, None
    return out, _parts_clause(arg, bool(eigen), style)


def _inside(x: N.M) -> tuple:
    """The notation nodes inside x: its children, and the arguments a leaf carries
    (Δ²f(λ)[X, Y]'s λ, X and Y; L_f(X, E)'s X and E)."""
    if isinstance(x, N.Sym) and x.params:
        return N.children(x) + tuple(p for p in x.params if isinstance(p, N.M))
    return N.children(x)


def _part_names(eigen: bool) -> set:
    """The variable names that keep a decomposition's parts from printing as U, Λ, …"""
    return {"U", "u", "lambda", "Lambda"} if eigen else {"U", "V", "u", "v", "sigma", "Sigma"}


def _part(name, kind):
    return N.Sym(kind, name, "part", symmetric=name in ("Λ", "Σ"))


def _parts_renamer(arg: N.M, eigen: bool):
    """The function that writes the parts of the decomposition of ``arg`` in a tree as
    textbooks name them: Q(S) as U, eigvalsh(S) as λ, diag(eigvalsh(S)) as Λ, Ueₖ as uₖ."""
    parts, diagonal, letter = (EIGEN_PARTS, "Λ", "u") if eigen else (SVD_PARTS, "Σ", "u")
    vector = "eigvalsh" if eigen else "svdvals"

    def go(x):
        if isinstance(x, N.Call) and x.name in parts and x.fn is None and x.arg == arg:
            return _part(parts[x.name][1], parts[x.name][0])
        if isinstance(x, N.Call) and x.name == "diag" and isinstance(x.arg, N.Call) and \
                x.arg.name == vector and x.arg.arg == arg and x.kind == "m":
            return _part(diagonal, "m")
        y = _map_fields(x, go)
        return _columns(y, letter) if isinstance(y, N.Prod) else y

    return go


def _parts_clause(arg: N.M, eigen: bool, style) -> str:
    """S = UΛUᵀ, or X = UΣVᵀ: the clause that defines the parts."""
    U = _part("U", "m")
    body = _render(arg, dict(style, names={}))[0]
    if eigen:
        rhs = [U, _part("Λ", "m"), N.transpose(U)]
    else:
        rhs = [U, _part("Σ", "m"), N.transpose(_part("V", "m"))]
    return f"{body} = {_render(N.prod(1.0, rhs), dict(style, names={}))[0]}"


def _map_fields(x: N.M, go) -> N.M:
    """x with go applied to each notation node among its fields (x itself where none changes)."""
    changes = {}
    for f in dataclasses.fields(x):
        v = getattr(x, f.name)
        new = _map_tree(v, go)
        if new is not v:
            changes[f.name] = new
    return dataclasses.replace(x, **changes) if changes else x


def _map_tree(v, go):
    """v with go applied to each notation node in it (a node, or tuples of them)."""
    if isinstance(v, N.M):
        return go(v)
    if isinstance(v, tuple):
        new = tuple(_map_tree(x, go) for x in v)
        return v if all(a is b for a, b in zip(new, v)) else new
    return v


def _columns(p: N.Prod, letter: str) -> N.Prod:
    """Ueₖ as the column uₖ, and eₖᵀUᵀ as uₖᵀ, in a product's factors."""
    def is_u(f):
        return isinstance(f, N.Sym) and f.role == "part" and f.name == "U"

    def entry(f, g):  # λᵀeₖ or eₖᵀλ: the entry λₖ
        for x, y in ((f, g), (g, f)):
            if isinstance(x, N.T) and isinstance(x.arg, N.Sym) and isinstance(y, N.Sym):
                for v, e in ((x.arg, y), (y, x.arg)):
                    if v.role == "part" and v.name in ("λ", "σ") and e.role == "basis":
                        return N.Sym("s", v.name + e.name, "part")
        return None

    fs, out, i = p.factors, [], 0
    if len(fs) == 2 and p.kind == "s":
        single = entry(*fs)
        if single is not None:
            return single if p.coef == 1 else dataclasses.replace(p, factors=(single,))
    while i < len(fs):
        a, b = fs[i], fs[i + 1] if i + 1 < len(fs) else None
        if is_u(a) and isinstance(b, N.Sym) and b.role == "basis":
            out.append(N.Sym("c", letter + b.name, "part", dims=b.dims))
            i += 2
        elif isinstance(a, N.T) and isinstance(a.arg, N.Sym) and a.arg.role == "basis" and \
                isinstance(b, N.T) and is_u(b.arg):
            out.append(N.transpose(N.Sym("c", letter + a.arg.name, "part", dims=a.arg.dims)))
            i += 2
        else:
            out.append(a)
            i += 1
    return p if len(out) == len(fs) else dataclasses.replace(p, factors=tuple(out))


def _repeated(m) -> list:
    """Non-trivial subtrees printed more than once, outermost first."""
    known = _scan(m).counts
    if known is not None and not known[1]:
        return []  # no subtree but a leaf is written twice
    counts = known[0] if known is not None else N.occurrences(m)
    order, seen, stack = [], set(), collections.deque([m])
    while stack:
        x = stack.popleft()
        if id(x) in seen:
            continue
        seen.add(id(x))
        # S⁻¹ and X⁺ are as short as U; a transpose is never named (Uᵀ, not V where V = Uᵀ):
        # its argument is, where repeated
        if x is not m and counts[id(x)] >= 2 and _size(x) >= 2 and not isinstance(x, N.T) and not (
                _marked_symbol(x)):
            order.append(x)  # and what repeats inside it is named too: a definition may use
        stack.extend(N.children(x))  # a name, so printed text grows linearly with nesting
    return order


def _marked_symbol(x) -> bool:
    """S⁻¹ or X⁺: a symbol and one mark, never given a name of its own."""
    return (isinstance(x, N.Inv) or isinstance(x, N.Call) and x.name == "pinv") and isinstance(x.arg, N.Sym)


def _size(m) -> int:
    cached = m.__dict__.get("_size")  # memoised: shared subtrees are walked once
    if cached is None:
        cached = 1
        for c in N.children(m):
            cached += _size(c)
        object.__setattr__(m, "_size", cached)
    return cached


def _wrap(m, style, prec):
    text, p = _render(m, style)
    return f"{style['lparen']}{text}{style['rparen']}" if p < prec else text


def _number(c: float, style) -> str:
    if float(c).is_integer():
        return str(int(c))
    f = Fraction(c).limit_denominator(1000)
    if float(f) == c:
        return f"\\frac{{{f.numerator}}}{{{f.denominator}}}" if _tex(style) else \
            f"{f.numerator}/{f.denominator}"
    return repr(float(c))


def _name(name: str, style) -> str:
    if len(name) == 1 and not name.isdigit():  # x, A: the common case
        if "latex" not in style:
            return GREEK_TEXT.get(name, name)
        return f"\\{name}" if name in GREEK_LETTERS else name  # (what the lines below make of it)
    base = name.rstrip("0123456789")
    digits = name[len(base):]
    if _tex(style):
        base = f"\\{base}" if base in GREEK_LETTERS else base  # (GREEK's names, looked up by hash)
        return base + (f"_{{{digits}}}" if digits and base else digits)
    return GREEK_TEXT.get(base, base) + digits


def _matpow(m: N.MatPow, style):
    """A³, (Aᵀ)², (XXᵀ)⁻², Σ² (the base bracketed unless a variable, a decomposition's part
    or a where-name)."""
    plain = (isinstance(m.arg, N.Sym) and m.arg.role in ("var", "part")) or \
        style.get("names", {}).get(id(m.arg)) is not None
    base = _wrap(m.arg, style, ATOM) if not plain else _render(m.arg, style)[0]
    if not plain and not base.startswith(style["lparen"]):
        base = f"{style['lparen']}{base}{style['rparen']}"
    return base + (str(m.k).translate(SUPERSCRIPT) if not _tex(style) else f"^{{{m.k}}}"), POSTFIX


def _sym(m: N.Sym, style):
    if m.role == "var":
        shown = style.get("display")  # differentials in derivations: d(XW)
        shown = shown.get(m.name) if shown else None
        return (shown if shown is not None else _name(m.name, style)), ATOM
    if m.role == "dim":  # the size of a dim: n, m·n
        return (m.name.replace("·", " ") if _tex(style) else m.name), (ATOM if "·" not in m.name else PROD)
    if m.role == "commutation":  # K_{p,q}
        p, q = (str(d) for d in m.params)
        if _tex(style):
            return f"K_{{{p},{q}}}", ATOM
        if p in LETTER_SUBSCRIPTS and q in LETTER_SUBSCRIPTS:
            return "K" + LETTER_SUBSCRIPTS[p] + LETTER_SUBSCRIPTS[q], ATOM
        return f"K_({p},{q})", ATOM
    if m.role == "basis":  # the unit vector e₁, eₙ, e_(n−1)
        if _tex(style):
            return f"e_{{{m.name.replace('−', '-')}}}", ATOM
        if m.name.isdigit():
            return "e" + m.name.translate(SUBSCRIPT_DIGITS), ATOM
        if m.name in LETTER_SUBSCRIPTS:
            return "e" + LETTER_SUBSCRIPTS[m.name], ATOM
        return f"e_({m.name})", ATOM
    if m.role == "frechet":  # L_f(X, E), the Fréchet derivative of f at X along E
        fn, x, e = m.params
        args = f"{_render(x, style)[0]}, {_render(e, style)[0]}"
        if _tex(style):
            name = {"sqrt": "\\operatorname{sqrt}"}.get(fn) or style["functions"].get(fn, fn)
            return f"L_{{{name}}}\\left({args}\\right)", ATOM
        return f"L_{fn}({args})", ATOM
    if m.role == "frechet2":  # L²_f(X; E₁, E₂): the derivative of L_f(X, E₁) along E₂
        fn, x, e1, e2 = m.params
        point, dirs = _render(x, style)[0], f"{_render(e1, style)[0]}, {_render(e2, style)[0]}"
        if _tex(style):
            name = {"sqrt": "\\operatorname{sqrt}"}.get(fn) or style["functions"].get(fn, fn)
            return f"L^{{(2)}}_{{{name}}}\\left({point}; {dirs}\\right)", ATOM
        return f"L²_{fn}({point}; {dirs})", ATOM
    if m.role == "divdiff3":  # Δ²f(λ)[X, Y]: f's second divided differences applied to X and Y
        inner = dict(style, in_leaf=True)
        fn = _defined_name(m.params[0], style) if defined_by_trace(m.params[0]) else m.params[0]
        return _divdiff3(fn, *(_render(x, inner)[0] for x in m.params[1:]), style), ATOM
    if m.role == "part":  # a decomposition's part: U, Λ, λ, u₁, uₙ
        if not _tex(style):
            head = m.name[:1]
            sub = m.name[1:]
            if sub and not sub.isdigit() and sub not in LETTER_SUBSCRIPTS and not \
                    all(ch in "₀₁₂₃₄₅₆₇₈₉" for ch in sub):
                return f"{head}_({sub})", ATOM
            return head + sub.translate(SUBSCRIPT_DIGITS).translate(
                str.maketrans(LETTER_SUBSCRIPTS)) if sub else head, ATOM
        tex = PART_TEX.get(m.name)
        if tex is None and len(m.name) > 1:
            head = GREEK_PARTS.get(m.name[0], m.name[0])
            tex = f"{head}_{{{m.name[1:].replace('−', '-')}}}"
        return tex or m.name, ATOM
    return style[m.role], ATOM


def _divdiff2_head(fn: str, style) -> str:
    """Δ²exp, Δ²[u³]: the second divided differences of f (\\Delta^{2}_{\\exp} in LaTeX)."""
    if not _tex(style):
        return f"Δ²{fn}"
    return _tex_name(f"Δ{fn}", style).replace("\\Delta", "\\Delta^{2}", 1)


def _divdiff3(fn: str, lam: str, x: str | None, y: str | None, style) -> str:
    """Δ²f(λ)[X, Y] (docs/matrix-functions.md), or Δ²f(λ) alone where x and y are None."""
    lp, rp = style["lparen"], style["rparen"]
    head = f"{_divdiff2_head(fn, style)}{lp}{lam}{rp}"
    if x is None:
        return head
    return head + (f"\\left[{x}, {y}\\right]" if _tex(style) else f"[{x}, {y}]")


def _transpose(m: N.T, style):
    if isinstance(m.arg, N.Inv):
        return _wrap(m.arg.arg, style, POSTFIX + 1) + style["invT"], POSTFIX
    if isinstance(m.arg, N.Call) and m.arg.name == "pinv":  # X⁺ᵀ, one superscript in LaTeX
        return _wrap(m.arg.arg, style, POSTFIX + 1) + style["pinvT"], POSTFIX
    return _wrap(m.arg, style, POSTFIX + 1) + style["T"], POSTFIX


def _prod(m: N.Prod, style):
    over = _fraction(m, style)
    if over is not None:
        return over
    if len(m.factors) == 1 and isinstance(m.factors[0], N.Kron):  # −X⁻ᵀ ⊗ X⁻¹
        body = _render(m.factors[0], style)[0]
        lead = "" if abs(m.coef) == 1 else _coefficient(abs(m.coef), body, style)
        return (style["minus"] if m.coef < 0 else "") + lead + body, (NEG if m.coef < 0 else HAD)
    last = len(m.factors) - 1  # a scalar product before other factors is bracketed: (xᵀAx)Ax
    parts = [_ones_matrix(style) if _is_ones_matrix(f) else
             _wrap(f, style, ATOM if f.kind == "s" and i < last and isinstance(f, N.Prod)
                   else PROD if i == last else PROD + 1) for i, f in enumerate(m.factors)]
    factors = m.factors
    if _tex(style):
        body = " ".join(parts)
    else:  # a differential stands apart from its neighbours: aᵀ dX b
        shown = style.get("display")
        apart = [_is_differential(f, shown) for f in factors] if shown else None
        body = "".join((" " if i and apart and (apart[i] or apart[i - 1]) else
                        "·" if i and (parts[i - 1][-1:].isdigit() and p[:1].isdigit() and
                                      not _ones_outer(parts[i - 1], p) or
                                      _reads_as_call(parts[i - 1]) or
                                      p[:1] == "‖" and style.get("in_norm")) else
                        " " if i and _run_together(parts[i - 1], p) else "") + p
                       for i, p in enumerate(parts))  # 2·1ᵀx, never 21ᵀx; cos·(x + y); but 11ᵀ
    c = m.coef
    if c == 1:
        return body, PROD
    lead = "" if abs(c) == 1 else _coefficient(abs(c), body, style)
    if lead and not _tex(style) and _is_differential(m.factors[0], style.get("display", {})):
        lead += " "
    return (style["minus"] if c < 0 else "") + lead + body, (NEG if c < 0 else PROD)


def _is_ones_matrix(f) -> bool:
    return isinstance(f, N.Sym) and f.role == "one" and f.kind == "m"


def _ones_matrix(style) -> str:
    """The all-ones matrix as a factor of a product, 11ᵀ: alone, or as a term of a sum, it is
    written 1 (which the reader broadcasts), but 1 beside a matrix or a vector would read as
    the number: 11ᵀ1, not 1·1 (which reads back as 1, where the value is n1)."""
    return style["one"] + style["one"] + style["T"]


def _ones_outer(left: str, right: str) -> bool:
    """A ones vector before a ones row, 11ᵀ, as the Matrix Cookbook writes it (76): the
    reader takes a numeral followed by ᵀ, which as a scalar would be meaningless, as 1·1ᵀ."""
    return left == "1" and right.startswith("1ᵀ")


def _fraction(m: N.Prod, style):
    """A product with scalar factors to negative powers that print as symbols (‖x‖, det(X))
    or positive numbers is written as a quotient: Aᵀs/‖s‖, x/‖x‖³, (A + Aᵀ)x/‖x‖², xᵀx/2."""
    if N.Pow not in map(type, m.factors):
        return None
    den = [f for f in m.factors if isinstance(f, N.Pow) and f.kind == "s" and f.p < 0 and
           (isinstance(f.arg, (N.Call, N.Sym)) or isinstance(f.arg, N.Num) and f.arg.value > 0 or
            isinstance(f.arg, N.Prod) and f.arg.coef == 1 and
            all(isinstance(x, (N.Call, N.Sym)) and x.kind == "s" for x in f.arg.factors))
           and style.get("names", {}).get(id(f)) is None]
    num = [f for f in m.factors if not any(f is d for d in den)]
    if not den or not num or (len(num) == 1 and isinstance(num[0], N.Sym) and num[0].role in ("one", "zero")):
        return None  # the vector 1 over n is n⁻¹1: 1/n reads as the number
    below = [d.arg if d.p == -1 else N.Pow("s", d.arg, -d.p) for d in den]
    top, prec = _render(N.prod(abs(m.coef), num), style)
    sign = style["minus"] if m.coef < 0 else ""
    if _tex(style):
        bottom = " ".join(_wrap(b, style, PROD + 1) for b in below)
        return f"{sign}\\frac{{{top}}}{{{bottom}}}", (NEG if m.coef < 0 else PROD)
    bottom = "".join(_wrap(b, style, PROD + 1) for b in below)
    if len(below) > 1:
        bottom = f"{style['lparen']}{bottom}{style['rparen']}"
    top = top if prec >= PROD else f"{style['lparen']}{top}{style['rparen']}"
    return f"{sign}{top}/{bottom}", (NEG if m.coef < 0 else PROD)


_WORD_CHARS = frozenset(chr(c) for a, b in ("AZ", "az", "09", "__", "αω", "ΑΩ")
                        for c in range(ord(a), ord(b) + 1))  # [A-Za-z0-9_α-ωΑ-Ω], as a set
_WORD_END = re.compile(r"[A-Za-z0-9_α-ωΑ-Ω]+$")
_WORD_START = re.compile(r"^[A-Za-z0-9_α-ωΑ-Ω]+")


def _run_together(left: str, right: str) -> bool:
    """Whether two juxtaposed factors would read as one name: lam w, S W2, S diag(v) — a
    name of more than one character next to another name (Xw and xᵀx stay as they are)."""
    if not (left[-1:] in _WORD_CHARS and right[:1] in _WORD_CHARS):
        return False  # most factors end with ᵀ or ) or begin with (
    a, b = _WORD_END.search(left), _WORD_START.match(right)
    return bool(a and b) and (len(a.group()) > 1 or len(b.group()) > 1)


_NAME_AT_END = re.compile(r"([A-Za-z_α-ωΑ-Ω][A-Za-z0-9_α-ω]*ₘ?)[⁻⁰¹²³⁴⁵⁶⁷⁸⁹′″‴]*$")


def _reads_as_call(left: str) -> bool:
    """Whether ``left`` ends with a variable named like a function (cos, exp, tr, σ), which
    juxtaposed with what follows would read back as a call: cos·(x + y), not cos(x + y)."""
    if left[-1:] in (")", "ᵀ"):
        return False  # no name ends there
    m = _NAME_AT_END.search(left)
    return bool(m) and m.group(1) in PRINTED_FUNCTIONS and \
        (m.start() == 0 or not left[m.start() - 1].isalnum())


def _is_differential(f, shown) -> bool:
    while isinstance(f, N.T):
        f = f.arg
    return isinstance(f, N.Sym) and f.name in shown


def _coefficient(c: float, body: str, style) -> str:
    """A coefficient written before ``body``: 2X, (1/2)X, 2·1ᵀx, 0.693…·X."""
    mag = _number(c, style)
    if _tex(style):
        return mag + " "
    if "/" in mag:
        return f"({mag})"
    return mag + ("·" if body[:1].isdigit() or "." in mag or body[:1] == "‖" and style.get("in_norm") else "")


def _signed(pieces, minus, sub, plus) -> str:
    """Terms (coefficient, text without its sign) joined as a − b + c."""
    return "".join(((minus if c < 0 else "") if i == 0 else (sub if c < 0 else plus)) + text
                   for i, (c, text) in enumerate(pieces))


def _bias_last(terms):
    """A sum's terms with each broadcast bias 1bᵀ after the others, as it is written
    (XW + 1bᵀ), unless that would lead with a minus sign."""
    bias = [type(t) is N.Prod and t.kind == "m" and len(t.factors) >= 2 and
            type(t.factors[0]) is N.Sym and t.factors[0].role == "one" for _, t in terms]
    if True not in bias:  # (most sums have none: their order stands)
        return terms
    order = [p for p, b in zip(terms, bias) if not b] + [p for p, b in zip(terms, bias) if b]
    return order if order and (order[0][0] > 0 or terms[0][0] < 0) else terms


READ = 16  # how many of a term's variables its order reads


def in_input_order(m: N.M, source: Node) -> N.M:
    """m, the notation of a derivative of ``source``, with its sums in the order the input
    reads (issue 24), so that the result reads against the input:

    - a sum the input wrote (the same terms, with the same signs or all signs flipped) is
      written in the input's order: det(A + xB), not det(xB + A), for det(A + xB); where
      that order leads with a minus sign, a product standing first in a term takes the sign
      out (2W(s − x) is −2W(x − s) for (x − s)ᵀW(x − s)), and elsewhere the sum keeps the
      presentation's order;
    - a sum whose terms read the same variables the same number of times (bcᵀ + cbᵀ, the
      terms the product rule makes of one input product) puts first the term whose variables
      read in the input's order, each variable numbered where it first appears in the input,
      read left to right, and of products that read them alike the one with fewer
      transposes, AX(XᵀAX)⁻¹ + AᵀX(XᵀAᵀX)⁻¹ (Matrix Cookbook, 54);
    - a trace of a product is turned cyclically to read in that order (``rotated``).

    Any other sum, and ties, keep the presentation's order (Xᵀ(σ(Xw) − y)). Deterministic:
    the same input and result always print the same text (docs/conventions.md).

    Memoised on the tree (text and LaTeX of one result read one tree), so that what is
    memoised on the tree it returns goes with the notation the memo caches hold."""
    memo = m.__dict__.get("_in_input_order")
    if memo is not None and memo[0] is source:
        return memo[1]
    out = _in_input_order(m, source)
    object.__setattr__(m, "_in_input_order", (source, out))
    return out


def _in_input_order(m: N.M, source: Node) -> N.M:
    rank, typed = _reading(source)
    if not rank:
        return m
    keys: dict = {}
    held: dict = {}
    counts: dict = {}

    def key(x):
        """x's variables as read, by number; the first READ of them (a tree that shares
        subtrees reads exponentially many)."""
        got = keys.get(id(x))
        if got is None:
            if isinstance(x, N.Sym):
                k = (rank.get(x.name, len(rank)),) if x.role == "var" else ()
            else:
                k = tuple(r for c in N.children(x) for r in key(c))[:READ]
            got = keys[id(x)] = (k, x)  # x kept, so that its id stays its own
        return got[0]

    def names(x) -> frozenset:
        """The variables in x, by number."""
        got = held.get(id(x))
        if got is None:
            h = frozenset(key(x)) if isinstance(x, N.Sym) else \
                frozenset().union(*(names(c) for c in N.children(x)))
            got = held[id(x)] = (h, x)
        return got[0]

    def tally(x) -> tuple:
        """How many times x reads each variable, by number."""
        got = counts.get(id(x))
        if got is None:
            c = collections.Counter(key(x)) if isinstance(x, N.Sym) else \
                sum((collections.Counter(dict(tally(k))) for k in N.children(x)), collections.Counter())
            got = counts[id(x)] = (tuple(sorted(c.items())), x)
        return got[0]

    def written(terms):
        """The terms in the order of the input's sum with them, or None where the input wrote
        no such sum: terms match by their variables, the signs all alike or all flipped."""
        if len(terms) not in typed:
            return None
        sets = [names(t) for _, t in terms]
        order = typed[len(terms)].get(frozenset((c > 0, h) for (c, _), h in zip(terms, sets)))
        if order is None or len(set(sets)) != len(sets):
            return None
        return tuple(p for _, p in sorted(zip((order.index(h) for h in sets), terms), key=lambda q: q[0]))

    def ordered(terms):
        """The terms in the input's order, or None where no rule orders them."""
        order = written(terms)
        if order is None and len({tally(t) for _, t in terms}) == 1 and names(terms[0][1]):
            prods = all(isinstance(t, N.Prod) for _, t in terms)  # of products, fewer ᵀ first
            order = tuple(sorted(terms, key=lambda p: (key(p[1]), N._transposes(p[1]) if prods else 0)))
        return order

    def rotated(p: N.Prod) -> N.Prod:
        """A trace's product turned cyclically to read in the input's order: tr((A + xB)⁻¹B),
        not tr(B(A + xB)⁻¹), for det(A + xB); where a turn would join equal factors (A²),
        or the factors tie, it stays."""
        mats = [f for f in p.factors if f.kind != "s"]
        lead = [f for f in p.factors if f.kind == "s"]
        if len(mats) < 2 or any(f.kind != "m" for f in mats) or \
                any(a == b for a, b in zip(mats, mats[1:] + mats[:1])):
            return p
        turns = [mats[i:] + mats[:i] for i in range(len(mats))]
        best = min(range(len(turns)), key=lambda i: (tuple(r for f in turns[i] for r in key(f)), i))
        return p if best == 0 else dataclasses.replace(p, factors=tuple(lead) + tuple(turns[best]))

    done: dict = {}  # by the original subtree: what it shares, the new tree shares (named once)
    turned: dict = {}

    def go(x):
        y = done.get(id(x))
        if y is None:
            kids = N.children(x)
            y = done[id(x)] = place(x, kids, tuple(go(c) for c in kids)) if kids else x
        return y

    def place(x, old, new):
        if isinstance(x, N.Add):
            terms = tuple(signed(c, t) if isinstance(t, N.Prod) else (c, t)
                          for (c, _), t in zip(x.terms, new))
            order = ordered(terms)
            if order is not None and (order[0][0] > 0 or terms[0][0] < 0):
                terms = order
            same = all(a[1] is b[1] and a[0] == b[0] for a, b in zip(terms, x.terms))
            return x if same else dataclasses.replace(x, terms=terms)
        if any(a is not b for a, b in zip(new, old)):
            x = dataclasses.replace(x, factors=new) if isinstance(x, (N.Prod, N.Had, N.Kron)) \
                else dataclasses.replace(x, arg=new[0])
        if isinstance(x, N.Call) and x.name == "tr" and isinstance(x.arg, N.Prod):
            arg = rotated(x.arg)
            if arg is not x.arg:
                x = dataclasses.replace(x, arg=arg)
        return x

    def signed(c, t):
        """A term c·t of a sum, with the sign its product t takes out of a sum in it."""
        t = flipped(t)
        return (-c, dataclasses.replace(t, coef=-t.coef)) if t.coef < 0 else (c, t)

    def flipped(p):
        """The product p where a sign can lead it (a term of a sum, the whole result), with
        each sum in it that the input wrote with the other signs written as the input wrote
        it, the sign taken out: −2W(x − s) for 2W(s − x)."""
        q = turned.get(id(p))
        if q is None:
            q = turned[id(p)] = flip(p)
        return q

    def flip(p):
        coef, factors = p.coef, list(p.factors)
        for i, f in enumerate(factors):
            if isinstance(f, N.Add) and f.terms[0][0] > 0:
                order = ordered(f.terms)
                if order is not None and order[0][0] < 0:
                    coef, factors[i] = -coef, dataclasses.replace(f, terms=tuple((-c, t) for c, t in order))
        return p if coef == p.coef else dataclasses.replace(p, coef=coef, factors=tuple(factors))

    out = go(m)
    return flipped(out) if isinstance(out, N.Prod) else out


@functools.lru_cache(maxsize=256)
def _reading(source: Node):
    """What ``in_input_order`` reads of an input (memoised: one input, many prints): its
    variables numbered in the order of their first appearance, read left to right, and its
    sums, by number of terms, as {their terms' signed variable sets: those sets in order},
    each also with all signs flipped."""
    rank: dict = {}
    stack, seen = [source], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if isinstance(x, Var):
            rank.setdefault(x.name, len(rank))
        stack.extend(reversed(x.children))
    typed: dict = {}
    cache: dict = {}
    for a in _sums(source):
        held = [frozenset(rank[v.name] for v in _vars_of(t, cache)) for _, t in a.terms]
        if len(set(held)) == len(held):
            signs = [c > 0 for c, _ in a.terms]
            for flip in (False, True):
                typed.setdefault(len(held), {}).setdefault(
                    frozenset((p != flip, h) for p, h in zip(signs, held)), held)
    return rank, typed


def _sums(node: Node):
    """The sums in an IR node, each once."""
    stack, seen = [node], set()
    while stack:
        x = stack.pop()
        if x not in seen:
            seen.add(x)
            if isinstance(x, Sum):
                yield x
            stack.extend(reversed(x.children))  # read left to right


def _vars_of(node: Node, cache: dict) -> frozenset:
    """The variables in an IR node (memoised in ``cache``)."""
    out = cache.get(node)
    if out is None:
        out = frozenset((node,)) if isinstance(node, Var) else \
            frozenset().union(*(_vars_of(c, cache) for c in node.children))
        cache[node] = out
    return out


def _add(m: N.Add, style):
    pieces = []
    for c, t in _bias_last(m.terms):
        mag = abs(c)
        term = _wrap(t, style, PROD if mag != 1 else ADD + 1)
        coef = "" if mag == 1 else _coefficient(mag, term, style)
        if t.kind == "s" and term == "1" and mag != 1:  # a scalar constant: 2, not 2·1
            coef, term = "", _number(mag, style)
        first = t.factors[0] if isinstance(t, N.Prod) else t
        if coef and not _tex(style) and _is_differential(first, style.get("display", {})):
            coef += " "  # 2 d(Xw)ᵀ(Xw − y)
        pieces.append((c, coef + term))
    return _signed(pieces, style["minus"], style["sub"], style["plus"]), ADD


def _call(m: N.Call, style):
    lp, rp = style["lparen"], style["rparen"]
    if m.fn is not None and defined_by_trace(m.fn):  # fₘ(S), Δh(λ): under the name the where-clause defines
        m = N.Call(m.kind, ("Δ" if m.name.startswith("Δ") else "") + _defined_name(m.fn, style) +
                   ("ₘ" if m.name.endswith("ₘ") else ""), m.arg, m.order, m.axis)
    # within ‖…‖ a norm after a factor is set off by ·: ‖2·‖y‖x‖, which reads back as it means
    bars = m.name in ("norm", "spectral", "nuclear") and not _tex(style)
    arg = _render(m.arg, dict(style, in_norm=True) if bars else style)[0]
    if m.fn is None:  # (most calls: tr, diag, a matrix function of no traced or abstract f)
        pass
    elif isinstance(m.fn, ScalarFunction):  # λ(X), ∇λ(X), ∇²λ(X)
        if m.order == 0:
            return f"{_name(m.name, style)}{lp}{arg}{rp}", ATOM
        power = "" if m.order == 1 else (str(m.order).translate(SUPERSCRIPT) if not _tex(style)
                                         else f"^{{{m.order}}}")
        return f"{style['nabla']}{power}{_name(m.name, style)}{lp}{arg}{rp}", ATOM
    elif isinstance(m.fn, Function) and not m.fn.builtin and not defined_by_trace(m.fn):  # σ(X), σ′(X)
        mark = (("′", "″", "‴")[m.order - 1] if not _tex(style) else "'" * m.order) \
            if 0 < m.order < 4 else ("" if m.order == 0 else f"^{{({m.order})}}")
        return f"{_name(m.name, style)}{mark}{lp}{arg}{rp}", ATOM
    if m.name == "pinv":  # X⁺, a mark as X⁻¹
        return _wrap(m.arg, style, POSTFIX + 1) + style["pinv"], POSTFIX
    if m.name == "spectral":  # ‖X‖₂
        return (f"\\lVert {arg} \\rVert_2" if _tex(style) else f"‖{arg}‖₂"), ATOM
    if m.name == "nuclear":  # ‖X‖_*
        return (f"\\lVert {arg} \\rVert_*" if _tex(style) else f"‖{arg}‖_*"), ATOM
    if m.name == "norm":  # ‖x‖, ‖X‖_F
        sub = "_F" if m.arg.kind == "m" else ""
        return (f"\\lVert {arg} \\rVert{sub}" if _tex(style) else f"‖{arg}‖{sub}"), ATOM
    if m.name == "abs" and _tex(style):
        return f"\\left|{arg}\\right|", ATOM
    if m.name == "abs" and not style.get("in_abs"):  # |x|; within bars abs(x), unambiguous
        return f"|{_render(m.arg, dict(style, in_abs=True))[0]}|", ATOM
    name = style["functions"].get(m.name) or (_tex_name(m.name, style) if _tex(style) else m.name)
    axis = "" if m.axis is None or m.arg.kind != "m" else (
        f", \\mathrm{{axis}}={m.axis}" if _tex(style) else f", axis={m.axis}")
    return f"{name}{lp}{arg}{axis}{rp}", ATOM


def _tex_name(name: str, style) -> str:
    """LaTeX of a name outside the function table: expm → \\operatorname{expm}, u₁ → u_{1},
    Δexp (divided differences) → \\Delta_{\\exp}, Γ → \\Gamma."""
    if name.startswith("Δ[u") and name.endswith("]"):  # Δ[u²]: the divided differences of u ↦ u²
        power = name[3:-1].translate(str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻−", "0123456789--"))
        power = power[2:-1] if power.startswith("^(") else power
        return f"\\Delta_{{u^{{{power}}}}}"
    if name.startswith("Δ") and len(name) > 1:  # Δsigmoid′, of σ′: \Delta_{\sigma'}
        inner = name[1:].rstrip("′")
        primes = "'" * (len(name) - 1 - len(inner))
        return f"\\Delta_{{{style['functions'].get(inner) or _tex_name(inner, style)}{primes}}}"
    greek = {"Δ": "\\Delta", "Γ": "\\Gamma", "Φ": "\\Phi"}
    if name in greek:
        return greek[name]
    if name[-1] in UNSUBSCRIPT:
        return f"{name[:-1]}_{{{UNSUBSCRIPT[name[-1]]}}}"
    return name if len(name) == 1 else f"\\operatorname{{{name}}}"


def _pow(m: N.Pow, style):
    p, a = m.p, m.arg
    if p == 0.5:
        inner = _wrap(a, style, ATOM)
        return (f"√{inner}" if not _tex(style) else f"\\sqrt{{{_render(a, style)[0]}}}"), ATOM
    if p < 0 and a.kind != "s":  # x⁻¹ entry-wise is 1 ⊘ x
        rest = N.Pow(a.kind, a, -p) if p != -1 else a
        return style["one"] + style["div"] + _wrap(rest, style, HAD + 1), HAD
    exp = _number(p, style)
    if isinstance(a, N.Call) and m.kind != "s" and p > 0 and float(p).is_integer() and \
            a.name not in ("diag", "tr", "det", "logdet", "abs", "pinv") and \
            style.get("names", {}).get(id(a)) is None:  # a named call is a plain symbol
        text = _render(a, style)[0]  # tanh²(A): the function's power, entry-wise
        head, _, tail = text.partition(style["lparen"])
        sup = exp.translate(SUPERSCRIPT) if not _tex(style) else f"^{{{exp}}}"
        return f"{head}{sup}{style['lparen']}{tail}", ATOM
    if not _tex(style):
        sup = exp.translate(SUPERSCRIPT) if float(p).is_integer() else \
            f"^({exp.replace('-', style['minus'])})"
        circ = f"^∘{exp}" if float(p).is_integer() else f"^∘({exp})"  # ^∘(3/4), not (^∘3)/4
        return _wrap(a, style, POSTFIX + 1) + (sup if m.kind == "s" else circ), POSTFIX
    circ = "" if m.kind == "s" else "\\circ "
    return _wrap(a, style, POSTFIX + 1) + f"^{{{circ}{exp}}}", POSTFIX


def _had(m: N.Had, style):
    """A ⊙ B, with reciprocal factors written as a division: x ⊘ y."""
    num = [f for f in m.factors if not (isinstance(f, N.Pow) and f.p < 0)]
    den = [f.arg if f.p == -1 else N.Pow(f.kind, f.arg, -f.p) for f in m.factors
           if isinstance(f, N.Pow) and f.p < 0]
    top = style["had"].join(_wrap(f, style, HAD + 1) for f in num) if num else style["one"]
    if not den:
        return top, HAD
    bottom = style["had"].join(_wrap(f, style, HAD + 1) for f in den)
    top = f"{style['lparen']}{top}{style['rparen']}" if len(num) > 1 else top
    bottom = f"{style['lparen']}{bottom}{style['rparen']}" if len(den) > 1 else bottom
    return top + style["div"] + bottom, HAD


RENDER = {
    N.Sym: _sym,
    N.Num: lambda m, s: (_number(m.value, s), ATOM if m.value >= 0 else NEG),
    N.T: _transpose,
    N.Inv: lambda m, s: (_wrap(m.arg, s, POSTFIX + 1) + s["inv"], POSTFIX),
    N.Prod: _prod,
    N.Had: lambda m, s: _had(m, s),
    N.Kron: lambda m, s: (s["kron"].join(_wrap(f, s, HAD + 1) for f in m.factors), HAD),
    N.Add: _add,
    N.Call: _call,
    N.Pow: _pow,
    N.MatPow: _matpow,
    N.Index: lambda m, s: (index_notation(m.node, _with_memo(m, s)), ATOM),
}


def _render(m: N.M, style):
    names = style.get("names")
    if names:  # (most texts name nothing)
        name = names.get(id(m))
        if name is None and style.get("in_leaf") and m in style.get("named", {}):
            m = style["named"][m]  # Δ²f(λ)[X, Y]'s X, a tree of its own, equal to one named
            name = names.get(id(m))
        if name is not None:
            style.get("used", set()).add(id(m))
            return (_name(name, style) if style is not TEXT and "latex" in style else name), ATOM
    return RENDER[type(m)](m, style)


# --------------------------------------------------------------------------- index notation

FREE = "ijklm"
BOUND = "pqrstuvw"


def _subscript(letters, style) -> str:
    text = "".join(letters)
    return f"_{{{text}}}" if _tex(style) else f"_{text}"


def index_notation(node: Node, style=TEXT, free=None, nested=False) -> str:
    """Index notation, with explicit sums: xxᵀ by x is δ_ik x_j + δ_jk x_i.  The factors of
    the outermost products are grouped into the matrix products their indices chain
    (``_chained``); a bracketed inner sum is written as it is.  The parts of one
    decomposition are named as in matrix notation: Σ_p U_ip Δ²exp(λ)_pqr …  where S = UΛUᵀ."""
    free = list(free) if free is not None else [FREE[i] if i < len(FREE) else _letter(FREE, BOUND, i)
                                                for i in range(node.ndim)]
    if nested or style.get("index_names") is not None:
        return _index_form(node, style, free, nested)
    found, traced = _memo(style, "reads", node, _index_reads)
    style = dict(style, spectral=found[0] if found else None)
    lead = [found[1](style)] if found else []
    # (the variables' names are read only where a traced function is to be named apart from them)
    style, defined = _defined_functions(traced, style, _memo(style, "names", node, _var_names)
                                        if traced[0] else ())
    lead += list(defined.values())
    repeated = _memo(style, "repeated", node, _index_repeated)
    if repeated:
        return _index_named(node, style, free, repeated, lead)
    text = _index_form(node, dict(style, index_names={}), free, nested)
    where = " \\quad\\text{where } " if _tex(style) else "  where "
    return text + where + ", ".join(lead) if lead else text


def _with_memo(m: N.Index, style) -> dict:
    """The style with the memo of the index form of m: text and LaTeX of one result print
    one tree, and what the index form reads of its IR (``_memo``) is read once."""
    memo = m.__dict__.get("_memo")
    if memo is None:
        memo = {}
        object.__setattr__(m, "_memo", memo)
    return dict(style, memo=memo)


def _memo(style, what: str, node: Node, make):
    """make(node), memoised in the style's memo (``_with_memo``) where it has one."""
    memo = style.get("memo")
    if memo is None:
        return make(node)
    got = memo.get((what, id(node)))
    if got is None or got[0] is not node:
        got = memo[what, id(node)] = (node, make(node))  # node kept: its id stays its own
    return got[1]


def _index_reads(node: Node) -> tuple:
    """What an index form reads of its IR, in one walk: (``_index_parts``, ``_index_traced``)."""
    nodes = list(walk(node))
    return _index_parts(nodes), _index_traced(nodes)


def _index_traced(nodes: list) -> tuple:
    """The traced functions an index form calls, in order, and the names of the others
    (``nodes``: the nodes of its IR, each once, as ``walk`` gives them)."""
    fns = [x.fn for x in nodes if isinstance(getattr(x, "fn", None), (Function, ScalarFunction))]
    traced = list(dict.fromkeys(fn for fn in fns if defined_by_trace(fn)))
    return traced, {fn.name for fn in fns if not defined_by_trace(fn)}


def _var_names(node: Node) -> set:
    return {v.name for v in _vars(node)}


def _index_parts(nodes: list):
    """(the renamer of ``_parts_renamer``, the clause S = UΛUᵀ as a function of the style)
    for an index form through one decomposition whose vectors it uses; None otherwise
    (``nodes``: the nodes of its IR, each once)."""
    eigen, svd, vectors, names = set(), set(), False, set()
    for x in nodes:
        if isinstance(x, Eigh):
            eigen.add(x.arg)
            vectors = vectors or x.part == "vectors"
        elif isinstance(x, Svd):
            svd.add(x.arg)
            vectors = vectors or x.part != "values"
        elif isinstance(x, Var):
            names.add(x.name)
    if not vectors or len(eigen) + len(svd) != 1 or names & _part_names(bool(eigen)):
        return None
    arg = recognise(next(iter(eigen or svd)))
    if isinstance(arg, N.Index):
        return None
    return _parts_renamer(arg, bool(eigen)), lambda style: _parts_clause(arg, bool(eigen), style)


def _spectral_names(m: N.M, style) -> N.M:
    """m with a decomposition's parts named as the index form being written names them."""
    go = style.get("spectral")
    return m if go is None or isinstance(m, N.Index) else go(m)


def _index_form(node: Node, style, free, nested) -> str:
    names = style.get("index_names")
    if names and node in names and style.get("defining") is not node:
        return _name(names[node], style) + _subscript(free, style)
    if isinstance(node, Sum):
        if not node.terms:
            return "0"
        fake = N.Add("s", tuple((c, N.Index("s", t, "")) for c, t in node.terms))
        return _add_terms(fake, style, free, nested)
    if isinstance(node, Contract):
        summed, placed = _memo(style, ("layout", tuple(free), nested), node,
                               lambda n: _layout(n, style, free, nested))
        factors = [_notation_factor(op, letters, style) if isinstance(op, N.M) else  # L²_f(X; E₁, E₂)_ij
                   _factor(op, letters, style) for op, letters in placed]
        sums = "".join(("\\sum_{" + x + "} ") if _tex(style) else f"Σ_{x} " for x in summed)
        return sums + (" " if _tex(style) else " ").join(factors) if factors else sums + "1"
    return _factor(node, free, style)


def _layout(node: Contract, style, free, nested) -> tuple:
    """(the letters of the summed indices, [(factor, its indices' letters)] in the order
    written) of an index-form product: the same in every style, so text and LaTeX of one
    result read it once (``_memo``)."""
    node = node if nested else _memo(style, "chained", node, _chained)
    written = _second_frechet_leaves(node)  # L²_f(X; E₁, E₂) for its 2 × 2 block matrices
    letters = dict(zip(node.out, free))
    summed = sorted({x for _, lab in written for x in lab} - set(node.out))
    taken = _memo(style, "names", node, _var_names)  # Σ_p … never beside a vector named p
    pool = [c for c in BOUND if c not in free and c not in taken]  # a nested sum's letters
    # differ from its parent's
    for n, x in enumerate(summed):
        letters[x] = _letter(pool or BOUND, FREE, n)
    carried = [x for op, lab in written if not isinstance(op, Delta) for x in lab]
    rank = {x: n for n, x in enumerate(list(node.out) + summed)}
    # δs first, as the Matrix Cookbook writes δ_ik A_lj (74) and δ_jl (XᵀB)_ik (79); then
    # the factors in the order of their indices
    pairs = sorted(written, key=lambda p: (not (isinstance(p[0], Delta) and p[0].order > 1),
                                           min((rank[x] for x in p[1]), default=-1)))
    placed = [(op, [letters[x] for x in lab]) for op, lab in pairs
              if not (isinstance(op, Delta) and op.order == 1 and lab[0] in carried)]
    return [letters[x] for x in summed], placed


def map_entries(m: N.M, name: str, dims: tuple, style=TEXT) -> str:
    """The index form of the linear map ``name`` ↦ m (a Jacobian or Hessian through a Fréchet
    derivative, m of order ≤ 2 and the direction of shape ``dims``): its entry at the result's
    indices i, j and the direction's k, l is m at the unit direction eₖeₗᵀ (eₖ for a vector,
    diag(eₖ) written eₖeₖᵀ): L_exp(Y, eₖeₗᵀ)_ij, (L_exp(Y + diag(x), eₖeₖᵀ)a)_i."""
    entry, letters = map_entry(m, name, dims)
    return _notation_factor(entry, letters, style)


def map_entry(m: N.M, name: str, dims: tuple) -> tuple:
    """(m at the unit direction, the result's index letters) for ``map_entries``: the
    direction's letters name the unit vectors (basis symbols eₖ, eₗ)."""
    nout = {"s": 0, "c": 1, "r": 1, "m": 2}[m.kind]
    free = [_letter(FREE, BOUND, i) for i in range(nout + len(dims))]
    units = [N.Sym("c", x, "basis", dims=(d,)) for x, d in zip(free[nout:], dims)]
    unit = units[0] if len(units) == 1 else N.prod(1.0, [units[0], N.transpose(units[1])])

    def go(x):
        if isinstance(x, N.Sym) and x.role == "var" and x.name == name:
            return unit
        if isinstance(x, N.Call) and x.name == "diag" and x.kind == "m" and x.arg.kind == "c" and \
                isinstance(x.arg, N.Sym) and x.arg.role == "var" and x.arg.name == name:
            return N.prod(1.0, [unit, N.transpose(unit)])
        y = _map_fields(x, go)
        if y is x:
            return x
        if isinstance(y, N.T):
            return N.transpose(y.arg)
        return N.prod(y.coef, y.factors) if isinstance(y, N.Prod) else y

    return go(m), free[:nout]


def _second_frechet_leaves(c: Contract) -> list:
    """c's factors as (factor, labels), where each second Fréchet derivative that diff.py
    writes with 2 × 2 block matrices is its matrix notation L²_f(X; E₁, E₂) (or L_f(X, E)) on
    its row and column labels — the one of it and its transpose that writes fewer
    transposes — and the unit vectors that pick its block are left out."""
    pairs = list(zip(c.operands, c.labels))
    if not any(isinstance(op, Reshape) and isinstance(op.arg, Frechet) for op in c.operands):
        return pairs
    found = _second_frechets(c, [x for lab in c.labels for x in lab])
    if not found:
        return pairs
    out = []
    for k, (op, lab) in enumerate(pairs):
        if k not in found:
            out.append((op, lab))
        elif found[k] is not None:
            leaf, a, b = found[k]
            flipped = N.transpose(leaf)
            out.append((flipped, (b, a)) if N._transposes(flipped) < N._transposes(leaf) else (leaf, (a, b)))
    return out


def _bracketed(op) -> bool:
    """Whether op is written as a bracketed index sum where it stands (it has no matrix
    notation: a product or a sum of order three or more, say)."""
    return isinstance(op, (Sum, Contract)) and isinstance(recognise(op), N.Index)


def _index_repeated(node) -> list:
    """The bracketed sums and products written more than once in node's index form,
    outermost first: a term of a sum, or a factor of a product, that another place shares.
    Written out at each use, the Hessian of tr(Aᵏ), whose DAG holds O(k) nodes through the
    repeated squaring, printed O(k²) characters."""
    counts, order, stack = {}, [], [node]
    while stack:
        x = stack.pop()
        parts = [t for _, t in x.terms] if isinstance(x, Sum) else \
            list(x.operands) if isinstance(x, Contract) else []
        for op in parts:
            if not _bracketed(op):
                continue
            counts[op] = counts.get(op, 0) + 1
            if counts[op] == 1:
                order.append(op)
                stack.append(op)
    return [op for op in order if counts[op] >= 2 and op is not node]


INDEX_NAMES = "TRQPZYW"  # the names of repeated index sums: T_ijkl, then R, Q, …, T2, T3, …


def _index_named(node, style, free, repeated, lead=()) -> str:
    """node's index form with each repeated bracketed part named once, as the matrix
    notation names its repeated subtrees: … + Σ_p Σ_q T_ijpq A_pk A_lq  where T_ijkl = …"""
    taken = _memo(style, "names", node, _var_names)
    pool = [c for c in INDEX_NAMES if c not in taken]
    names, n = {}, 2
    for r in repeated:
        if pool:
            names[r] = pool.pop(0)
        else:
            while f"T{n}" in taken:
                n += 1
            names[r], n = f"T{n}", n + 1
    style = dict(style, index_names=names)
    main = index_notation(node, style, free)
    defs = list(lead)
    for r in repeated:
        letters = [_letter(FREE, BOUND, i) for i in range(r.ndim)]
        body = index_notation(r, dict(style, defining=r), letters, nested=True)
        defs.append(f"{_name(names[r], style)}{_subscript(letters, style)} = {body}")
    where = " \\quad\\text{where } " if _tex(style) else "  where "
    return main + where + ", ".join(defs)


def _vars(node) -> list:
    seen, stack, out = set(), [node], []
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, Var):
            out.append(x)
        stack.extend(x.children)
    return out


def _chained(node: Contract) -> Contract:
    """The factors of an index-form product grouped into matrix products wherever their
    indices chain, as the Cookbook writes index formulas: Σ_p X_pi B_pk is (XᵀB)_ik, and
    Σ_q Σ_r A_lq A_qr A_rs is (A³)_ls.  An index summed by exactly two factors of at most two
    indices each (matrices, vectors), and by nothing else, joins them into one factor."""
    ops, labs = list(node.operands), [tuple(lab) for lab in node.labels]
    order = list(node.out) + sorted({y for lab in labs for y in lab} - set(node.out))

    def rank(y):
        return order.index(y)
    while True:
        uses: dict = {}
        for k, lab in enumerate(labs):
            for x in lab:
                uses.setdefault(x, []).append(k)
        pair = next(((x, ks) for x, ks in sorted(uses.items())
                     if x not in node.out and len(ks) == 2 and ks[0] != ks[1] and
                     set(labs[ks[0]]) & set(labs[ks[1]]) == {x} and  # Σ_p A_ip B_ip is no product
                     all(len(labs[k]) <= 2 and len(set(labs[k])) == len(labs[k]) and
                         not isinstance(ops[k], (Delta, Const, Sum)) and _small(ops[k])
                         for k in ks)), None)
        if pair is None:
            break
        x, (i, j) = pair
        out = tuple(sorted((y for y in labs[i] + labs[j] if y != x), key=rank))
        joined = _fewest_transposes(Contract((ops[i], ops[j]), (labs[i], labs[j]), out))
        out = joined.out
        ops = [o for k, o in enumerate(ops) if k not in (i, j)] + [joined]
        labs = [lab for k, lab in enumerate(labs) if k not in (i, j)] + [out]
    if len(ops) == len(node.operands) or len(ops) == 1:  # Σ_p X_pi Y_pj stays: (XᵀY)_ij would
        return node  # say nothing an index form is asked for
    return Contract(tuple(ops), tuple(labs), node.out)


def _fewest_transposes(c: Contract) -> Contract:
    """A joined product of two factors, (P)_ab or (Pᵀ)_ba: the one whose matrix notation
    writes fewer transposes, as the Matrix Cookbook writes (BX)_kj (79), not (XᵀBᵀ)_jk; on a
    tie, its indices in the result's order: (XᵀB)_ik, not (BᵀX)_ki."""
    if len(c.out) != 2:
        return c
    flipped = Contract(c.operands, c.labels, c.out[::-1])
    return min((c, flipped), key=lambda x: N._transposes(recognise(x)))


def _small(op: Node) -> bool:
    """Whether op is small enough to join at little cost (a product of a few variables):
    recognising a joined product of large ones would cost more than the text it saves."""
    count, stack = 0, [op]
    while stack:  # the tree, shared nodes counted at each use: A⁶⁴ is 64 factors
        count += 1
        if count > CHAIN_NODES:
            return False
        stack.extend(stack.pop().children)
    return True


CHAIN_NODES = 12


def _letter(pool, other, n):
    return pool[n] if n < len(pool) else f"{pool[0]}{n}"


def _factor(op, letters, style) -> str:
    sub = _subscript(letters, style) if letters else ""
    if isinstance(op, Var):
        shown = style.get("display")  # a differential in a derivation's step: dX_pq, and a
        shown = shown.get(op.name) if shown else None  # tensor's at these indices: d(T_pqr²)
        if callable(shown):
            return shown(letters)
        return (shown if shown is not None else _name(op.name, style)) + sub
    if isinstance(op, Delta):
        return ("\\delta" if _tex(style) else "δ") + sub if op.order > 1 else \
            style["one"] + sub
    if isinstance(op, Const):
        return _number(op.value, style)
    names = style.get("index_names")
    if names and op in names:
        return _name(names[op], style) + sub
    m = _spectral_names(recognise(op), style)
    if isinstance(m, N.Index):
        if isinstance(op, (Sum, Contract)):
            return f"[{index_notation(op, style, letters, nested=True)}]"
        if isinstance(op, Elementwise):  # f(T)_ijk = f(T_ijk)
            arg = _factor(op.arg, letters, style)
            if op.fn.builtin and op.fn.name == "pow":
                p = _number(op.fn.param, style)
                return f"{arg}^{{{p}}}" if _tex(style) else f"{arg}^{p}"
            head = _render(N.Call("s", op.fn.name, N.Sym("s", "·"), op.fn.order, fn=op.fn), style)[0]
            return head.replace("·", arg, 1)
        if isinstance(op, Frechet):  # L_f(X, E), the Fréchet derivative of f at X along E
            fn, x, e = op.args
            parts = []
            for c in (x, e):
                cm = recognise(c)
                parts.append(_render(cm, style)[0] if not isinstance(cm, N.Index) else f"[{index_form(c)}]")
            args = ", ".join(parts)
            if _tex(style):
                name = {"sqrt": "\\operatorname{sqrt}"}.get(fn) or style["functions"].get(fn, fn)
                return f"L_{{{name}}}\\left({args}\\right){sub}"
            return f"L_{fn}({args}){sub}"
        if isinstance(op, ScalarFn):  # ∇²λ(X)_ijkl: an abstract function's Hessian by a matrix
            arg = recognise(op.arg)
            if not isinstance(arg, N.Index):
                return _notation_factor(N.Call("m", op.fn.name, arg, op.order, fn=op.fn), letters, style)
        split = _split_axes(op) if isinstance(op, Reshape) else None
        if split is not None:  # T reshaped so that its axis of n·m is two, p of n and q of m:
            # T's entry at the compound index (pq), as (A ⊗ B)_(ik)(jl) = A_ij B_kl is written
            letters = list(letters)
            compound = [letters.pop(0) if len(g) == 1 else "(" + "".join(letters.pop(0) for _ in g) + ")"
                        for g in split]
            return _factor(op.arg, compound, style)
        merged = _split_axes(op, merge=True) if isinstance(op, Reshape) else None
        if merged is not None:  # T's axes of n and m read as one of n·m, p: its entry at p's
            # parts p₁ (of n) and p₂ (of m), row-major as the reshape reads them
            parts = [x if len(g) == 1 else _part_letter(x, k, style)
                     for x, g in zip(letters, merged) for k in range(1, len(g) + 1)]
            return _factor(op.arg, parts, style)
        if isinstance(op, Phi):  # Φ(T)_…pq = T_…pq Φ(11ᵀ)_pq: Φ masks T's last two axes, its
            # lower triangle kept and its diagonal halved, as the entries of Φ(11ᵀ) do
            p, q = op.arg.shape[-2:]
            mask = N.Call("m", "Φ", N.prod(1.0, [N.Sym("c", "1", "one", dims=(p,)),
                                                  N.transpose(N.Sym("c", "1", "one", dims=(q,)))]))
            return f"{_factor(op.arg, letters, style)} {_notation_factor(mask, letters[-2:], style)}"
        if isinstance(op, (DivDiff3, DivDiff3Apply)):  # Δ²f(λ)_pqr = f[λ_p, λ_q, λ_r] and
            parts = []  # Δ²f(λ)[X, Y]_pr = Σ_q f[λ_p, λ_q, λ_r] X_pq Y_qr (docs/matrix-functions.md)
            for c in op.children:
                cm = _spectral_names(recognise(c), style)
                parts.append(_render(cm, style)[0] if not isinstance(cm, N.Index) else f"[{index_form(c)}]")
            if isinstance(op, DivDiff3):
                parts += [None, None]
            fn = _defined_name(op.fn, style) if defined_by_trace(op.fn) else _divdiff_name(op.fn)
            return _divdiff3(fn, *parts, style) + sub
        return f"[{index_form(op)}]{sub}"
    return _notation_factor(m, letters, style)


def _split_axes(r: Reshape, merge: bool = False):
    """For a reshape that only splits axes (n·m into n and m, in order), the output axes of
    each of its argument's axes (a tuple of one or more positions per argument axis); with
    ``merge``, for one that only merges axes, the argument's axes of each output axis; None
    for any other reshape."""
    whole, pieces = (r.shape, r.arg.shape) if merge else (r.arg.shape, r.shape)
    out, k = [], 0
    for d in whole:
        group, size = [], 1
        while k < len(pieces) and size != d:  # dims.mul's products compare as dims do
            size = D.mul(size, pieces[k])
            group.append(k)
            k += 1
        if not group or size != d:
            return None
        out.append(tuple(group))
    return out if k == len(pieces) and any(len(g) > 1 for g in out) else None


def _part_letter(x: str, k: int, style) -> str:
    """The k-th part of a merged index x: p₁, p₂ (p_1, p_2 in LaTeX)."""
    return f"{x}_{k}" if _tex(style) else x + SUBSCRIPTS[k]


def _notation_factor(m: N.M, letters, style) -> str:
    """The entry of a matrix-notation factor at ``letters``: A_ij, (AB)_ij, eₙ_p."""
    sub = _subscript(letters, style) if letters else ""
    text, prec = _render(m, style)
    if not letters:
        return text if prec >= ATOM else f"{style['lparen']}{text}{style['rparen']}"
    if _tex(style) and isinstance(m, N.Sym) and text.endswith("}") and "_" in text:
        text = f"{{{text}}}"  # {e_{n}}_{p}: LaTeX has no double subscript
    return (text if prec >= ATOM and isinstance(m, (N.Sym, N.Call)) else
            f"{style['lparen']}{text}{style['rparen']}") + sub


def _add_terms(fake: N.Add, style, free, nested=False) -> str:
    pieces = [(c, ("" if abs(c) == 1 else _number(abs(c), style) + " ")
               + index_notation(t.node, style, free, nested)) for c, t in fake.terms]
    return _signed(pieces, style["minus"], style["sub"], style["plus"])


# --------------------------------------------------------------------------- Python code

def python_code(m: N.M, functions: dict) -> str:
    """The matrix notation as matdiff Python code: ``(A + A.T) @ x``.  ``functions`` maps
    the names of abstract functions to the Python names that call them."""
    return _py(m, functions)[0]


def _py_coef(c: float) -> str:
    """The magnitude of a coefficient as a Python factor: '', '2 * ', '0.5 * '."""
    mag = abs(c)
    return "" if mag == 1 else (str(int(mag)) if float(mag).is_integer() else repr(float(mag))) + " * "


def _py_wrap(m, functions, prec):
    text, p = _py(m, functions)
    return f"({text})" if p < prec else text


def _text_dim(d) -> str:
    """A dim as the input dialects write it inside eye(…): n, 3, n*k."""
    return "*".join(str(f) for f in getattr(d, "factors", (d,)))


def _py_dims(dims) -> str:
    return ", ".join(repr(str(d)) if not isinstance(d, int) else str(d) for d in dims)


def _basis_position(m: N.Sym) -> int:
    """The Python index of a unit vector from its printed subscript: 1 → 0, n → −1, n−2 → −3."""
    if m.name.isdigit():
        return int(m.name) - 1
    head, _, back = m.name.partition("−")
    return -(int(back) + 1) if back else -1


NO_CONSTRUCTOR = {"Q", "U", "V", "u₁", "v₁", "Γ"}  # the decompositions' parts, printed but not built


def _py(m: N.M, functions: dict):
    if isinstance(m, N.Sym):
        if m.role == "var":
            return m.name, ATOM
        if m.role == "dim":
            return f"md.sum(md.ones({_py_dims(m.dims)}))", ATOM
        if m.role == "basis":
            return f"md.unit({_py_dims(m.dims)}, {_basis_position(m)})", ATOM
        if m.role == "commutation":
            raise NotSupportedError("the commutation matrix K has no constructor; use the text form")
        if m.role in ("frechet", "frechet2", "part", "divdiff3"):
            raise NotSupportedError(f"{m.name}, a part of a decomposition, a Fréchet derivative or "
                                    f"second divided differences, has no constructor; use the text form")
        call = {"one": "md.ones", "zero": "md.zeros"}.get(m.role)
        if call:
            return f"{call}({_py_dims(m.dims)})", ATOM
        if functions.get(NUMPY_TEXT):
            return f"eye({_text_dim(m.dims[0])})", ATOM
        return f"md.eye({_py_dims(m.dims[:1])})", ATOM
    if isinstance(m, N.Num):
        return repr(float(m.value)) if not float(m.value).is_integer() else str(int(m.value)), \
            ATOM if m.value >= 0 else NEG
    if isinstance(m, N.T):
        return _py_wrap(m.arg, functions, POSTFIX + 1) + ".T", POSTFIX
    if isinstance(m, N.Inv):
        return f"md.inv({_py(m.arg, functions)[0]})", ATOM
    if isinstance(m, N.MatPow):
        return f"md.matrix_power({_py(m.arg, functions)[0]}, {m.k})", ATOM
    if isinstance(m, N.Prod):
        parts, kind = [], None
        for i, f in enumerate(m.factors):
            if functions.get(NUMPY_TEXT) and kind == "c" and f.kind == "r":
                # a column times a row: NumPy's 1-D arrays need np.outer (x @ x.T is xᵀx there)
                rest = N.Prod("r", 1.0, m.factors[i:]) if len(m.factors) - i > 1 else \
                    f.arg if isinstance(f, N.T) else f  # xᵀ is x among 1-D arrays
                parts = [f"outer({''.join(parts)}, {_py(rest, functions)[0]})"]
                kind = "m"
                break
            op = "" if kind is None else (" * " if "s" in (kind, f.kind) else " @ ")
            parts.append(op + _py_wrap(f, functions, PROD + 1))
            kind = N._product_kind([kind or "s", f.kind]) if kind else f.kind
        body = "".join(parts)
        if m.coef == 1:
            return body, PROD
        text = _py_coef(m.coef) + body
        return ("-" + text, NEG) if m.coef < 0 else (text, PROD)
    if isinstance(m, (N.Had, N.Kron)):
        if isinstance(m, N.Kron):
            return f"md.kron({', '.join(_py(f, functions)[0] for f in m.factors)})", ATOM
        return " * ".join(_py_wrap(f, functions, PROD + 1) for f in m.factors), PROD
    if isinstance(m, N.Add):
        pieces = [(c, _py_coef(c) + _py_wrap(t, functions, PROD + 1 if abs(c) != 1 else ADD + 1))
                  for c, t in m.terms]
        return _signed(pieces, "-", " - ", " + "), ADD
    if isinstance(m, N.Pow):
        return f"{_py_wrap(m.arg, functions, ATOM)} ** {m.p!r}", POSTFIX
    if isinstance(m, N.Call):
        arg = _py(m.arg, functions)[0]
        if isinstance(m.fn, ScalarFunction):
            name = functions.get(m.name, m.name)
            method = {0: "", 1: ".gradient", 2: ".hessian"}.get(m.order)
            return (f"{name}{method}({arg})" if method is not None else
                    f"<∇{m.order}{m.name}({arg})>"), ATOM
        if defined_by_trace(m.fn) and m.name.endswith("ₘ"):  # f traced from a Python callable
            return f"md.matrix_function({arg}, {_lambda(m.fn, functions)})", ATOM
        if isinstance(m.fn, Function) and not m.fn.builtin and not defined_by_trace(m.fn):
            name = functions.get(m.name, m.name)
            return (f"{name}({arg})" if m.order == 0 else
                    f"{name}.derivative({arg}, {m.order})" if m.order > 1 else
                    f"{name}.derivative({arg})"), ATOM
        name = {"tr": "trace", "chol": "cholesky", "Φ": "phi"}.get(m.name, m.name)
        if name == "norm":
            return f"md.norm({arg})", ATOM
        if name in ("nuclear", "spectral"):
            return f"md.norm({arg}, {'nuc' if name == 'nuclear' else 2!r})", ATOM
        if name in NO_CONSTRUCTOR or name.startswith("Δ"):
            raise NotSupportedError(f"{m.name}(·), a part of a decomposition, has no constructor "
                                    f"to rebuild it with; use the text form")
        if name.endswith("ₘ") and not name.startswith("pow"):  # tanhₘ(S): f applied to S
            return f"md.matrix_function({arg}, {name[:-1]!r})", ATOM
        if name.endswith("ₘ"):
            raise NotSupportedError(f"{m.name}(·), a real power of a matrix, has no constructor "
                                    f"to rebuild it with; use the text form")
        axis = f", axis={m.axis}" if m.axis is not None and m.arg.kind == "m" else ""
        return f"md.{name}({arg}{axis})", ATOM
    return _py_index(m.node, functions), ATOM


def _py_index(node: Node, functions: dict) -> str:
    """md.einsum code for a tensor without matrix notation (where the API can build it)."""
    if isinstance(node, Var):
        return node.name
    if isinstance(node, Sum):
        if not node.terms:
            return f"md.zeros({_py_dims(node.shape)})"
        return _signed([(c, _py_coef(c) + _py_index(t, functions)) for c, t in node.terms],
                       "-", " - ", " + ")
    if isinstance(node, Elementwise) and node.fn.builtin:
        inner = _py_index(node.arg, functions)
        return f"({inner}) ** {node.fn.param!r}" if node.fn.name == "pow" else f"md.{node.fn.name}({inner})"
    if isinstance(node, Contract):
        names = {}
        for x in [x for lab in node.labels for x in lab]:
            names.setdefault(x, "abcdefghijklmnopqrstuvwxyz"[len(names) % 26])
        spec = ",".join("".join(names[x] for x in lab) for lab in node.labels) + "->" + \
            "".join(names[x] for x in node.out)
        ops = []
        for op in node.operands:
            if isinstance(op, Delta) and op.order > 2:
                return f"<{index_form(node)}>"  # δ_ijk has no constructor in the API
            m = recognise(op)
            ops.append(_py_index(op, functions) if isinstance(m, N.Index) else python_code(m, functions))
        return f"md.einsum({spec!r}, {', '.join(ops)})"
    return f"<{index_form(node)}>"


# --------------------------------------------------------------------------- bracket notation

SUBSCRIPT_DIGITS = str.maketrans("0123456789", SUBSCRIPTS)


def bracket(node: Node, style=TEXT) -> str:
    """The tutorial's bracket notation of a contraction: each axis of the result is a group
    of the operand axes it ties — ``[A₁ B₃]`` multiplies A's first axis entry-wise with B's
    third, a lone ``A₃`` carries A's third axis — written in the result's axis order, then
    the summed groups, which carry a bar (AᵀB is ``A₂B₂[A̅₁ B₁]``); I is the identity and 1
    the ones vector.  Raises NotSupportedError for what is not a contraction."""
    if isinstance(node, Sum):
        if not node.terms:
            return "0"
        fake = N.Add("s", tuple((c, N.Sym("s", bracket(t, style))) for c, t in node.terms))
        return _render(fake, style)[0]
    if isinstance(node, Frechet) and not isinstance(recognise(node), N.Index):  # L_f(X, E), a term
        node = Contract((node,), ((0, 1),), (0, 1))  # of a sum: one matrix, as a factor is written
    if not isinstance(node, Contract):
        raise NotSupportedError("bracket notation describes contractions (einsum, products, "
                                f"transposes); this expression is {type(node).__name__}")
    members: dict = {}
    written = _second_frechet_leaves(node)  # L²_f(X; E₁, E₂) for its 2 × 2 block matrices
    for op, lab in written:
        for axis, x in enumerate(lab):
            members.setdefault(x, []).append(_bracket_term(op, axis, style))
    summed = sorted({x for _, lab in written for x in lab} - set(node.out),
                    key=lambda x: sorted(members[x]))  # summed groups: a fixed order
    groups = []
    for x in list(node.out) + summed:
        terms = sorted(members[x])
        if x in summed:
            terms[0] = _overline(terms[0], style)
        groups.append(terms[0] if len(terms) == 1 else
                      ("\\left[" if _tex(style) else "[") + " ".join(terms) +
                      ("\\right]" if _tex(style) else "]"))
    return "".join(groups)


def _bracket_term(op, axis: int, style) -> str:
    if isinstance(op, Var):
        name = _name(op.name, style)
    elif isinstance(op, Delta):  # the identity, the ones vector, the diagonal tensor
        name = {1: style["one"], 2: "I"}.get(op.order, "\\delta" if _tex(style) else "δ")
    else:
        text = render(op if isinstance(op, N.M) else recognise(op), style)
        name = f"\\left({text}\\right)" if _tex(style) else f"({text})"
    return f"{name}_{{{axis + 1}}}" if _tex(style) else name + str(axis + 1).translate(SUBSCRIPT_DIGITS)


def _overline(term: str, style) -> str:
    if _tex(style):
        return f"\\overline{{{term}}}"
    return "".join(ch + ("" if ch in SUBSCRIPTS else "\u0305") for ch in term)


# --------------------------------------------------------------------------- the input dialects

NUMPY_TEXT = "\0numpy"  # a flag among python_code's renames: write for NumPy's 1-D arrays


def dialect_code(m: N.M, dialect: str) -> str:
    """The matrix notation as input of a text dialect ("matrixcalculus": x'*A*x, "numpy":
    x.T @ A @ x), to paste back; NotSupportedError names what the dialect cannot write."""
    if dialect == "numpy":
        text = python_code(_broadcast_ones(m), {NUMPY_TEXT: True})
        for bad, what in (("md.ones", "a ones vector"), ("md.zeros", "a zero"),
                          (".derivative(", "a derivative of an abstract function"),
                          (".gradient(", "∇λ"), (".hessian(", "∇²λ"), ("<", "index notation"),
                          ("md.unit(", "a unit vector eₖ"), ("'nuc'", "the nuclear norm"),
                          ("md.matrix_function(", "a matrix function f(X) other than expm, logm, sqrtm")):
            if bad in text:
                raise NotSupportedError(f"the NumPy dialect has no way to write {what}; use "
                                        f"the text or matrixcalculus form")
        text = re.sub(r"md\.matrix_power\(", "matrix_power(", text)
        if "matrix_power(" in text:
            raise NotSupportedError("the NumPy dialect has no matrix power; use the text form")
        return text.replace("md.", "")
    if dialect in ("matrixcalculus", "mc"):
        return _mc(m)[0]
    raise NotSupportedError(f"no text dialect {dialect!r}; use 'matrixcalculus' or 'numpy'")


def _is_one(m) -> bool:
    return isinstance(m, N.Sym) and m.role == "one"


def _broadcast_ones(m: N.M) -> N.M:
    """The ones the NumPy dialect writes otherwise: 1 − s as the scalar 1 broadcast, 1ᵀx as
    sum(x)."""
    if isinstance(m, N.Add):
        return N.Add(m.kind, tuple((c, N.Num("s", 1.0) if _is_one(t) else _broadcast_ones(t))
                                   for c, t in m.terms))
    if isinstance(m, N.Prod) and len(m.factors) == 2 and isinstance(m.factors[0], N.T) and \
            _is_one(m.factors[0].arg) and m.factors[1].kind == "c":
        return N.Call("s", "sum", _broadcast_ones(m.factors[1])) if m.coef == 1 else \
            N.Prod("s", m.coef, (N.Call("s", "sum", _broadcast_ones(m.factors[1])),))
    kids = N.children(m)
    if not kids:
        return m
    new = [_broadcast_ones(k) for k in kids]
    if all(a is b for a, b in zip(new, kids)):
        return m
    if isinstance(m, (N.Prod, N.Had, N.Kron)):
        return type(m)(m.kind, m.coef, tuple(new)) if isinstance(m, N.Prod) else type(m)(m.kind, tuple(new))
    return dataclasses.replace(m, arg=new[0])


def _mc_wrap(m, prec):
    text, p = _mc(m)
    return f"({text})" if p < prec else text


def _mc(m: N.M):
    if isinstance(m, N.Sym):
        if m.role == "var":
            return m.name, ATOM
        if m.role == "eye":  # sized: a lone or Kronecker factor's I has no use to size it
            return f"eye({_text_dim(m.dims[0])})", ATOM
        if m.role in ("one", "zero"):
            value = "1" if m.role == "one" else "0"
            return ({"c": f"vector({value})", "r": f"vector({value})'", "m": f"matrix({value})",
                     "s": value}[m.kind]), (ATOM if m.kind != "r" else POSTFIX)
        what = {"basis": "a unit vector", "commutation": "the commutation matrix K",
                "frechet": "a Fréchet derivative L_f(X, E)", "part": "a part of a decomposition",
                "frechet2": "a second Fréchet derivative L²_f(X; E₁, E₂)",
                "divdiff3": "second divided differences Δ²f(λ)[X, Y]"}.get(
            m.role, "the size of a dim")
        raise NotSupportedError(f"the matrixcalculus dialect cannot write {what}; use the text form")
    if isinstance(m, N.Num):
        text = _mc_number(abs(m.value))
        return (text if m.value >= 0 else "-" + text), (ATOM if m.value >= 0 else NEG)
    if isinstance(m, N.T):
        if isinstance(m.arg, N.Inv):
            return f"inv({_mc(m.arg.arg)[0]})'", POSTFIX
        return _mc_wrap(m.arg, POSTFIX + 1) + "'", POSTFIX
    if isinstance(m, N.Inv):
        return f"inv({_mc(m.arg)[0]})", ATOM
    if isinstance(m, N.MatPow):
        base = _mc_wrap(m.arg, ATOM) if m.k > 0 else f"inv({_mc(m.arg)[0]})"
        return f"{base}^{abs(m.k)}", POSTFIX
    if isinstance(m, N.Prod):
        body = "*".join(_mc_wrap(f, PROD + 1) for f in m.factors)
        if m.coef == 1:
            return body, PROD
        mag = "" if abs(m.coef) == 1 else _mc_number(abs(m.coef)) + "*"
        return ("-" if m.coef < 0 else "") + mag + body, (NEG if m.coef < 0 else PROD)
    if isinstance(m, N.Had):
        parts = []
        for i, f in enumerate(m.factors):
            if isinstance(f, N.Pow) and f.p < 0 and f.kind != "s":
                rest = f.arg if f.p == -1 else N.Pow(f.kind, f.arg, -f.p)
                parts.append((" ./ " if parts else "vector(1) ./ " if m.kind == "c" else "matrix(1) ./ ")
                             + _mc_wrap(rest, POSTFIX))
            else:  # .* binds as * does in the dialect: a product inside it is bracketed
                parts.append((" .* " if parts else "") + _mc_wrap(f, POSTFIX))
        return "".join(parts), HAD
    if isinstance(m, N.Kron):
        return f"kron({', '.join(_mc(f)[0] for f in m.factors)})", ATOM
    if isinstance(m, N.Add):
        pieces = [(c, ("" if abs(c) == 1 else _mc_number(abs(c)) + "*") +
                   _mc_wrap(t, PROD + 1 if abs(c) != 1 else ADD + 1)) for c, t in m.terms]
        return _signed(pieces, "-", " - ", " + "), ADD
    if isinstance(m, N.Pow):
        p = f"({_mc_number(m.p)})" if m.p < 0 or not float(m.p).is_integer() else _mc_number(m.p)
        if m.p == 0.5:
            return f"sqrt({_mc(m.arg)[0]})", ATOM
        return _mc_wrap(m.arg, POSTFIX + 1) + ("^" if m.kind == "s" else ".^") + p, POSTFIX
    if isinstance(m, N.Call):
        if m.order or isinstance(m.fn, ScalarFunction):
            raise NotSupportedError(f"the matrixcalculus dialect cannot write {m.name} with "
                                    f"derivatives (σ′, ∇λ); use the text form")
        arg = _mc(m.arg)[0]
        if m.name == "logdet":  # log|det X|: log(det(X)) would be NaN where det X < 0
            return f"logdet({arg})", ATOM
        if m.name == "norm":
            return f"norm2({arg})", ATOM
        if m.name in ("softmax", "logsumexp") and m.arg.kind == "m":
            raise NotSupportedError(f"the matrixcalculus dialect has no {m.name} along an axis")
        if m.name in NO_CONSTRUCTOR or m.name.startswith("Δ") or m.name in ("svdvals", "nuclear",
                                                                             "spectral") \
                or m.name.endswith("ₘ"):  # tanhₘ(X): no matrix function but expm, logm, sqrtm there
            raise NotSupportedError(f"the matrixcalculus dialect cannot write {m.name}(·); use the "
                                    f"text form")
        return f"{'phi' if m.name == 'Φ' else m.name}({arg})", ATOM
    raise NotSupportedError("the matrixcalculus dialect has no index notation; use the text form")


def _mc_number(c: float) -> str:
    if float(c).is_integer():
        return str(int(c))
    f = Fraction(c).limit_denominator(1000)
    return f"{f.numerator}/{f.denominator}" if float(f) == c else repr(float(c))
