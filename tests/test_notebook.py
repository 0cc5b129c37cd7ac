"""docs/tutorial.ipynb runs from top to bottom (nbclient, a fresh kernel), its results are
the formulas the docs promise, and lists of results display typeset."""
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]


def test_the_tutorial_notebook_runs_and_shows_the_formulas():
    nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            text.append(out.get("text", ""))
            text.extend(str(v) for v in out.get("data", {}).values())
    shown = "\n".join(text)
    for formula in ["2 X^\\top \\left(X w - y\\right)", "−Xᵀ(y ⊙ σ(−(y ⊙ Xw)))", "Xᵀ(∇λ(σ(XW)) ⊙ σ′(XW))",
                    "diag(s) − ssᵀ  where s = softmax(x)", "I ⊗ X", "\\left(", "(3, 3)"]:
        assert formula in shown, formula


def test_a_list_of_results_displays_typeset_in_ipython():
    IPython = pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    import importlib

    import matdiff as md
    shell = InteractiveShell.instance()
    try:
        importlib.reload(md)  # registers its formatters in the running shell
        x, A = md.vector("x", "n"), md.matrix("A", "n", "n")
        data, _ = shell.display_formatter.format([md.grad(x.T @ A @ x, x), md.hessian(x.T @ A @ x, x)])
        assert data["text/latex"].startswith("$$\\left[") and "A^\\top" in data["text/latex"]
        data, _ = shell.display_formatter.format([1, 2])
        assert "text/latex" not in data
    finally:
        InteractiveShell.clear_instance()
        assert IPython
