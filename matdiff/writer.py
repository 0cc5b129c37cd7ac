"""The generated code's writer: ``_Writer`` collects a function's lines, each code written
once as a numbered name and commented with its matrix notation (``_comment``), and the small
helpers that the planner (``plan.py``), the spectral code writers (``spectral_code.py``) and
the entry points (``generate.py``) share: an element-wise function's code and the name a
user's function is called by.
"""
from __future__ import annotations

import functools
import re
import string
import unicodedata

from .emitters import NUMPY_FUNCTIONS
from .errors import NotSupportedError
from .ir import Elementwise, Node, free_vars, walk
from .printing import TEXT, render
from .recognise import recognise
from .show import index_form

LETTERS = string.ascii_letters
SCATTER = "    <scatter{op} {full}|{index}|{values}>"  # a backend's way to write or add entries


class _Writer:
    def __init__(self, sizes_hint: dict, functions: dict):
        self.lines, self.count, self.hint, self.written = [], 0, sizes_hint, {}
        self.prefix = "t"  # codegen picks another where a variable is named like t1
        self.code_of: dict = {}  # name → its code, for terms written inline
        self.uses: dict = {}
        self.sigmoid_pairs: dict = {}  # σ(u) and σ(−u) computed together (``_sigmoid_pairs``)
        self.symmetric: set = set()  # names of symmetric matrices (Gram products)
        # sums written without the coefficient all their terms share (2(a − b) as a − b):
        # every product that reads one applies that factor itself (``_contract``)
        self.common: dict = {}
        self.inlined: set = set()  # sums a product is distributed over (``_product``)
        # diagonal outputs a sum adds onto its other terms (``_sum_onto``), and the array
        # that the one being lowered adds into (None: zeros, its own)
        self.folded: set = set()
        self.into: str | None = None
        self.functions = {**NUMPY_FUNCTIONS, **functions}  # the backend's element-wise ones
        # inverses a product may use as solves: the inverse's name → the matrix's; how many
        # products read each Inv node; the backend's (factorise, solve) templates, or None
        self.inverses: dict = {}
        self.inverse_uses: dict = {}
        self.pinvs: dict = {}  # X⁺'s name → the name of X's thin SVD (``_pinv_step``)
        # sums of inverses (and outer products) that only products read
        # (``plan._sums_of_inverses``), applied as sums of solves: the sum's name →
        # [(coefficient, the inverse's name or the outer product's (u, v) names, "inverse",
        # "transposed" or "outer")]
        self.inverse_sums: dict = {}
        self.lu: tuple | None = None
        self.shared_lu: set = set()  # matrices whose log-determinant and inverse share one LU
        # Cholesky instead of LU for the symmetric positive-definite matrices (``spd``, nodes)
        # that are inverted, solved with or under a log det; triangular solves with a Cholesky
        # factor: the backend's templates (CHOLESKY, TRIANGULAR), or None
        self.cho: tuple | None = None
        self.tri: str | None = None
        self.spd: set = set()
        self.cholesky: dict = {}  # S → chol(S) where the results hold it and S is in ``spd``
        self.checks = False  # md.codegen's checks: f(X) of a general X that is not finite refused

    def fresh(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"

    def emit(self, code: str, comment: str = "", pure: bool = True) -> str:
        """A line ``tN = code``; code already written (pure) is not written twice, and a
        bare name is not copied."""
        if code.isidentifier():
            return code
        if pure and code in self.written:
            return self.written[code]
        name = self.fresh()
        self.lines.append(f"    {name} = {code}" + (f"  # {comment}" if comment else ""))
        if pure:
            self.written[code] = name
            self.code_of[name] = code
        return name

    def live_lines(self, results: list) -> tuple:
        """The lines that the results need (a matrix sum that was distributed leaves its
        transposes unused), numbered afresh, and the results' new names."""
        name = re.compile(rf"\b{self.prefix}\d+\b")
        assigned = re.compile(rf"\s*({self.prefix}\d+) = ")
        used, kept = set(results), []
        for line in reversed(self.lines):
            m = assigned.match(line)
            if m and m.group(1) not in used:
                continue
            used.update(name.findall(line.partition("  # ")[0]))
            kept.append(line)
        new: dict = {}
        for line in reversed(kept):
            m = assigned.match(line)
            if m and m.group(1) not in new:  # a name the tie branch assigns in both arms: one number
                new[m.group(1)] = f"{self.prefix}{len(new) + 1}"

        def rename(text):
            return name.sub(lambda m: new.get(m.group(0), m.group(0)), text)

        lines = []
        for line in reversed(kept):
            code, hash_, comment = line.partition("  # ")
            lines.append(rename(code) + hash_ + comment)
        return lines, [rename(r) for r in results]


COMMENT_REFERENCES = 200  # larger intermediates are commented from their index form, cut short


def _references_over(node: Node, limit: int) -> bool:
    """Whether the DAG below node holds more than ``limit`` operand references."""
    total = 0
    for n in walk(node):
        total += len(n.children)
        if total > limit:
            return True
    return False


@functools.lru_cache(maxsize=8192)
def _comment(node: Node) -> str:
    """A line's comment: the node's matrix notation (nodes are immutable and hash-consed, so
    the three backends' code for one expression share it)."""
    try:  # the notation of a large intermediate costs more than the 70 characters shown
        text = index_form(node, 80) if _references_over(node, COMMENT_REFERENCES) else \
            render(recognise(node), TEXT, {v.name for v in free_vars(node) if hasattr(v, "name")})
    except Exception:  # noqa: BLE001 - a comment must never stop code generation
        text = index_form(node, 80)
    text = text if "\n" not in text else text.splitlines()[0]
    return text if len(text) <= 70 else text[:69] + "…"


def _elementwise(w: _Writer, n: Elementwise, a: str) -> str:
    fn = n.fn
    if fn.builtin and fn.name == "pow":
        p = fn.param
        return {2.0: f"{a} * {a}", -1.0: f"1.0 / {a}", 0.5: f"np.sqrt({a})"}.get(p, f"{a} ** {p!r}")
    if fn.builtin:
        return w.functions[fn.name].format(a)
    if fn.numpy is not None and (fn.order == 0 or not callable(fn.numpy) and fn.order < len(fn.numpy)):
        # a user's function (or f′, f″, … of its list [f, f′, f″, …]): compile() supplies it
        return f"{user_function_name(fn)}({a})"
    raise NotSupportedError(f"codegen: {fn} is abstract; give it values (md.function(..., numpy=…)) "
                            f"before generating code")


def user_function_name(fn) -> str:
    """The name generated code calls a user's function by: _ and its name as Python reads it
    (NFKC: md.function("ｇ") is called as _g, and looked up under that name); its k-th
    derivative, the list's entry numpy=[f, f′, f″, …][k], as _g_dk."""
    return "_" + unicodedata.normalize("NFKC", fn.name) + (f"_d{fn.order}" if fn.order else "")
