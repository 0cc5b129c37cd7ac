import os
import sys
import tempfile

from hypothesis import settings

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# JAX compiles every operation it runs for each shape and dtype, some 30 ms each on a CPU, and
# the reference derivatives (jax.grad, jax.hessian) and the generated JAX code of these tests
# meet the same operations again and again: a compilation cache on disk lets the parallel
# workers (and later runs) share them.  Cached programs are keyed by their HLO, JAX's version
# and the machine, so a hit computes exactly what a fresh compilation would.  Set before JAX
# is imported; a cache the environment names already is kept.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "matdiff-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_configure(config):
    """Where the environment asks Python not to write bytecode (PYTHONDONTWRITEBYTECODE), each
    process that imports matdiff compiles its modules from source, some 0.25 s of CPU: the
    parallel workers and every ``python -m matdiff`` the command-line tests run.  The first
    process (not an xdist worker) compiles the package once into its ``__pycache__``
    (git-ignored), which Python reads however the variable is set."""
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):
        import compileall
        import importlib.util

        for where in importlib.util.find_spec("matdiff").submodule_search_locations:
            compileall.compile_dir(where, quiet=2)
