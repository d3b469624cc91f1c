"""The one error type the estimator raises for bad input."""

from __future__ import annotations


class EstimateError(ValueError):
    """Invalid input, naming the offending field (``field``) and why (``message``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class UnknownIdError(EstimateError):
    """A catalog id that does not exist; ``suggestions`` are the closest ids."""

    def __init__(self, kind: str, key: str, suggestions: list[str]):
        self.kind = kind
        self.key = key
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else f"; see `tunefit {kind}s`"
        super().__init__(kind, f"unknown {kind} id {key!r}{hint}")
