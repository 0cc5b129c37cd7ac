"""The emitter tables of generated code: one per backend (``NUMPY``, ``JAX``, ``TORCH``),
and the source of the helper functions a generated module defines where its code calls
them.  The generator (the planner ``plan.py``, the spectral code writers
``spectral_code.py`` and the entry points ``generate.py``) decides what is computed and in
which order, and writes each step in NumPy's spelling; a table says how the backend spells it — its
imports, casts, dtypes, scatters, LU and Cholesky calls, element-wise functions, the
rewrites from NumPy's names to its own — so that adding a backend is adding a table.
Pure data: strings and dictionaries, no code that runs at generation time but
``funm.source`` (each backend's general-matrix functions).
"""
from __future__ import annotations

from . import funm

# PyTorch's fused softmax is one kernel, stable (it subtracts the row's maximum) and on a GPU
# always the faster; on the CPU (PyTorch 2.13, one thread) its float32 kernel is 2–3× faster
# than exp(Z − max Z) / Σ along 16 or more entries but 1.4–4× slower along fewer, and its
# float64 kernel 1.3–3.5× slower up to 50 entries: the helper chooses per call
TORCH_SOFTMAX = '''


def _softmax(x, dim):
    if not x.is_cpu or (x.dtype != torch.float64 and x.shape[dim] >= 16):
        return torch.softmax(x, dim)
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)'''
# Σ_p a[p, …] b[p, …] (tensordot over the first axis of both; the softmax cross-entropy's
# Hessian ZᵀZ for Z_p(ij) = X_pi S_pj): NumPy's np.tensordot spends several microseconds in
# Python before its matrix product (a tenth of a 0.15 ms Hessian at 200 × 20 × 5)
NUMPY_LEAD_DOT = '''


def _lead_dot(a, b):
    if a.size == 0 or b.size == 0:
        return np.tensordot(a, b, axes=(0, 0))
    return (a.reshape(a.shape[0], -1).T @ b.reshape(b.shape[0], -1)).reshape(a.shape[1:] + b.shape[1:])'''
# XLA on the CPU (JAX 0.10) multiplies float32 faster as the matrices the operands reshape to
# (3.7 ms against 4.3 ms for ZᵀZ at 1000 × 50 × 10), float64 faster as one dot_general over
# the operands' own axes (8.7 ms against 16.0 ms); the dtype is fixed when jit traces
JAX_LEAD_DOT = '''


def _lead_dot(a, b):
    if a.dtype == jnp.float64:
        return jnp.tensordot(a, b, axes=(0, 0))
    return (a.reshape(a.shape[0], -1).T @ b.reshape(b.shape[0], -1)).reshape(a.shape[1:] + b.shape[1:])'''
# σ(x)σ(−x) as NumPy's helper computes it (XLA fuses it: 0.6–0.7 of two sigmoids' time); in
# PyTorch, whose kernels do not fuse, two sigmoids and a product are as fast or faster
JAX_DSIGMOID = '''


def _dsigmoid(x):
    e = jnp.exp(-jnp.abs(x))
    return e / (1 + e) ** 2'''
# σ(x) and σ(−x) together (``plan._sigmoid_pairs``) from one logistic: t = σ(−|x|) is the
# smaller of the two, relatively accurate however small, and the larger is 1 − t, in [1/2, 1),
# where the subtraction loses nothing (the closed form's 1 − σ(u) is 0 past u ≈ 37).  Under jit
# XLA fuses the selects and the subtraction into the logistic's loop.  Its third value is their
# product σ(x)σ(−x) = t(1 − t), the slope σ′(x), without the selects (``plan._sigmoid_slopes``;
# under jit it is not computed where no line reads it).  A network's gradient at 8000×100×50×10
# took 0.85–0.90× the closed form's time in float64 and 1.01–1.03× in float32, against 1.07–1.13×
# and 1.07–1.12× with two sigmoids (docs/benchmarks.md).
JAX_SIGMOIDS = '''


def _sigmoids(x):
    up = x >= 0
    t = jax.nn.sigmoid(-jnp.abs(x))
    u = 1 - t
    return jnp.where(up, u, t), jnp.where(up, t, u), t * u'''
# The tie terms of a second derivative through eigenvectors (``_tie_branch``) run only where two
# eigenvalues are tied: under jit (a traced condition) lax.cond runs one branch; outside jit,
# where the condition is a value, Python's if does, as lax.cond would trace both branches
JAX_TIE_COND = '''


def _tie_cond(tied, with_ties, without):
    if isinstance(tied, jax.core.Tracer):
        return jax.lax.cond(tied, with_ties, without)
    return with_ties() if tied else without()'''
# Cholesky where the matrix is symmetric positive definite (declared spd, or XᵀX + λI): half
# LU's flops, and log det X = 2 Σ log Lᵢᵢ from the same factor; a matrix that is not positive
# definite raises, as np.linalg.cholesky does
TORCH_CHOLESKY = '''


def _cho_factor(a):
    factor, info = torch.linalg.cholesky_ex(a)
    if info.item():
        raise torch.linalg.LinAlgError("Matrix is not positive definite")
    return factor'''
TORCH_CHOLESKY_SOLVE = '''


def _cho_solve(f, b):
    if b.ndim > 1:
        return torch.cholesky_solve(b, f)
    return torch.cholesky_solve(b[:, None], f)[:, 0]'''
# L⁻¹b and L⁻ᵀb with a Cholesky factor L (lower triangular): a triangular solve
TORCH_TRIANGULAR = '''


def _tri_solve(a, b, trans):
    m = b if b.ndim > 1 else b[:, None]
    x = torch.linalg.solve_triangular(a.mT if trans else a, m, upper=bool(trans))
    return x if b.ndim > 1 else x[:, 0]'''
CHOLESKY = {  # (factorise, solve with factor {0} for {1}, inverse from {0} of {1}, log det from {0},
    # the factor from L = chol(S) = {0} where the results hold it: one factorisation serves both,
    # tr(S⁻¹) from {0} where S⁻¹ is read by nothing else, or None to take the trace of S⁻¹)
    "numpy": ("scipy.linalg.cho_factor({0}, check_finite=False)",
              "scipy.linalg.cho_solve({0}, {1}, check_finite=False)",
              "scipy.linalg.cho_solve({0}, np.eye({1}.shape[0]), check_finite=False)",
              "2.0 * np.log(np.diagonal({0}[0])).sum()", "({0}, True)", "_cho_inverse_trace({0})"),
    "jax": ("jax.scipy.linalg.cho_factor({0})", "jax.scipy.linalg.cho_solve({0}, {1})",
            "jax.scipy.linalg.cho_solve({0}, np.eye({1}.shape[0]))",
            "2.0 * np.log(np.diagonal({0}[0])).sum()", "({0}, True)",
            "np.square(jax.scipy.linalg.solve_triangular({0}[0], np.eye({0}[0].shape[0]), "
            "lower={0}[1])).sum()"),
    # PyTorch's cholesky_inverse (LAPACK's potri, S⁻¹ from L in 2n³/3) is 1.1–1.2× faster at
    # n = 400–1000 than ‖L⁻¹‖_F² by solve_triangular for I (n³; PyTorch has no trtri), though
    # 1.15× slower at n = 100: it is kept
    "torch": ("_cho_factor({0})", "_cho_solve({0}, {1})", "torch.cholesky_inverse({0})",
              "2.0 * np.log(np.diagonal({0})).sum()", "{0}", None),
}
# tr(S⁻¹) = ‖U⁻¹‖_F² for S = UᵀU (or LLᵀ), U⁻¹ by LAPACK's trtri in n³/3 flops where solving
# for I with the factor (cho_solve(F, I)) takes 2n³: 1.5–2× faster at n = 100–1000, and S⁻¹
# is never formed.  trtri leaves the other triangle as the factor's array had it (cho_factor
# does not zero it): that triangle is masked before the squares are summed
NUMPY_CHO_TRACE = '''


def _cho_inverse_trace(f):
    trtri, = scipy.linalg.get_lapack_funcs(("trtri",), (f[0],))
    r, info = trtri(f[0], lower=int(f[1]))
    r = np.tril(r) if f[1] else np.triu(r)
    return np.einsum("ij,ij->", r, r)'''

TRIANGULAR = {  # L⁻¹{1} (trans {2} = 0) or L⁻ᵀ{1} (1) for a lower-triangular L = {0}
    "numpy": "scipy.linalg.solve_triangular({0}, {1}, lower=True, trans={2}, check_finite=False)",
    "jax": "jax.scipy.linalg.solve_triangular({0}, {1}, lower=True, trans={2})",
    "torch": "_tri_solve({0}, {1}, {2})",
}


# One LU factorisation shared by the solves with one matrix (X⁻ᵀa and X⁻¹b in ∇aᵀX⁻¹b): an
# exactly singular matrix is refused as np.linalg.solve and np.linalg.inv refuse it
NUMPY_LU = '''


def _lu_inverse(f):
    if f[0].shape[0] > 560:  # past ~560, LAPACK's getri is slower than solving for I (2–4×
        # at n = 1000, float32 most): getrs with the identity, the same factors
        return scipy.linalg.lu_solve(f, np.eye(f[0].shape[0], dtype=f[0].dtype), check_finite=False)
    getri, = scipy.linalg.get_lapack_funcs(("getri",), (f[0],))
    inverse, info = getri(f[0], f[1])
    return inverse


def _lu_factor(a):
    getrf, = scipy.linalg.get_lapack_funcs(("getrf",), (a,))
    lu, pivots, info = getrf(a)
    if info:  # scipy.linalg.lu_factor would warn, and its solves give inf
        raise np.linalg.LinAlgError("Singular matrix")
    return lu, pivots'''
TORCH_LU = '''


def _lu_factor(a):
    lu, pivots, info = torch.linalg.lu_factor_ex(a)
    if info.item():
        raise torch.linalg.LinAlgError("Singular matrix")
    return lu, pivots


def _lu_solve(f, b, trans):
    if b.ndim > 1:
        return torch.linalg.lu_solve(f[0], f[1], b, adjoint=bool(trans))
    return torch.linalg.lu_solve(f[0], f[1], b[:, None], adjoint=bool(trans))[:, 0]


def _lu_inverse(f):
    eye = torch.eye(f[0].shape[0], dtype=f[0].dtype, device=f[0].device)
    return torch.linalg.lu_solve(f[0], f[1], eye)'''
# X⁻¹ from the LU factors jax.scipy.linalg.lu_factor gave: solving for I, a third faster than
# a second factorisation in jnp.linalg.inv
JAX_LU_INVERSE = '''


def _lu_inverse(f):
    return jax.scipy.linalg.lu_solve(f, jnp.identity(f[0].shape[0], f[0].dtype))'''
# X⁺ at full rank from one thin SVD X = UΣVᵀ, as evaluate takes it: a rank-deficient X (σ_min
# at or below max(n, k)·ε·σ_max) raises in NumPy and PyTorch and gives NaN under JAX's jit.
# X⁺ = VΣ⁻¹Uᵀ is formed only where a line reads it; X⁺b is V(Σ⁻¹(Uᵀb)) (``_pinv_step``)
RANK_MESSAGE = ("pinv of a rank-deficient matrix: matdiff takes X⁺ and its derivatives at full "
                "rank only, where the rank cannot jump")
NUMPY_PINV = f'''


def _pinv_factors(a):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    if not s[-1] > max(a.shape) * np.finfo(a.dtype).eps * s[0]:
        raise np.linalg.LinAlgError("{RANK_MESSAGE}")
    return u, s, vt'''
JAX_PINV = '''


def _pinv_factors(a):
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    full = s[-1] > max(a.shape) * jnp.finfo(a.dtype).eps * s[0]
    return u, jnp.where(full, s, jnp.nan), vt'''
# md.codegen's checks on f(X) of a general X: NumPy and PyTorch raise where it is not finite;
# JAX raises outside jit and gives NaN under it
NOT_FINITE = "; the compiled function returns no value silently"  # the checks' FloatingPointError
FINITE_VALUE = '''


def _finite_value(r, why):
    if not bool({module}.isfinite(r).all()):
        raise FloatingPointError(f"{{why}} in {{r.dtype}}''' + NOT_FINITE + '''")
    return r'''
JAX_FINITE_VALUE = '''


def _finite_value(r, why):
    finite = jnp.isfinite(r).all()
    if isinstance(finite, jax.core.Tracer):  # under jit: NaN, as no value can raise
        return jnp.where(finite, r, jnp.nan)
    if not bool(finite):
        raise FloatingPointError(f"{why} in {r.dtype}''' + NOT_FINITE + '''")
    return r'''
# DivDiff3Apply's close pairs in JAX, by offset d = |p − c| in the sorted eigenvalues: add(m, d)
# writes the pairs (p, p + d) and (p + d, p), n of each (n² work, O(n²) memory), and runs
# only for the offsets that hold a close pair (near): under jit a lax.scan over d = 1, …, n − 1
# with a lax.cond in each step, else a loop over those offsets alone
JAX_BY_OFFSETS = '''


def _by_offsets(add, m, near):
    n = near.shape[0]
    r = jnp.arange(n)
    gaps = jnp.abs(r[:, None] - r[None, :])
    if isinstance(near, jax.core.Tracer):
        held = jnp.zeros(n, jnp.int32).at[gaps].max(near.astype(jnp.int32))

        def step(m, dh):
            return jax.lax.cond(dh[1] > 0, add, lambda m, d: m, m, dh[0]), None
        return jax.lax.scan(step, m, (r[1:], held[1:]))[0]
    for d in sorted(set(gaps[near & (gaps > 0)].tolist())):
        m = add(m, d)
    return m'''
TORCH_PINV = f'''


def _pinv_factors(a):
    u, s, vt = torch.linalg.svd(a, full_matrices=False)
    if not (s[-1] > max(a.shape) * torch.finfo(a.dtype).eps * s[0]).item():
        raise torch.linalg.LinAlgError("{RANK_MESSAGE}")
    return u, s, vt'''


NUMPY = {"import": "import numpy as np", "module": "np",
         "cast": "np.asarray({p})", "scatter": "{full}[{index}] = {values}",
         "scatter_add": "{full}[{index}] += {values}",
         # integers and booleans become float64, as NumPy promotes them; floats keep theirs
         "floating": "{p} = {p} if {p}.dtype.kind == 'f' else {p}.astype(np.float64)",
         "dtype": "np.result_type({ps})", "default_dtype": "np.float64",
         "scalar": "np.asarray({p}, dtype=_dtype)",
         "rewrites": [(r"np\.asarray\(([-\d.e]+)\)", r"np.asarray(\1, dtype=_dtype)"),
                      (r"np\.(ones|zeros|eye)\(([^()]*(?:\([^()]*\))?[^()]*)\)",
                       r"np.\1(\2, dtype=_dtype)")],
         # SciPy's; outside the principal branch its answer is complex, which the caller sees
         "helpers": {"_lead_dot": NUMPY_LEAD_DOT, "_lu_factor": NUMPY_LU, "_pinv_factors": NUMPY_PINV,
                     "_cho_inverse_trace": NUMPY_CHO_TRACE,
                     "_finite_value": FINITE_VALUE.format(module="np")},
         # SciPy's LU, where SciPy is installed (else each solve factorises on its own)
         "lu": ("_lu_factor({0})", "scipy.linalg.lu_solve({0}, {1}, trans={2}, check_finite=False)"),
         "functions": {"__lead_dot": "_lead_dot({0}, {1})", "__dsigmoid": "_dsigmoid({})",
                       "__sigmoids": "_sigmoids({})",
                       # in float64 (SciPy's logm of a float32 X works in single precision,
                       # warns that it is inaccurate and answers complex), then in X's precision
                       "__logm": "_like(scipy.linalg.logm(_wide({0})), {0})",
                       # the block [[X, sE], [0, X]], E scaled to 10⁻³‖X‖ ({small} = s)
                       "__logm_frechet": "_like(scipy.linalg.logm(_wide(np.block([[{0}, {small} * {1}], "
                                         "[np.zeros_like({0}), {0}]])))"
                                         "[:{0}.shape[0], {0}.shape[0]:] / {small}, {0})",
                       "__sqrtm": "_like(scipy.linalg.sqrtm({0}), {0})",
                       "__sqrtm_frechet": "_like(scipy.linalg.solve_sylvester("
                                          "*[scipy.linalg.sqrtm({0})] * 2, {1}), {0})"}}

JAX = {"import": "import jax\nimport jax.numpy as jnp", "module": "jnp",
       "cast": "jnp.asarray({p})", "scatter": "{full} = {full}.at[{index}].set({values})",
       "scatter_add": "{full} = {full}.at[{index}].add({values})",
       "floating": "{p} = {p} if jnp.issubdtype({p}.dtype, jnp.floating) else {p}.astype(float)",
       "dtype": "jnp.result_type({ps})", "default_dtype": "float",
       "scalar": "jnp.asarray({p}, dtype=_dtype)",
       "rewrites": [(r"jnp\.asarray\(([-\d.e]+)\)", r"jnp.asarray(\1, dtype=_dtype)"),
                    (r"jnp\.(ones|zeros|eye)\(([^()]*(?:\([^()]*\))?[^()]*)\)",
                     r"jnp.\1(\2, dtype=_dtype)")],
       "helpers": {"_lead_dot": JAX_LEAD_DOT, "_dsigmoid": JAX_DSIGMOID, "_tie_cond": JAX_TIE_COND,
                   "_pinv_factors": JAX_PINV, "_by_offsets": JAX_BY_OFFSETS,
                   "_finite_value": JAX_FINITE_VALUE, "_lu_inverse": JAX_LU_INVERSE,
                   "_sigmoids": JAX_SIGMOIDS},
       "lu": ("jax.scipy.linalg.lu_factor({0})", "jax.scipy.linalg.lu_solve({0}, {1}, trans={2})"),
       "functions": {"sigmoid": "jax.nn.sigmoid({})", "softplus": "jax.nn.softplus({})",
                     "__lu_inverse": "_lu_inverse({0})",
                     "__lead_dot": "_lead_dot({0}, {1})", "__dsigmoid": "_dsigmoid({})",
                     "__sigmoids": "_sigmoids({})", "__sigmoids_slope": 2,
                     "__expm": "jax.scipy.linalg.expm({})",
                     "__expm_frechet": "jax.scipy.linalg.expm_frechet({0}, {1}, compute_expm=False)"},
       "distribute_transposes": True}

TORCH = {"import": "import torch", "module": "torch",
         "cast": "torch.as_tensor({p})",
         "floating": "{p} = {p} if {p}.is_floating_point() else {p}.to(torch.float64)",
         "dtype": "{promoted}", "default_dtype": "torch.float64",
         "scalar": "torch.as_tensor({p}, dtype=_dtype, device=_device)",
         "scatter": "{full}[{index}] = {values}", "scatter_add": "{full}[{index}] += {values}",
         "functions": {"sigmoid": "torch.sigmoid({})", "__lu_inverse": "_lu_inverse({0})",
                       "softplus": "torch.nn.functional.softplus({})",
                       "relu": "torch.clamp({}, min=0.0)", "step": "({0} > 0).to({0}.dtype)",
                       "__expm": "torch.linalg.matrix_exp({})",  # L(X, E): the block [[X, E], [0, X]]
                       # E scaled to X's size ({unit}), so that E does not set the
                       # scaling and squaring of the block (float32 lost 6% there)
                       "__expm_frechet": "torch.linalg.matrix_exp(torch.cat(["
                                         "torch.cat([{0}, {unit} * {1}], 1), "
                                         "torch.cat([torch.zeros_like({0}), {0}], 1)], 0))"
                                         "[:{0}.shape[0], {0}.shape[0]:] / {unit}",
                       "__softmax": "_softmax({0}, {1})"},
         # _cho_solve apart from _cho_factor: it may solve with the L that chol(S) computed
         "helpers": {"_cho_factor": TORCH_CHOLESKY, "_cho_solve": TORCH_CHOLESKY_SOLVE,
                     "_tri_solve": TORCH_TRIANGULAR,
                     "_softmax": TORCH_SOFTMAX, "_lu_factor": TORCH_LU, "_pinv_factors": TORCH_PINV,
                     "_finite_value": FINITE_VALUE.format(module="torch")},
         "lu": ("_lu_factor({0})", "_lu_solve({0}, {1}, {2})"),
         # NumPy's names and keywords in PyTorch's: (pattern, replacement), in order
         "rewrites": [
             (r", optimize=True", ""),
             (r", axes=\(\[", ", dims=(["),  # tensordot's keyword (no other call has axes=)
             (r"torch\.transpose\(", "torch.permute("),
             # a matrix's trace: torch.trace (0.8 µs) where torch.einsum spends 7 µs parsing
             (r"torch\.einsum\('([A-Za-z])\1->', (\w+)\)", r"torch.trace(\2)"),
             (r"torch\.power\(", "torch.pow("),
             (r"\.max\(axis=(-?\d+), keepdims=True\)", r".amax(dim=\1, keepdim=True)"),
             (r"torch\.asarray\(([-\d.e]+)\)", r"torch.tensor(\1, dtype=_dtype, device=_device)"),
             (r"torch\.(ones|zeros|eye)\(([^()]*(?:\([^()]*\))?[^()]*)\)",
              r"torch.\1(\2, dtype=_dtype, device=_device)"),
             (r"torch\.arange\(([^()]*(?:\([^()]*\))?[^()]*)\)",
              r"torch.arange(\1, device=_device)"),
         ]}

BACKENDS = {"numpy": NUMPY, "jax": JAX, "torch": TORCH}  # the backends differ only in these tables
for _backend, _table in BACKENDS.items():  # f(X) of a general matrix (funm): one helper for all
    _table.setdefault("helpers", {})["_matfun"] = "\n\n" + funm.source(_backend)
NUMPY_FUNCTIONS = {
    "exp": "np.exp({})", "log": "np.log({})", "sin": "np.sin({})", "cos": "np.cos({})",
    "tan": "np.tan({})", "tanh": "np.tanh({})", "sigmoid": "_sigmoid({})",
    "softplus": "np.logaddexp(0.0, {})", "relu": "np.maximum({}, 0.0)",
    "step": "np.heaviside({}, 0.0)", "abs": "np.abs({})", "sign": "np.sign({})",
    "sqrt": "np.sqrt({})", "cosh": "np.cosh({})", "sinh": "np.sinh({})",
    "log1p": "np.log1p({})", "expm1": "np.expm1({})", "arctan": "np.arctan({})",
    "__lu_inverse": "_lu_inverse({0})",  # X⁻¹ from X's LU factors ({0}); X is {1}
    "__expm": "_like(scipy.linalg.expm({0}), {0})",
    "__expm_frechet": "_like(scipy.linalg.expm_frechet({0}, {1}, compute_expm=False), {0})",
}


HELPERS = {  # functions a generated NumPy module defines where its code calls them
    # σ(x)σ(−x) = σ′(x) from one exponential: e / (1 + e)² for e = exp(−|x|) in (0, 1], which
    # never overflows and keeps the product's relative accuracy where σ(−x) is tiny (at
    # x = 40, 1 − σ(x) would be 0); half the time of two sigmoids and a product
    "_dsigmoid": '''


def _dsigmoid(x):
    e = np.abs(x)
    out = e if type(e) is np.ndarray else None
    e = np.negative(e, out=out)
    e = np.exp(e, out=out)
    d = e + 1.0
    d *= d
    return np.divide(e, d, out=out)''',
    "_sigmoid": '''


def _sigmoid(x):
    e = np.negative(x)
    out = e if type(e) is np.ndarray else None  # 1 / (1 + exp(−x)) in one buffer: same values
    with np.errstate(over="ignore"):  # exp(−x) is inf for x ≪ 0, and σ(x) = 0 as it should be
        e = np.exp(e, out=out)
    e += 1.0
    return np.reciprocal(e, out=out)''',
    # σ(x) and σ(−x) where the code needs both (σ(u) and the slope σ(u) ⊙ σ(−u) of a network's
    # gradient, ``_sigmoid_pairs``): one exponential, e = exp(−x), for both.  σ(x) = 1 / (1 + e)
    # as ``_sigmoid`` computes it; σ(−x) = e σ(x), a product of two relatively accurate factors,
    # keeps its relative accuracy where it is tiny (1 − σ(x) is 0 past x = 37).  Where e
    # overflows (x ≪ 0), σ(x) = 0 and e σ(x) is inf · 0: fmin takes the 1 that σ(−x) is.
    # NumPy's: under jit XLA's float64 exp costs more than its logistic (two sigmoids were
    # 1.2–1.4× faster; JAX has its own helper, one logistic), and PyTorch's one-pass sigmoid
    # kernel is as fast in float32
    "_sigmoids": '''


def _sigmoids(x):
    e = np.negative(x)
    out = e if type(e) is np.ndarray else None
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(e, out=out)
        s = e + 1.0
        s = np.reciprocal(s, out=s if out is not None else None)
        e = np.multiply(e, s, out=out)
    return s, np.fmin(e, 1.0, out=out)''',
    # a * b into a, where generated code knows that a is its own and read by nothing else
    # (``generate._in_place``): the same values, without a new array and its fresh pages
    "_mul_into": '''


def _mul_into(a, b):
    if type(a) is np.ndarray and type(b) is np.ndarray and a.shape == b.shape and a.dtype == b.dtype:
        return np.multiply(a, b, out=a)
    return a * b''',
    "_like": '''


def _like(result, x):
    # SciPy computes in float64: its answer in x's precision (complex stays complex)
    return result.astype(x.dtype) if result.dtype.kind == "f" else result''',
    "_wide": '''


def _wide(x):
    # x in float64 (complex128) at least, as SciPy's logm needs for a double-precision answer
    return np.asarray(x, dtype=np.promote_types(x.dtype, np.float64))''',
}
