"""Issue 13: matdiff in the NumPy, JAX and PyTorch world — argument order of compiled
functions, the command line's input and output formats, NumPy habits in the Python API."""
import inspect
import subprocess
import sys

import numpy as np
import pytest

import matdiff as md

X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
LOSS = md.sum(md.softplus(-y * (X @ w)))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((5, 3)), rng.standard_normal(3), np.sign(rng.standard_normal(5))


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_compiled_parameters_follow_first_appearance_or_args(backend):
    pytest.importorskip({"numpy": "numpy", "jax": "jax", "torch": "torch"}[backend])
    Xv, wv, yv = _data()
    want = np.logaddexp(0, -yv * (Xv @ wv)).sum()
    f = md.compile(LOSS, backend=backend)
    assert list(inspect.signature(f).parameters) == ["y", "X", "w"]  # −y ⊙ (Xw): y first
    np.testing.assert_allclose(float(f(yv, Xv, wv)), want, rtol=1e-6)
    g = md.compile([LOSS, md.grad(LOSS, w)], backend=backend, args=[w, X, y])
    assert list(inspect.signature(g).parameters) == ["w", "X", "y"]
    value, grad = g(wv, Xv, yv)
    np.testing.assert_allclose(float(value), want, rtol=1e-6)
    assert "def f(w, X, y):" in md.codegen(LOSS, backend=backend, args=["w", "X", "y"])


def test_args_must_list_every_variable_once():
    with pytest.raises(md.MatdiffError, match="leaves out y"):
        md.compile(LOSS, args=[w, X])
    with pytest.raises(md.MatdiffError, match="twice"):
        md.compile(LOSS, args=[w, X, y, w])
    with pytest.raises(md.MatdiffError, match="no variable"):
        md.compile(LOSS, args=[w, X, "z"])
    with pytest.raises(md.MatdiffError, match="not a variable"):
        md.compile(LOSS, args=[w, X, y, X @ w])
    extra = md.compile(md.grad(LOSS, w), args=[w, X, y, md.vector("b", "k")])  # extras allowed
    assert list(inspect.signature(extra).parameters) == ["w", "X", "y", "b"]
