"""The exceptions matdiff raises. Every user mistake is a ``MatdiffError``."""
import unicodedata


WINDOW = 70  # characters of input shown either side of the caret


def with_caret(message: str, text: str, column: int) -> str:
    """The message, then the input text with a caret under ``column``: tabs and control
    characters (ESC, a right-to-left override) shown as one visible character each, so
    nothing reaches the terminal raw and the caret stays under its column; a long input
    is shown as a window around the column."""
    shown = "".join(_visible(c) for c in text)
    start = max(0, column - WINDOW)
    end = min(len(shown), column + WINDOW)
    head, tail = ("…" if start else ""), ("…" if end < len(shown) else "")
    return f"{message}\n  {head}{shown[start:end]}{tail}\n  {' ' * (len(head) + column - start)}^"


def _visible(c: str) -> str:
    if c == "\t":
        return " "
    if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp"):
        return "\ufffd"  # one column, where the character itself would act on the terminal
    return c


class MatdiffError(Exception):
    """Base class of every error matdiff raises for a user mistake."""


class ShapeError(MatdiffError, ValueError):
    """Operands whose shapes do not fit the operation, or arrays that do not fit their variables."""


class NotSupportedError(MatdiffError, NotImplementedError):
    """An operation or derivative matdiff cannot do (rather than answer wrongly)."""


class EvaluationError(MatdiffError, ValueError):
    """Values given to ``evaluate`` that are missing, unknown or invalid for their variable."""


class CheckError(MatdiffError, AssertionError):
    """A symbolic derivative disagreed with its numeric estimate in ``md.check``."""


class UncheckableError(MatdiffError):
    """``md.check`` found no point where a numeric check means anything (every random point
    it drew made a matrix singular or the expression not finite); nothing disagreed."""


class ParseNote(UserWarning):
    """A reading of text input that is valid but may not be what was meant (a scalar added to
    every entry of a vector whose kind came from its name): the command line prints it on
    standard error, the JSON API returns it under "notes"."""
