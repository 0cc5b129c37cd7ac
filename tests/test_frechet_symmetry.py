"""Whether the direction V of a map V ↦ H[V] through Fréchet derivatives of a general matrix
function is symmetric (issue 21), decided cheaply and never wrongly.  Where simplify's
canonical order does not bring H's transpose in its last two axes to H itself, H is first
evaluated with each matrix function replaced by a random polynomial (NumPy products of
3 × 3-sized blocks: no SciPy, no logm of an n³-wide block); an asymmetry there is a no, and
only a symmetric stand-in is confirmed with the functions themselves."""
import numpy as np
import pytest

import matdiff as md
import matdiff.expr as E
from matdiff import notation as N
from matdiff.simplify import numerical_forms, simplify

from .test_frechet_printing import _read, _used

n = "n"
Y, B, V = md.matrix("Y", n, n), md.matrix("B", n, n), md.matrix("V", n, n)


def _point(seed=3):
    rng = np.random.default_rng(seed)
    return {"Y": 1.5 * np.eye(3) + 0.3 * rng.standard_normal((3, 3)), "B": rng.standard_normal((3, 3))}


def _symmetric_in_kl(h):
    return bool(np.allclose(h, np.swapaxes(h, 2, 3), rtol=1e-9, atol=1e-9 * np.abs(h).max()))


def _decided(monkeypatch, node, *, structural: bool):
    """_symmetric_in_last_two(node) from an empty cache, the structural test made to fail
    unless ``structural``; with the calls of the stand-in and of SciPy's evaluation counted."""
    calls = {"stand-in": 0, "evaluate": 0}
    stand_in, evaluate = E._with_polynomials, E.evaluate

    def counted(name, f):
        def call(*args, **kw):
            calls[name] += 1
            return f(*args, **kw)
        return call

    monkeypatch.setattr(E, "_SYMMETRIC_LAST_TWO", {})
    monkeypatch.setattr(E, "_with_polynomials", counted("stand-in", stand_in))
    monkeypatch.setattr(E, "evaluate", counted("evaluate", evaluate))
    if not structural:
        monkeypatch.setattr(E, "simplify", lambda x: x)  # Hᵀ⁽ᵏˡ⁾ left as built: never H's own node
    answer = E._symmetric_in_last_two(node)
    monkeypatch.undo()
    return answer, calls


def test_a_map_that_is_not_symmetric_is_decided_without_evaluating_the_functions(monkeypatch):
    """H[V] = L²_exp(Yᵀ; Bᵀ, Vᵀ), the Hessian of tr(expm(Y)B): H_ijkl ≠ H_ijlk at a point
    (the printed map read at a general V is H[V], and central differences of the gradient);
    the stand-in alone says no, and SciPy never runs."""
    f = md.trace(md.expm(Y) @ B)
    hess = md.hessian(f, Y)
    values = _point()
    h = hess.evaluate(_used(hess, values))
    assert not _symmetric_in_kl(h)
    answer, calls = _decided(monkeypatch, simplify(hess.node), structural=False)
    assert answer is False and calls == {"stand-in": 1, "evaluate": 0}
    letter, m = hess._linear_map()
    assert not any(isinstance(x, N.Sym) and x.name == letter and x.symmetric for x in E._leaves(m))
    direction = np.random.default_rng(4).standard_normal((3, 3))
    want = np.einsum("ijkl,kl->ij", h, direction)
    np.testing.assert_allclose(_read(m, {**values, letter: direction}, monkeypatch), want, rtol=1e-7, atol=1e-9)
    g, step = md.grad(f, Y), 1e-5
    up = g.evaluate(_used(g, {**values, "Y": values["Y"] + step * direction}))
    down = g.evaluate(_used(g, {**values, "Y": values["Y"] - step * direction}))
    np.testing.assert_allclose(want, (up - down) / (2 * step), rtol=1e-6, atol=1e-8)


def test_a_symmetric_map_is_confirmed_with_the_functions_themselves(monkeypatch):
    """H[V] = L_exp(B(Y + Yᵀ), B(V + Vᵀ)), the Jacobian of expm(B(Y + Yᵀ)): H_ijkl = H_ijlk;
    with the structural test made to fail the stand-in says yes and the evaluation with expm
    confirms it.  Printed, V is symmetric, and the map read at a symmetric V is H[V]."""
    F = md.expm(B @ (Y + Y.T))
    jac = md.jacobian(F, Y)
    values = _point()
    h = jac.evaluate(_used(jac, values))
    assert _symmetric_in_kl(h)
    node = simplify(jac.node)
    answer, calls = _decided(monkeypatch, node, structural=False)
    assert answer is True and calls["stand-in"] == 1 and calls["evaluate"] == 2
    assert _decided(monkeypatch, node, structural=True) == (True, {"stand-in": 0, "evaluate": 0})
    letter, m = jac._linear_map()
    assert any(isinstance(x, N.Sym) and x.name == letter and x.symmetric for x in E._leaves(m))
    q = np.random.default_rng(4).standard_normal((3, 3))
    direction = q + q.T
    want = np.einsum("ijkl,kl->ij", h, direction)
    np.testing.assert_allclose(_read(m, {**values, letter: direction}, monkeypatch), want, rtol=1e-7, atol=1e-9)
    step = 1e-5
    up = F.evaluate(_used(F, {**values, "Y": values["Y"] + step * direction}))
    down = F.evaluate(_used(F, {**values, "Y": values["Y"] - step * direction}))
    np.testing.assert_allclose(want, (up - down) / (2 * step), rtol=1e-6, atol=1e-8)


def test_a_symmetric_stand_in_does_not_decide_alone(monkeypatch):
    """Were the stand-in's H symmetric where the functions' H is not (here it is made all
    zeros), the evaluation with the functions still says no: the stand-in can only save work."""
    node = simplify(md.hessian(md.trace(md.expm(Y) @ B), Y).node)
    monkeypatch.setattr(E, "_with_polynomials", lambda form, *a, **k: np.zeros((3, 3, 3, 3)))
    answer, calls = _decided(monkeypatch, node, structural=False)
    assert answer is False and calls["stand-in"] == 1 and calls["evaluate"] >= 1


def test_the_stand_ins_frechet_derivative_is_its_polynomials_derivative():
    """The stand-in's L_p(Y, V) (in the Jacobian of expm(Y)B by Y, applied to V) is the
    central difference of its p(Y)B along V: the stand-in H is a derivative of one function."""
    values = _point()
    direction = np.random.default_rng(5).standard_normal((3, 3))
    F = md.expm(Y) @ B
    jac = md.jacobian(F, Y)

    def stand_in(e, y):
        form = numerical_forms(simplify(e.node))
        return E._with_polynomials(form, {**values, "Y": y}, {"n": 3}, np.random.default_rng(7))

    applied = np.einsum("ijkl,kl->ij", stand_in(jac, values["Y"]), direction)
    step = 1e-5
    central = (stand_in(F, values["Y"] + step * direction) - stand_in(F, values["Y"] - step * direction)) / (2 * step)
    np.testing.assert_allclose(applied, central, rtol=1e-7, atol=1e-9)
    assert not np.allclose(applied, np.einsum("ijkl,kl->ij", jac.evaluate(_used(jac, values)), direction), rtol=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_map_with_a_rectangular_direction_is_never_symmetric(seed):
    """H_…kl = H_…lk has no meaning for an m × n direction, though all dims are 3 at the points
    evaluated: no."""
    X = md.matrix("X", "m", "k")
    node = simplify(md.jacobian(md.expm(X @ X.T), X).node)
    assert node.shape[-2:] == ("m", "k")
    assert E._symmetric_in_last_two(node) is False
