"""Errors about input, shared by every package that parses what callers send."""

from __future__ import annotations


class BadParameter(ValueError):
    """A query parameter or body field is wrong; ``parameter`` names it (answered as a 400)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message
