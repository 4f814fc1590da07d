"""What svcreg refuses a caller, as one hierarchy: each kind carries the HTTP status it is
answered with, a CamelCase ``code`` and a message; ``retry_after`` (seconds) where waiting
helps. Raised by authentication, authorization, admission and the routes alike, and turned
into a response in one place (``svcreg.discovery.http.serving.error_for``), as
``kube.errors`` maps the API server's answers and ``client.errors`` the client's."""

from __future__ import annotations

from typing import ClassVar


class Refusal(Exception):
    """A request refused; ``status`` is the HTTP status of the answer."""

    status: ClassVar[int] = 400

    def __init__(
        self, code: str, message: str, *, retry_after: float | None = None, parameter: str | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after, self.parameter = code, message, retry_after, parameter


class Invalid(Refusal):
    """What was sent is not acceptable as a whole; ``parameter`` names the part at fault."""

    status = 400


class Unauthenticated(Refusal):
    status = 401


class Forbidden(Refusal):
    status = 403


class NotFound(Refusal):
    status = 404


class MethodNotAllowed(Refusal):
    status = 405


class Conflict(Refusal):
    status = 409


class TooManyRequests(Refusal):
    """Over a rate or a cap: ``retry_after`` says when to try again."""

    status = 429


class Unavailable(Refusal):
    """A dependency (the API server, the operator) did not answer: retry."""

    status = 503
