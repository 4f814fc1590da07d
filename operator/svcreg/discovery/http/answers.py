"""Rendered answers, remembered by (normalised query, readable namespaces, index).

Identical requests (and identical long polls woken by one change) share one rendering. The
cache is bounded by bytes as well as entries, and keyed by the parsed query's canonical
spelling, so equivalent spellings of one query cannot each cost a full body.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from multidict import CIMultiDict


class Wire(NamedTuple):
    """An answer's status line and headers as aiohttp writes them (``svcreg.discovery.http.front``
    adds ``Date``, ``Server`` and any ``X-Request-Id``)."""

    head: bytes  # "HTTP/1.1 200 OK" and the answer's headers
    not_modified: bytes  # "HTTP/1.1 304 Not Modified" and the same headers but Content-Type
    length: bytes  # the Content-Length line


@dataclass(frozen=True)
class Answer:
    body: bytes
    etag: str
    headers: CIMultiDict[str]

    @cached_property
    def wire(self) -> Wire:
        """Encoded on first use and kept with the answer (the cache bounds both)."""
        lines = [f"{name}: {value}\r\n" for name, value in self.headers.items()]
        unchanged = [
            f"{name}: {value}\r\n" for name, value in self.headers.items() if name.lower() != "content-type"
        ]
        return Wire(
            f"HTTP/1.1 200 OK\r\n{''.join(lines)}".encode(),
            f"HTTP/1.1 304 Not Modified\r\n{''.join(unchanged)}".encode(),
            f"Content-Length: {len(self.body)}\r\n".encode(),
        )


class AnswerCache:
    def __init__(self, *, max_bytes: int = 64 * 1024 * 1024, max_entries: int = 512) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._answers: collections.OrderedDict[Hashable, Answer] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: Hashable) -> Answer | None:
        return self._answers.get(key)

    def put(self, key: Hashable, answer: Answer) -> None:
        """Remember ``answer``, evicting the oldest until both bounds hold. An answer larger
        than the whole budget is served but not kept."""
        if len(answer.body) > self.max_bytes:
            return
        previous = self._answers.pop(key, None)
        if previous is not None:
            self.bytes -= len(previous.body)
        self._answers[key] = answer
        self.bytes += len(answer.body)
        while self.bytes > self.max_bytes or len(self._answers) > self.max_entries:
            _, evicted = self._answers.popitem(last=False)
            self.bytes -= len(evicted.body)
