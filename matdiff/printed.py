"""The matdiff dialect: a reader of matdiff's own printed text (``str(expr)``).

Printed text multiplies by juxtaposition (XW is X times W, split by the known names),
writes ᵀ, ⁻¹, ⊙, ⊘, ⊗, σ′, ∇λ, ‖x‖ and "where" definitions, and a 1, 0 or I that takes
the shape its use gives it.  The operators and their binding powers are the dialect's table
(``dialects.MATDIFF``); this reader extends the Pratt parser of ``syntax.py`` with the rest.
"""
from __future__ import annotations

import re

from .functions import (GREEK, LETTER_SUBSCRIPTS, MATRIX_FUNCTION_NAMES,  # noqa: F401 (dialects)
                        PRINTED_FUNCTIONS, SUBSCRIPTS, UNSUBSCRIPT)
from .syntax import KIND_WORDS, Decl, Node, ParseError, Parser, Tok

SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
PRINTED_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<op>⁻ᵀ|⁻¹(?![⁰¹²³⁴⁵⁶⁷⁸⁹])|\^∘|\^\(|‖_F|‖_\*|‖₂|[ᵀ⁺⊙⊘⊗·√∇|‖+\-−/(),=])
  | (?P<sup>⁻?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)
  | (?P<primes>[′″‴]+)
  | (?P<name>[A-Za-zα-ωΑ-Ω_][A-Za-z0-9_α-ω]*ₘ?)
""", re.VERBOSE)
GREEK_NAMES = {letter: name for name, letter in GREEK.items()}  # σ → sigma, Σ → Sigma
# the subscript of a unit vector e₁, e₁₂, eₙ (the last of n), e_(n−1) (printing: Basis.subscript)
UNIT_SUBSCRIPT = re.compile(rf"[{SUBSCRIPTS}]+|[{''.join(LETTER_SUBSCRIPTS.values())}]|_\(([^)]*)\)")


NORMS = {"‖": "norm", "‖_F": "norm", "‖_*": "nuclear", "‖₂": "spectral"}  # ‖x‖, ‖X‖_F, ‖X‖_*, ‖X‖₂
# L_exp(X, E), printed for a Fréchet derivative (of any general matrix function)
FRECHET = re.compile(r"L_(exp|log|sqrt|sin|cos|tan|tanh|sinh|cosh|sigmoid|softplus|log1p|expm1|arctan)")
# L²_exp(X; E₁, E₂), printed for a second Fréchet derivative (docs/matrix-functions.md)
FRECHET2 = re.compile(r"L²_(" + FRECHET.pattern[3:-1] + r")\(")


def unit_index(sub: str):
    """A unit vector's subscript as (dim or None, index from 0, negative from the end):
    ₃ → (None, 2), ₙ → ("n", −1), _(n−2) → ("n", −3)."""
    if sub[0] in SUBSCRIPTS:
        k = int("".join(UNSUBSCRIPT[c] for c in sub))
        return (None, k - 1) if k >= 1 else None
    if sub in LETTER_SUBSCRIPTS.values():
        return UNSUBSCRIPT[sub], -1
    inner = sub[2:-1]
    if re.fullmatch(r"[1-9][0-9]*", inner):
        return None, int(inner) - 1
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:−([1-9][0-9]*))?", inner)
    if m is None:
        return None  # not a subscript printing writes
    return m.group(1), -1 - int(m.group(2) or 0)



def _superscript(text: str) -> int:
    digits = "".join(str(SUPERSCRIPTS.index(c)) for c in text if c in SUPERSCRIPTS)
    return -int(digits) if text.startswith("⁻") else int(digits)


class PrintedParser(Parser):
    """Reads matdiff's own text output: juxtaposition, ᵀ, ⁻¹, ⊙, ⊘, ⊗, σ′, ∇λ, 1, I, …

    Names are split by the known variables and functions (XW is X times W); a printed 1
    or 0 takes the shape its use gives it.
    """

    IMPLICIT = 20  # juxtaposition (XW) binds as · does in the dialect's table

    def __init__(self, text, dialect, variables: set, functions: set, definitions: dict,
                 sizes=frozenset()):
        self.text, self.dialect, self.depth, self.i = text, dialect, 0, 0
        self.infix, self.postfix = dialect.infix, dialect.postfix
        self.variables, self.fns, self.definitions = variables, functions | PRINTED_FUNCTIONS, definitions
        self.sizes = set(sizes) - variables - set(definitions) - functions  # dims read as sizes: n
        self.known = variables | set(definitions) | functions | self.sizes
        self.numeric = self.bars = self.norms = 0
        self.toks = self.tokenize(text)

    def tokenize(self, text):
        out, pos = [], 0
        while pos < len(text):
            m = PRINTED_TOKEN.match(text, pos)
            if m is None:
                raise ParseError(f"unexpected character {text[pos]!r}", text, pos)
            kind, word = m.lastgroup, m.group()
            end = m.end()
            if kind == "name" and word == "L" and FRECHET2.match(text, pos):
                raise ParseError("L²_f(X; E₁, E₂) is a second Fréchet derivative, which no expression "
                                 "builds: this text is for reading only. Differentiate the function "
                                 "itself, or read its index form (Expr.index)", text, pos)
            if kind == "name" and FRECHET.fullmatch(word) and text[end:end + 1] == "(":
                raise ParseError(f"{word}(X, E) is a Fréchet derivative, which no expression builds: "
                                 f"this text is for reading only. Differentiate the function itself, "
                                 f"or read its index form (Expr.index)", text, pos)
            if kind == "name" and word.endswith("ₘ") and text[end:end + 1] == "(":
                toks = self.split(word, m.start())  # fₘ(S)  where f(u) = u³: a defined function
                if toks[-1].text in self.fns and toks[-1].text not in PRINTED_FUNCTIONS:
                    out.extend(toks)
                    pos = end
                    continue
                self.undefined_matrix_function(word, m.start())
            if kind == "name" and word.endswith("ₘ") and word[:-1].endswith("e"):
                word, end = word[:-1], end - 1  # eₘ: the last unit vector of m, not e as a function
            if kind == "name" and word.endswith("e_") and text[end:end + 1] == "(":
                word, end = word[:-1], end - 1  # e_(n−1)
            sub = UNIT_SUBSCRIPT.match(text, end) if kind == "name" and word.endswith("e") else None
            if sub is not None and unit_index(sub.group()) is None:
                raise ParseError(f"e{sub.group()} is not a unit vector's subscript (e₁, eₙ, e_(n−1))",
                                 text, end - 1)
            if sub is not None and (word == "e" or "e" not in self.known):  # e₁, eₙ, Xeₙ, e_(n−1)
                out.extend(self.split(word[:-1], m.start()) if len(word) > 1 else [])
                out.append(Tok("unit", sub.group(), end - 1))
                pos = sub.end()
                continue
            if kind == "name" and text[m.end():].lstrip().startswith("="):
                out.append(Tok("name", word, m.start()))  # axis=1: a keyword, not x·i·s
            elif kind == "name" and word.endswith("ₘ"):  # tanhₘ: one name, after what precedes it
                toks = self.split(word[:-1], m.start())
                out.extend(toks[:-1] + [Tok("name", toks[-1].text + "ₘ", toks[-1].col)])
            elif kind == "name":
                out.extend(self.split(word, m.start()))
            elif kind != "space":
                out.append(Tok(kind, {"−": "-"}.get(word, word), m.start()))
            pos = m.end()
        out.append(Tok("end", "", len(text)))
        return out

    def undefined_matrix_function(self, word, col):
        """A ParseError for fₘ(…) where f is no function the reader knows and the text does not
        define it (md.matrix_function's Python callables print fₘ(S)  where f(u) = u³): never
        read as a variable fₘ times S. Xeₘ(…), the last unit vector of m, passes."""
        head = self.split(word[:-1], col)
        if head[-1].text + "ₘ" in self.fns or head[-1].text == "e" and "e" not in self.known and \
                all(t.text in self.known or t.kind != "name" for t in head[:-1]):
            return
        base = word[:-1]
        raise ParseError(f"{word}(·) is the matrix function of {base}, which this text does not "
                         f"define (as in {word}(S)  where {base}(u) = u³): this text is for reading "
                         f"only", self.text, col)

    def split(self, word, col):
        """XW → X, W: the reading with the fewest unknown names, then the fewest pieces
        (trelu(t) is t·relu(t), not tr·e·l·u); an unknown name is one letter and its digits,
        digits alone are a number (X1: X times the ones vector)."""
        words = self.known | PRINTED_FUNCTIONS
        best = [(0, 0, [])] + [None] * len(word)  # best[i]: (unknown, pieces, tokens) of word[:i]
        for i in range(len(word)):
            if best[i] is None:
                continue
            unknown, pieces, toks = best[i]
            options = [(w, "name", 0) for w in words if word.startswith(w, i)]
            j = i + 1
            while j < len(word) and word[j].isdigit():
                j += 1
            if word[i].isdigit():
                options.append((word[i:j], "number", 0))
            elif not any(w == word[i:j] for w, _, _ in options):
                options.append((word[i:j], "name", 1))
            for text, kind, cost in options:
                k = i + len(text)
                cand = (unknown + cost, pieces + 1, toks + [Tok(kind, text, col + i)])
                if best[k] is None or cand[:2] < best[k][:2]:
                    best[k] = cand
        return best[len(word)][2]

    def starts_atom(self, tok) -> bool:
        return tok.kind in ("number", "name", "unit") or tok.text in ("(", "√", "∇", "|") or \
            (tok.text == "‖" and not self.norms)

    def expression(self, min_bp: int) -> Node:
        left = self.enter()
        while True:
            tok = self.peek()
            post = self.postfix.get(tok.text)
            if post is not None or tok.kind == "sup":  # ᵀ, ⁻¹, ⁻ᵀ bind before any operator
                self.take()
                left = Node(post[1] if post is not None else "sup", tok.col, [left],
                            value=_superscript(tok.text) if tok.kind == "sup" else None)
                continue
            bp = self.infix.get(tok.text)
            if bp is None and self.starts_atom(tok) and (tok.text != "|" or not self.bars):
                if self.IMPLICIT < min_bp:
                    break
                left = Node("@mc", tok.col, [left, self.expression(self.IMPLICIT + 1)], value="·")
                continue
            if bp is None or bp[0] < min_bp:
                break
            self.take()
            if tok.text == "^(":  # an exponent is a number: its 1 is not a ones vector
                self.numeric += 1
                right = self.expression(0)
                self.numeric -= 1
                self.expect(")")
            else:
                right = self.expression(bp[1])
            left = Node(bp[2], tok.col, [left, right], value=tok.text)
        self.depth -= 1
        return left

    def prefix(self) -> Node:
        tok = self.peek()
        t = self.toks[self.i:self.i + 5]
        if len(t) == 5 and [x.text for x in t[::2]] == ["(", "/", ")"] and \
                t[1].kind == t[3].kind == "number":  # (1/2): a coefficient, never a ones vector
            self.i += 5
            return Node("num", tok.col, value=float(t[1].text) / float(t[3].text))
        if tok.text == "√":
            self.take()
            return Node("call", tok.col, [self.expression(self.IMPLICIT + 1)], "sqrt")
        if tok.text == "|":  # within bars, a | closes them (the printer writes abs(x) there)
            self.take()
            self.bars += 1
            inner = self.expression(0)
            self.bars -= 1
            self.expect("|")
            return Node("call", tok.col, [inner], "abs")
        if tok.text == "‖":  # ‖x‖, ‖X‖_F
            self.take()
            self.norms += 1
            inner = self.expression(0)
            self.norms -= 1
            end = self.take()
            if end.text not in NORMS:
                raise ParseError("a norm ‖…‖ is not closed", self.text, end.col)
            return Node("call", tok.col, [inner], NORMS[end.text])

        if tok.kind == "unit":
            self.take()
            return Node("unit", tok.col, value=unit_index(tok.text))
        if tok.text == "∇":
            self.take()
            order = _superscript(self.take().text) if self.peek().kind == "sup" else 1
            name = self.take()
            if name.kind != "name":
                raise ParseError("∇ needs a function name, as in ∇λ(X)", self.text, name.col)
            node = self.call(name)
            node.kwargs["__order"] = order
            return node
        if tok.kind == "number" and tok.text == "11" and not self.numeric and \
                self.toks[self.i + 1].text == "ᵀ" and self.toks[self.i + 1].col == tok.col + 2:
            # 11ᵀ, printed for the ones vector times the ones row as the Matrix Cookbook
            # writes it (76): a numeral followed by ᵀ, which as a scalar would be meaningless,
            # is 1·1ᵀ; 11 alone, 11 ᵀ apart, or in an exponent stays eleven
            self.toks[self.i] = Tok("number", "1", tok.col + 1)
            return Node("ones", tok.col)
        if tok.kind == "number" and tok.text in ("1", "0") and not self.numeric:
            self.take()
            return Node("ones" if tok.text == "1" else "zeros", tok.col)
        if tok.kind == "name" and tok.text == "I" and "I" not in self.known:
            self.take()
            return Node("eye", tok.col)
        nxt = self.toks[min(self.i + 1, len(self.toks) - 1)]
        after = self.toks[min(self.i + 2, len(self.toks) - 1)]
        if tok.kind == "name" and tok.text in self.fns and (  # cos²(x) and σ′(x) are calls;
                nxt.kind in ("primes", "sup") and after.text == "(" or nxt.text == "(" or  # cos²·x is not
                (tok.text == "log" and nxt.text == "det")):
            self.take()
            if tok.text == "log" and self.peek().text == "det":  # log det(X)
                self.take()
                tok = Tok("name", "logdet", tok.col)
            mark = self.take() if self.peek().kind in ("primes", "sup") else None
            node = self.call(tok)
            if mark is not None and mark.kind == "primes":
                node.kwargs["__order"] = sum({"′": 1, "″": 2, "‴": 3}[c] for c in mark.text)
            elif mark is not None:  # tanh²(A): the function's power, entry-wise
                power = Node("sup", mark.col, [node], value=_superscript(mark.text))
                power.kwargs["__entrywise"] = True
                return power
            return node
        if tok.kind == "name":
            self.take()
            if tok.text in self.definitions:
                return self.definitions[tok.text]
            if tok.text in self.sizes:
                return Node("size", tok.col, value=tok.text)
            return Node("var", tok.col, value=tok.text)
        return super().prefix()


class _Definitions(dict):
    """The "where" names of printed text, each parsed when first used: a definition may
    use one listed after it (α = relu(β), β = sin(t))."""

    def __init__(self, bodies, dialect, variables, functions):
        super().__init__()
        self.bodies, self.dialect, self.open = bodies, dialect, set()
        self.variables, self.functions = variables, functions

    def __contains__(self, name):
        return name in self.bodies

    def __iter__(self):
        return iter(self.bodies)

    def __len__(self):
        return len(self.bodies)

    def __getitem__(self, name):
        if not dict.__contains__(self, name):
            if name in self.open:
                raise ParseError(f"the definition of {name} uses itself", self.bodies[name], 0)
            self.open.add(name)
            dict.__setitem__(self, name, PrintedParser(self.bodies[name], self.dialect, self.variables,
                                                       self.functions, self, self.sizes).parse())
            self.open.discard(name)
        return dict.__getitem__(self, name)


# the "where" clauses that name a decomposition's parts (printing._textbook): display only
DECOMPOSITIONS = {"UΛUᵀ": "its eigenvectors U and eigenvalues λ", "UΣVᵀ": "its singular vectors U, V "
                  "and singular values σ"}


FUNCTION_DEFINITION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(([A-Za-z])\)")  # f(u), of "f(u) = u³"


def read(text: str, dialect, decls: dict) -> Node:
    """The syntax tree of matdiff's text output, its "  where s = …" definitions included."""
    main, _, where = text.partition("  where ")
    variables = {n for n, d in decls.items() if d.kind in KIND_WORDS}
    variables |= {g for g, n in GREEK_NAMES.items() if n in variables}
    functions = {n for n, d in decls.items() if d.kind not in KIND_WORDS and d.kind != "dim"}
    functions |= {g for g, n in GREEK_NAMES.items() if n in functions}
    bodies, defined = {}, {}
    for part in filter(None, (p.strip() for p in re.split(r",\s(?=\S+ = )", where))):
        name, _, body = part.partition(" = ")
        if body.strip() in DECOMPOSITIONS:
            raise ParseError(f"{part} names the parts of a decomposition ({DECOMPOSITIONS[body.strip()]}), "
                             f"which no expression builds: this text is for reading only. Differentiate "
                             f"the function itself, or read its index form (Expr.index)",
                             text, text.index(part))
        head = FUNCTION_DEFINITION.fullmatch(name.strip())
        if head is not None:  # f(u) = u³, the function of fₘ(S)
            defined[head.group(1)] = (head.group(2), body, text.index(part) + len(name) + 3)
            continue
        bodies[name.strip()] = body
    for fname, definition in defined.items():  # (decls: this parse's own, which parse.Builder
        decls[fname + "ₘ"] = Decl("matrix_function", definition=definition)  # reads: _build_defined)
        functions.add(fname + "ₘ")
    if "↦" in main:  # V ↦ H[V]: a Hessian or Jacobian written as the linear map it applies
        raise ParseError(f"{main[:main.index('↦')].strip()} ↦ … is a linear map (a Hessian or Jacobian "
                         f"applied to a direction), which no expression builds: this text is for reading "
                         f"only. Use md.hvp for its value at a direction, or read its index form "
                         f"(Expr.index)", text, text.index("↦"))
    definitions = _Definitions(bodies, dialect, variables, functions)
    definitions.sizes = {x for d in decls.values() if d.kind in KIND_WORDS for x in (d.dims or ())
                         if isinstance(x, str) and x.isidentifier()}
    definitions.sizes |= {n for n, d in decls.items() if d.kind == "dim"}
    tree = PrintedParser(main, dialect, variables, functions, definitions, definitions.sizes).parse()
    stack = [tree]
    while stack:  # Greek letters back to the names they print
        n = stack.pop()
        if n.op == "var" and n.value in GREEK_NAMES and GREEK_NAMES[n.value] in variables:
            n.value = GREEK_NAMES[n.value]
        if n.op == "call" and n.value in GREEK_NAMES and GREEK_NAMES[n.value] in functions:
            n.value = GREEK_NAMES[n.value]
        stack.extend(n.args)
    return tree
