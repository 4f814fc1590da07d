"""ServiceAccount token authentication as an ``httpx.Auth`` flow, shared by both clients.

The token is fixed (``token=`` or ``SVCREG_TOKEN``) or read from a file (``SVCREG_TOKEN_FILE``,
by default the pod's mounted ServiceAccount token) and re-read when the file changes: the
kubelet rotates projected tokens by swapping a symlink, which moves the path's mtime.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import httpx

TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class ServiceAccountAuth(httpx.Auth):
    def __init__(self, token: str | None = None, token_file: str | os.PathLike[str] | None = None) -> None:
        self._fixed = token or os.environ.get("SVCREG_TOKEN") or None
        self._file = Path(token_file or os.environ.get("SVCREG_TOKEN_FILE") or TOKEN_FILE)
        self._cached: tuple[float, str] | None = None

    def token(self) -> str | None:
        """The current token, or None when there is none to send."""
        if self._fixed:
            return self._fixed
        try:
            mtime = self._file.stat().st_mtime
        except OSError:
            return None
        if self._cached is None or self._cached[0] != mtime:
            self._cached = (mtime, self._file.read_text().strip())
        return self._cached[1]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request
