"""What the printers memoise on a notation tree (text and LaTeX of one result read one
analysis of it) equals what the walks it stands for give, and a name the text chooses still
avoids the user's variables, which are found only where a name is chosen. (The table's
derivatives are checked numerically in test_derivatives.py.)"""
import matdiff as md
from matdiff import notation as N
from matdiff import present, recognise
from matdiff import printing as P
from tests.cases import CASES


def _results():
    for c in CASES[::3]:
        yield md.jacobian(c.f, c.wrt)
        if md.expr.lift(c.f).ndim == 0:
            yield md.hessian(c.f, c.wrt)


def _subtrees(m):
    seen, stack = {}, [m]
    while stack:
        x = stack.pop()
        if id(x) not in seen:
            seen[id(x)] = x
            stack.extend(N.children(x))
    return seen


def test_the_one_walk_counts_each_subtree_as_occurrences_does():
    checked = 0
    for d in _results():
        m = d.notation()
        known = P._scan(m)[4]
        if known is None:
            continue
        counts, shared = known
        assert counts == N.occurrences(m)
        nodes = _subtrees(m)
        assert shared == any(k >= 2 and N.children(nodes[i]) for i, k in counts.items())
        checked += 1
    assert checked >= 40


def test_text_and_latex_are_the_same_printed_again_and_from_a_fresh_tree():
    for d in list(_results())[:30]:
        text, tex = str(d), d.latex()
        assert (str(d), d.latex()) == (text, tex)
        again = md.expr.Expr(d.node)  # no source: its own tree, printed without the memo of d's
        again.source, again.wrt = d.source, d.wrt
        recognise._CACHE.clear()
        present._CACHE.clear()
        assert (str(again), again.latex()) == (text, tex)


def test_input_order_is_memoised_for_its_own_source():
    A, X = md.matrix("A", "n", "n"), md.matrix("X", "n", "n")
    first, second = md.logdet(A + X), md.logdet(X + A)
    m = md.grad(first, X).notation()
    texts = [P.render(P.in_input_order(m, f.node), P.TEXT) for f in (first, second, first)]
    assert texts == ["(A + X)⁻ᵀ", "(X + A)⁻ᵀ", "(A + X)⁻ᵀ"]
    assert md.check(first, X, kinds={"X": "spd", "A": "spd"}) < 1e-6


def test_a_repeated_subterm_is_named_apart_from_the_variables():
    s, x = md.vector("s", "n"), md.vector("x", "n")
    assert md.check(md.softmax(s), s) < 1e-6
    assert str(md.jacobian(md.softmax(x), x)) == "diag(s) − ssᵀ  where s = softmax(x)"
    assert str(md.jacobian(md.softmax(s), s)) == "diag(u) − uuᵀ  where u = softmax(s)"
    assert md.jacobian(md.softmax(s), s).latex() == \
        r"\operatorname{diag}\left(u\right) - u u^\top \quad\text{where } u = \operatorname{softmax}\left(s\right)"
