"""Step-by-step derivations by differentials, as in the Tomassoli tutorial.

``derivation(f, X)`` starts from d f and applies one differential rule per step to every
differential still open — d(u) of a subexpression u becomes the rule's expression in the
differentials of u's operands — until only dX is left; it then moves dX out, writing the
result as ⟨G, dX⟩, and concludes ∇_X f = G.  The rules are the engine's (``diff.RULES``),
so each line is exactly what the engine computes.
"""
from __future__ import annotations

from . import build as B
from .diff import RULES
from .errors import MatdiffError, NotSupportedError
from .ir import Var, free_vars
from .present import simplest
from .printing import FREE, LATEX, TEXT, index_notation, render
from .recognise import recognise
from .simplify import simplify


class Derivation:
    """The lines of a derivation: ``steps`` (IR nodes linear in differentials), the gradient,
    and how to show each differential.  ``str`` and ``latex()`` print it."""

    def __init__(self, f, x: Var, steps: list, gradient, holes: dict):
        self.f, self.x, self.steps, self.gradient, self.holes = f, x, steps, gradient, holes

    def _display(self, style):
        out = {}
        for name, u in self.holes.items():
            if u.ndim > 2:  # a tensor's differential at the indices index notation reads it at:
                # dT_pqr, d(T_pqr²)
                out[name] = _tensor_differential(u, style)
                continue
            inner = render(simplest(recognise(u)), style)
            if style is TEXT:
                out[name] = f"d{inner}" if isinstance(u, Var) else f"d({inner})"
            else:
                out[name] = (f"\\mathrm{{d}}{inner}" if isinstance(u, Var)
                             else f"\\mathrm{{d}}\\left({inner}\\right)")
        return out

    def lines(self, style=TEXT) -> list:
        display = self._display(style)
        shown = [render(_chosen(recognise(s)), style, display=display) for s in self.steps]
        dx = display[_hole_name(0)]
        if callable(dx):  # a tensor's differential, at the free indices its gradient is written at
            dx = dx(list(FREE[:self.x.ndim]))
        taken = {v.name for v in free_vars(self.f.node) if hasattr(v, "name")}
        g = render(simplest(recognise(self.gradient)), style, taken)  # as str(grad(f, X)) is
        where = "  where " if style is TEXT else " \\quad\\text{where } "
        main, sep, defs = g.partition(where)  # the names are defined after ⟨·, dX⟩, not in it
        if style is TEXT:
            pairing = f"⟨{main}, {dx}⟩" if self.x.ndim else f"{main} {dx}"
            name = f"∇_{self.x.name}"
        else:
            pairing = (f"\\left\\langle {main}, {dx} \\right\\rangle" if self.x.ndim
                       else f"{main}\\, {dx}")
            name = f"\\nabla_{{{self.x.name}}}"
        return shown + [pairing + sep + defs, name + " = " + g]

    def __str__(self):
        head, *steps, conclusion = self.lines(TEXT)  # steps end with ⟨∇f, dX⟩
        pad = " " * len(head)
        body = [f"{head} = {steps[0]}"] + [f"{pad} = {step}" for step in steps[1:]]
        return "\n".join(body + [f"⇒ {conclusion}"])

    def latex(self) -> str:
        lines = self.lines(LATEX)
        rows = [f"{lines[0]} &= {lines[1]}"] + [f"&= {line}" for line in lines[2:-1]]
        return "\\begin{aligned}" + " \\\\\n".join(rows) + \
            f" \\\\\n&\\implies {lines[-1]}\\end{{aligned}}"

    def _repr_latex_(self):
        return f"$${self.latex()}$$"

    def __repr__(self):
        return str(self)


def _tensor_differential(u, style):
    """The text of d(u) for a tensor u at given index letters (``printing._factor`` calls it
    with them): dT_pqr for a variable, d(entry) for an expression, its entry in index notation."""
    d = "\\mathrm{d}" if style is not TEXT else "d"

    def shown(letters):
        if isinstance(u, Var):
            return d + index_notation(u, style, list(letters), nested=True)
        entry = index_notation(u, style, list(letters), nested=True)
        return f"{d}\\left({entry}\\right)" if style is not TEXT else f"{d}({entry})"
    return shown


def _chosen(m):
    """A step as the presentation algebra writes it: ‖Xw − y‖⁻¹, not ((Xw − y)ᵀ(Xw − y))^(−1/2)."""
    return simplest(m)


def _hole_name(k: int) -> str:
    return f"__d{k}"


def derivation(f, x) -> Derivation:
    """The derivation of ∇ₓf by differentials, one rule per step.

    >>> a, X, b = md.vector("a", "n"), md.matrix("X", "n", "n"), md.vector("b", "n")
    >>> print(md.derivation(a.T @ X @ b, X))
    d(aᵀXb) = aᵀ dX b
            = ⟨abᵀ, dX⟩
    ⇒ ∇_X = abᵀ
    """
    from .expr import lift
    from .library import _variable, grad

    f = lift(f)
    var = _variable(x, "derivation")
    if f.ndim != 0:
        raise NotSupportedError(f"derivation({f.src}, …): derivations are shown for scalar "
                                f"functions; {f.src} is {f.describe_shape()}")
    if var not in free_vars(f.node):
        raise MatdiffError(f"derivation: {f.src} does not depend on {var.name}")
    root = simplify(f.node)
    holes, nodes = {}, {}

    def hole(u):
        if u not in nodes:
            name = _hole_name(0) if u is var else _hole_name(len(nodes) + 1)
            nodes[u] = Var(name, u.shape, False)
            holes[name] = u
        return nodes[u]

    hole(var)
    current = hole(root)
    steps = [current]
    if var not in free_vars(root):  # a*0: f simplifies to a constant, d f = 0 in one step
        steps.append(B.zeros(()))
        return Derivation(f, var, steps, grad(f, x).node, holes)
    for _ in range(200):
        open_ = [u for u in holes.values() if u is not var and nodes[u] in free_vars(current)]
        if not open_:
            break
        expansion = {}
        for u in open_:  # d(u) = Σₖ rule(u, k, d(childₖ))
            parts = [RULES[type(u)](u, k, hole(c)) for k, c in enumerate(u.children)
                     if var in free_vars(c)]
            expansion[nodes[u]] = parts[0] if len(parts) == 1 else B.add(*parts)
        current = simplify(_substitute(current, expansion))
        steps.append(current)
    return Derivation(f, var, steps, grad(f, x).node, holes)


def _substitute(node, mapping):
    """node with the placeholder variables in ``mapping`` replaced."""
    memo = {}

    def go(n):
        if n in mapping:
            return mapping[n]
        if n in memo:
            return memo[n]
        if not (free_vars(n) & mapping.keys()):
            memo[n] = n
            return n
        memo[n] = n.with_children([go(c) for c in n.children])
        return memo[n]

    return go(node)
