"""Shortcuts of recognising and printing small results (issue 24), each checked against the
reading it skips, on seeded random notation trees and the test table's results (whose
derivatives test_derivatives.py checks numerically): ``_powers`` where a product has no power,
inverse or run, ``_mirror`` without building transposes, the product reader's stop where one
factor over the result's labels is left, the text ``_named_subtrees`` wrote reused, the
notation an expression keeps, and the index form's layout read once for text and LaTeX."""
import random

import matdiff as md
from matdiff import notation as N
from matdiff import present
from matdiff import printing as P
from matdiff import recognise as R
from tests.cases import CASES

A, X = md.matrix("A", "n", "n"), md.matrix("X", "n", "n")


def _tree(rng, depth):
    """A random notation tree of kind m or c, rich in what the shortcuts skip: inverses,
    powers, equal neighbours, I, transposes of products, symmetric sums."""
    leaves = [N.Sym("m", "A"), N.Sym("m", "B"), N.Sym("m", "S", symmetric=True), N.Sym("m", "I", "eye"),
              N.Sym("m", "1", "one", dims=("n", "n"))]
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(leaves)
    a, b = _tree(rng, depth - 1), _tree(rng, depth - 1)
    pick = rng.randrange(9)
    if pick == 0:
        return N.transpose(a)
    if pick == 1:
        return N.Inv("m", a)
    if pick == 2:
        return N.MatPow("m", a, rng.choice([2, 3, -2]))
    if pick == 3:
        return N.add([(1.0, a), (rng.choice([1.0, -2.0]), b)])
    if pick == 4:
        return N.add([(1.0, a), (1.0, N.transpose(a))])
    return N.prod(rng.choice([1.0, 2.0]), [a, b] + ([a] if pick == 5 else []))


def _powers_slowly(mats):
    """``_powers`` as it read every product, run by run."""
    out, powers = [], False
    for m in mats:
        base, k = (m.arg, m.k) if type(m) is N.MatPow else (m, 1)
        if type(base) is N.Inv:
            base, k = base.arg, -k
        if out and base.kind == "m" and (out[-1][1] > 0) == (k > 0) and \
                not (type(base) is N.Sym and base.role != "var") and out[-1][0] == base:
            out[-1][1] += k
            powers = True
        else:
            out.append([base, k])
            powers = powers or k != 1
    if not powers:
        return [b for b, _ in out]
    return [b if k == 1 else N.Inv(b.kind, b) if k == -1 else N.MatPow(b.kind, b, k) for b, k in out]


def test_powers_and_mirrors_read_as_the_slow_readings():
    rng = random.Random(5)
    trees = [_tree(rng, 3) for _ in range(400)]
    runs = 0
    for _ in range(600):
        mats = [rng.choice(trees) for _ in range(rng.randrange(1, 5))]
        if rng.random() < 0.3:
            mats.append(mats[-1])  # a run: the same matrix again
        fast, slow = N._powers(list(mats)), _powers_slowly(list(mats))
        assert fast == slow
        # the same objects where the slow reading keeps them, new ones where it builds them
        assert [any(f is m for m in mats) for f in fast] == [any(s is m for m in mats) for s in slow]
        runs += len(slow) < len(mats)
    assert runs > 50
    small = trees + [N.Sym("c", "x"), N.Sym("s", "t"), N.Num("s", 2.0), N.Sym("m", "0", "zero"),
                     N.Inv("m", N.Sym("m", "A")), N.Call("c", "exp", N.Sym("c", "x")),
                     N.Call("s", "tr", N.Sym("m", "A")), N.Sym("c", "1", "one", dims=("n",)),
                     N.Add("m", ((2.0, N.Sym("m", "A")), (-2.0, N.Sym("m", "B")))),  # 2(A − B)
                     N.Add("m", ((1.0, N.Sym("m", "A")), (-1.0, N.Sym("m", "B"))))]
    joined = 0
    for _ in range(1500):  # prod's two-factor and product-again paths against its loop
        if rng.random() < 0.5:
            args = [rng.choice(small), rng.choice(small)]
            args[1] = rng.choice([args[1], args[0]])
        else:
            args = [N.prod(rng.choice([1.0, -1.0, 0.5]), [rng.choice(small) for _ in range(rng.randrange(1, 4))])]
        coef = rng.choice([1.0, -1.0, 2.0, 0.0])
        fast, slow = N.prod(coef, list(args)), N._prod_of(coef, list(args))
        assert fast == slow and type(fast) is type(slow)
        kept = [f for f in args + [x for a in args if type(a) is N.Prod for x in a.factors]]
        if type(slow) is N.Prod:
            assert [any(f is k for k in kept) for f in fast.factors] == \
                [any(f is k for k in kept) for f in slow.factors]
            joined += fast is not slow
        else:
            assert any(fast is k for k in kept) == any(slow is k for k in kept)
    assert joined > 500
    for _ in range(600):
        a, b = rng.choice(trees), rng.choice(trees)
        b = rng.choice([b, N.transpose(a), N._flip(a), a])
        assert N._mirror(a, b) == (a.kind == "s" or N.symmetric(a) if a is b else
                                   b == N._flip(a) or a == N._flip(b) or (a.kind == "s" and a == b))


def test_the_product_reader_stops_only_where_no_rule_is_left():
    """Where one factor over result labels (or none) is left, ``_merge_once`` finds no rule."""
    rng = random.Random(7)
    m = N.Sym("m", "A")
    for _ in range(300):
        out = rng.sample(range(4), rng.randrange(0, 3))
        labels = rng.sample(out, rng.randrange(0, len(out) + 1)) if out else []
        items = [R._Item(m, *(labels + [None, None])[:2])] if rng.random() < 0.8 else []
        scalars = []
        assert R._merge_once(items, scalars, out, {}, 9) is False
        assert not scalars and len(items) <= 1


def _results():
    for c in CASES[::2]:
        yield md.jacobian(c.f, c.wrt)
        if md.expr.lift(c.f).ndim == 0:
            yield md.hessian(c.f, c.wrt)


def test_text_laid_out_once_reads_as_text_laid_out_afresh():
    """The plain text ``_named_subtrees`` kept, and the index form's layout read by the text
    and reused by LaTeX, give what a fresh rendering gives."""
    reused = 0
    for d in _results():
        text, tex = str(d), d.latex()
        m = d.notation()
        if "_plain_text" in m.__dict__ and not P._named_subtrees(m) and "where" not in text:
            assert text == P._render(m, dict(P.TEXT, names={}))[0]
            reused += 1
        if isinstance(m, N.Index):  # no memo: the layout read afresh for each style
            for style, want in ((P.TEXT, text), (P.LATEX, tex)):
                if "where" not in want:
                    assert P.index_notation(m.node, style) == want
    assert reused >= 5


def test_an_expression_keeps_its_notation_only_for_what_it_was_made_of():
    e = md.expr.Expr((X + A).node)
    first = str(e)
    e.source = (A + X).node
    assert str(e) == "A + X" and e.latex() == "A + X"
    e.source = (X + A).node
    assert str(e) == "X + A"
    e.source = None
    assert str(e) == first
    present._CACHE.clear()
    R._CACHE.clear()
    assert str(e) == first
