"""The exceptions matdiff raises. Every user mistake is a ``MatdiffError``."""


def with_caret(message: str, text: str, column: int) -> str:
    """The message, then the input text with a caret under ``column``."""
    return f"{message}\n  {text}\n  {' ' * column}^"


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
