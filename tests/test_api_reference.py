"""docs/api.md is generated from the docstrings (tools/api_reference.py) and kept current:
every export documented, every entry with a docstring."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "tools" / "api_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_reference_is_current():
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == _tool().render(), \
        "docs/api.md is stale: run python tools/api_reference.py"


def test_every_export_has_a_docstring():
    assert "(no docstring)" not in _tool().render()
