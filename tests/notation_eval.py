"""An evaluator of printed matrix notation, independent of matdiff's own evaluator.

It reads the notation tree a result is printed from with NumPy's meaning of each symbol
(juxtaposition is the matrix product, ⊙ NumPy's *, 1 a ones array, …), so a test can
compare what is *printed* with what the engine computes."""
import numpy as np

from matdiff import dims as D
from matdiff import notation as N
from matdiff.functions import TABLE, Function, ScalarFunction


def _mul(a, ka, b, kb):
    if ka == "s" or kb == "s":
        return a * b
    if (ka, kb) == ("c", "r"):
        return np.outer(a, b)
    if (ka, kb) in (("r", "c"), ("m", "c"), ("r", "m"), ("m", "m")):
        return a @ b
    raise AssertionError(f"printed a product of a {ka} and a {kb}")


def evaluate(m, env, sizes, functions):
    ev = lambda x: evaluate(x, env, sizes, functions)  # noqa: E731
    if isinstance(m, N.Sym):
        shape = [D.resolve(d, sizes) for d in m.dims]
        if m.role == "dim":
            return float(shape[0])
        if m.role == "commutation":  # K_{p,q} vec(A) = vec(Aᵀ), vec stacking columns
            p, q = (D.resolve(d, sizes) for d in m.params)
            k = np.zeros((p * q, p * q))
            for i in range(p):
                for j in range(q):
                    k[i * q + j, j * p + i] = 1.0
            return k
        if m.role == "frechet":  # L_f(X, E): the top-right block of f([[X, E], [0, X]])
            import scipy.linalg
            fn, x, e = m.params
            x, e = np.asarray(ev(x), float), np.asarray(ev(e), float)
            k = len(x)
            f = {"exp": scipy.linalg.expm, "log": scipy.linalg.logm, "sqrt": scipy.linalg.sqrtm,
                 "sin": scipy.linalg.sinm, "cos": scipy.linalg.cosm, "tanh": scipy.linalg.tanhm}[fn]
            return np.real(f(np.block([[x, e], [np.zeros_like(x), x]])))[:k, k:]
        return {"var": lambda: env[m.name], "one": lambda: np.ones(shape),
                "eye": lambda: np.eye(shape[0]), "zero": lambda: np.zeros(shape)}[m.role]()
    if isinstance(m, N.Num):
        return m.value
    if isinstance(m, N.T):
        v = ev(m.arg)
        return v.T if np.ndim(v) == 2 else v
    if isinstance(m, N.Prod):
        val, kind = m.coef, "s"
        for f in m.factors:
            val = _mul(val, kind, ev(f), f.kind)
            kind = N._product_kind([kind, f.kind])
        return val
    if isinstance(m, N.Had):
        out = 1.0
        for f in m.factors:
            out = out * ev(f)
        return out
    if isinstance(m, N.Kron):  # a column is n × 1 and a row 1 × n in a Kronecker product
        shaped = [np.reshape(ev(f), {"c": (-1, 1), "r": (1, -1)}.get(f.kind, np.shape(ev(f))))
                  if m.kind == "m" else ev(f) for f in m.factors]
        out = shaped[0]
        for f in shaped[1:]:  # P ⊗ Q ⊗ R: every factor, not the first two
            out = np.kron(out, f)
        return out if m.kind == "m" else out.ravel()
    if isinstance(m, N.Add):
        return sum(c * ev(t) for c, t in m.terms)
    if isinstance(m, N.Inv):
        return np.linalg.inv(ev(m.arg))
    if isinstance(m, N.Pow):
        return np.power(ev(m.arg), m.p)
    if isinstance(m, N.MatPow):
        return np.linalg.matrix_power(ev(m.arg), m.k)
    if isinstance(m, N.Call):
        v = ev(m.arg)
        if isinstance(m.fn, (ScalarFunction, Function)) and not getattr(m.fn, "builtin", False):
            return np.asarray(functions[m.name][m.order](np.asarray(v)))
        simple = {"tr": np.trace, "det": np.linalg.det, "logdet": lambda x: np.linalg.slogdet(x)[1],
                  "diag": lambda x: np.diag(x), "norm": np.linalg.norm,
                  "svdvals": lambda x: np.linalg.svd(x, compute_uv=False),
                  "nuclear": lambda x: np.linalg.norm(x, "nuc"), "spectral": lambda x: np.linalg.norm(x, 2),
                  "eigvalsh": np.linalg.eigvalsh, "Q": lambda x: np.linalg.eigh(x)[1]}
        if m.name == "vec":
            return np.asarray(v).reshape(-1, order="F")
        if m.name in ("expm", "logm", "sqrtm"):
            import scipy.linalg
            simple[m.name] = getattr(scipy.linalg, m.name)
        if m.name in simple:
            return simple[m.name](v)
        if m.name in ("softmax", "logsumexp"):
            axis = m.axis if m.axis is not None else 0
            e = np.exp(v - v.max(axis=axis, keepdims=True))
            if m.name == "softmax":
                return e / e.sum(axis=axis, keepdims=True)
            return np.log(e.sum(axis=axis)) + v.max(axis=axis)
        return TABLE[m.name][0](v)
    raise AssertionError(f"cannot evaluate {type(m).__name__}")
