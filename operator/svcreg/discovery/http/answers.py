"""Rendered answers, remembered by (normalised query, readable namespaces, index).

Identical requests (and identical long polls woken by one change) share one rendering. The
cache is bounded by bytes as well as entries, and keyed by the parsed query's canonical
spelling, so equivalent spellings of one query cannot each cost a full body.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from dataclasses import dataclass

from multidict import CIMultiDict


@dataclass(frozen=True)
class Answer:
    body: bytes
    etag: str
    headers: CIMultiDict[str]


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
