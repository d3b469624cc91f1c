"""The one error type the estimator raises for bad input."""

from __future__ import annotations


class EstimateError(ValueError):
    """Invalid input, naming the offending field (``field``) and why (``message``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
