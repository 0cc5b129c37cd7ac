"""Keep docs/architecture.md true: each module imports only what its row allows, and the
docs' runnable examples run."""
import ast
import doctest
from pathlib import Path

import pytest

import matdiff as md

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "errors": set(),
    "dims": {"errors"},
    "ir": {"dims", "errors"},
    "build": {"ir"},
    "functions": {"build", "ir"},
    "simplify": {"build", "dims", "errors", "functions", "ir"},
    "diff": {"build", "dims", "errors", "functions", "ir", "simplify"},
    "funm": set(),
    "evaluate": {"dims", "errors", "funm", "ir"},
    "show": {"dims", "ir"},
    "notation": {"ir"},
    "recognise": {"dims", "functions", "ir", "notation", "simplify"},
    "present": {"dims", "notation"},
    "printing": {"dims", "errors", "functions", "ir", "notation", "recognise", "show"},
    "expr": {"build", "dims", "errors", "evaluate", "functions", "ir", "notation", "present",
             "printing", "recognise", "show", "simplify"},
    "facts": {"build", "diff", "errors", "ir", "simplify"},
    "library": {"build", "diff", "dims", "errors", "evaluate", "expr", "facts", "functions", "ir",
                "notation", "simplify"},
    "tensors": {"build", "dims", "errors", "expr", "ir", "library"},
    "check": {"dims", "errors", "evaluate", "expr", "facts", "ir", "library"},
    "explicit": {"dims", "errors", "evaluate", "expr", "ir"},
    "sympy_io": {"dims", "errors", "expr", "library", "notation"},
    "syntax": {"errors"},
    "printed": {"functions", "syntax"},
    "dialects": {"library", "printed", "syntax"},
    "shapes": {"dialects", "dims", "errors", "syntax"},
    "parse": {"dialects", "dims", "errors", "expr", "functions", "ir", "library", "shapes", "syntax"},
    "emitters": {"funm"},
    "writer": {"emitters", "errors", "ir", "printing", "recognise", "show"},
    "plan": {"dims", "expr", "ir", "library", "simplify", "writer"},
    "spectral_code": {"errors", "evaluate", "ir", "show", "simplify", "writer"},
    "generate": {"dims", "emitters", "errors", "evaluate", "expr", "ir", "library", "plan", "simplify",
                 "spectral_code", "writer"},
    "cli": {"__init__", "check", "derivation", "errors", "library", "parse", "server", "service"},
    "service": {"check", "derivation", "errors", "expr", "generate", "library", "parse"},
    "server": {"errors", "service"},
    "derivation": {"build", "diff", "errors", "expr", "ir", "library", "present", "printing",
                   "recognise", "simplify"},
}
THIRD_PARTY = {"numpy", "opt_einsum", "sympy", "scipy",  # sympy and scipy: optional, imported when called
               "starlette", "uvicorn"}  # the web extra: server.py only, imported when serving


def _imports(path):
    tree = ast.parse(path.read_text())
    local, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                local.add(node.module.split(".")[0])
            else:  # from . import x: a module, or a name of the package's __init__
                local.update(a.name if (ROOT / "matdiff" / f"{a.name}.py").exists() else "__init__"
                             for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            external.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            external.update(a.name.split(".")[0] for a in node.names)
    return local, external


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_follow_the_architecture(module):
    local, external = _imports(ROOT / "matdiff" / f"{module}.py")
    assert local <= ALLOWED[module], f"{module} imports {local - ALLOWED[module]}"
    import sys
    stdlib = set(sys.stdlib_module_names)
    assert external - stdlib <= THIRD_PARTY
    if module not in ("explicit", "sympy_io"):  # SymPy, imported when called
        assert "sympy" not in external
    if module not in ("evaluate", "funm"):  # SciPy: expm of a general matrix, imported when evaluated
        assert "scipy" not in external
    if module != "server":  # the web extra
        assert not external & {"starlette", "uvicorn"}


def test_every_module_is_listed():
    modules = {p.stem for p in (ROOT / "matdiff").glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(ALLOWED)


@pytest.mark.parametrize("module", ["matdiff", "matdiff.expr", "matdiff.check", "matdiff.explicit",
                                    "matdiff.library", "matdiff.derivation", "matdiff.parse",
                                    "matdiff.generate"])
def test_docstring_examples_run(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs={"md": md}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize("doc", ["docs/conventions.md", "README.md", "docs/language.md", "docs/tensors.md",
                                 "docs/matrix-functions.md"])
def test_doc_examples_run(doc):
    result = doctest.testfile(str(ROOT / doc), module_relative=False)
    assert result.failed == 0 and result.attempted > 0
