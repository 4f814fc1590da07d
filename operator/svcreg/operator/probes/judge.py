"""Judging a contract's answer against its ``outputSchema``, off the event loop, within a deadline.

Both the schema and the answer are a tenant's: a ``pattern`` with catastrophic backtracking, or
``uniqueItems`` over a megabyte of items, costs whatever the tenant chooses, and Python cannot
interrupt a regular expression or a comparison loop. So validation never runs in the operator's
process. It runs in one of ``WORKERS`` worker processes (started with ``spawn``, so no lock or
thread of the operator is inherited), within the contract's own deadline and at most
``MAX_SECONDS``; a worker still busy at its deadline is killed and replaced, and the verdict is
``JudgeTimeout``. Waiting for a worker counts against the same deadline.

Bounds per tenant: at most one judgement per namespace is in flight (its next ones wait, within
their own deadlines), so one namespace holds at most one worker however many contracts it
declares, and the others keep the rest.

Messages name the rule that failed and where (the JSON path in the answer, the path in the
schema), never the answer's data: a tenant must not read back what an endpoint answered.

``judge`` is the pure decision; the workers run it. It imports the standard library and
``jsonschema`` only, so a worker starts quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import time
from dataclasses import dataclass
from typing import Any

from svcreg.core.slots import KeyedSlots

logger = logging.getLogger(__name__)

WORKERS = 2
MAX_SECONDS = 5.0  # the longest one judgement may take, whatever the contract's timeout
START_SECONDS = 60.0  # how long a new worker may take to import jsonschema and say it is ready
_SEGMENT = 64  # characters of one JSON path segment named in a message
Job = tuple[int, bytes, dict[str, Any], str]  # status, body, schema, the request in words


@dataclass(frozen=True, slots=True)
class Verification:
    """One contract check: passed, with a reason (condition style) and a message."""

    passed: bool
    reason: str
    message: str


def judge(status: int, body: bytes, schema: dict[str, Any], asked: str) -> Verification:
    """Whether an answer keeps the contract (pure): a 2xx whose body is JSON valid against
    ``schema``. ``asked`` is the request in words ("GET /path"). Runs in a worker: its cost is
    the tenant's, bounded by the worker's deadline."""
    if not 200 <= status <= 299:
        return Verification(False, "BadStatus", f"{asked} answered HTTP {status}")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return Verification(False, "NotJson", f"{asked} answered with a body that is not JSON")
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - the operator extra only
    from referencing import Registry  # noqa: PLC0415

    try:
        # An empty registry retrieves nothing: jsonschema's default one would fetch a remote
        # $ref with urllib (apply refuses those; this holds even if one got through).
        validator = Draft202012Validator(schema, registry=Registry())
        first = next(iter(validator.iter_errors(document)), None)
    except RecursionError:
        return Verification(False, "SchemaViolation", f"{asked}: the answer is nested too deeply to check")
    except Exception as error:  # a schema the apply-time check let through (it should not)
        said = f"{asked}: outputSchema cannot be applied ({type(error).__name__})"
        return Verification(False, "SchemaError", said)
    if first is not None:
        return Verification(False, "SchemaViolation", f"{asked}: {violation(first)}"[:900])
    return Verification(
        True, "ContractKept", f"{asked} answered HTTP {status} with a document valid against outputSchema"
    )


def violation(error: Any) -> str:
    """Which rule failed and where, in words that carry none of the answer's data: the JSON path
    in the answer, the keyword and its place in the schema. ``required`` also names the
    missing properties, which come from the schema."""
    where = "/" + "/".join(str(p)[:_SEGMENT] for p in error.absolute_path) if error.absolute_path else "/"
    rule = str(error.validator)
    in_schema = "/" + "/".join(str(p)[:_SEGMENT] for p in error.absolute_schema_path)
    said = f"the answer at {where} breaks {rule} (outputSchema {in_schema})"
    if rule == "required":
        said += f": {error.message}"  # "'name' is a required property": the schema's words
    return said


def _serve(connection: multiprocessing.connection.Connection) -> None:
    """A worker: judge each job it is sent, until its parent goes away."""
    import jsonschema  # noqa: F401, PLC0415 - imported before the first job, not during it

    connection.send("ready")
    while True:
        try:
            status, body, schema, asked = connection.recv()
        except (EOFError, OSError):
            return
        found = judge(status, body, schema, asked)
        connection.send((found.passed, found.reason, found.message))


class _Worker:
    """One worker process and its end of the pipe. Blocking methods run in a thread."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), name="svcreg-judge", daemon=True)
        self.process.start()
        theirs.close()

    def ready(self) -> bool:
        """Wait (blocking) until the worker has started; whether it did."""
        try:
            return self.connection.poll(START_SECONDS) and self.connection.recv() == "ready"
        except (EOFError, OSError):
            return False

    def ask(self, job: Job, seconds: float) -> tuple[bool, str, str] | None:
        """Send one job and wait (blocking) for its verdict: None past ``seconds``."""
        try:
            self.connection.send(job)
            if not self.connection.poll(max(0.0, seconds)):
                return None
            found: tuple[bool, str, str] = self.connection.recv()
            return found
        except (EOFError, OSError):
            return None

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.join(5)
        with contextlib.suppress(Exception):
            self.connection.close()


class Judge:
    """Worker processes judging contract answers, one judgement per namespace at a time."""

    def __init__(self, workers: int = WORKERS, max_seconds: float = MAX_SECONDS) -> None:
        self.max_seconds = max_seconds
        self._free = asyncio.Semaphore(workers)
        self._idle: list[_Worker] = []
        self._namespaces = KeyedSlots(1)
        self.killed = 0  # workers killed at their deadline (for metrics and tests)

    async def verdict(
        self, namespace: str, *, status: int, body: bytes, schema: dict[str, Any], asked: str, seconds: float
    ) -> Verification:
        """``judge(status, body, schema, asked)`` in a worker, within ``seconds`` (and
        ``max_seconds``) from now, waiting included; ``JudgeTimeout`` past it."""
        if not 200 <= status <= 299:
            return judge(status, b"", {}, asked)  # no schema is consulted: nothing to bound
        deadline = time.monotonic() + min(seconds, self.max_seconds)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)) as waiting:
                async with self._namespaces.hold(namespace), self._free:
                    waiting.reschedule(None)  # the worker's own deadline applies from here
                    return await self._judge_in_worker((status, body, schema, asked), deadline)
        except TimeoutError:
            return _timed_out(asked)

    async def _judge_in_worker(self, job: Job, deadline: float) -> Verification:
        if self._idle:
            worker = self._idle.pop()
        else:  # starting a worker is svcreg's cost, not the tenant's: it does not spend the deadline
            started = time.monotonic()
            worker = await self._start()
            deadline += time.monotonic() - started
        answered = None
        try:
            answered = await asyncio.to_thread(worker.ask, job, deadline - time.monotonic())
        finally:
            if answered is None:  # past its deadline, dead, or the caller gave up: never reused
                self.killed += 1
                await asyncio.to_thread(worker.kill)
            else:
                self._idle.append(worker)
        if answered is None:
            return _timed_out(job[3])
        return Verification(*answered)

    async def _start(self) -> _Worker:
        worker = await asyncio.to_thread(_Worker)
        if not await asyncio.to_thread(worker.ready):
            await asyncio.to_thread(worker.kill)
            raise RuntimeError("a contract judge worker did not start")
        return worker

    def close(self) -> None:
        """Stop every idle worker (busy ones are killed when their judgement ends)."""
        for worker in self._idle:
            worker.kill()
        self._idle.clear()


def _timed_out(asked: str) -> Verification:
    return Verification(
        False,
        "JudgeTimeout",
        f"{asked}: checking the answer against outputSchema took longer than the contract's timeout "
        f"(at most {MAX_SECONDS:.0f} s); simplify the schema (patterns, uniqueItems) or the answer",
    )


def _loop_time(monotonic_deadline: float) -> float:
    """``monotonic_deadline`` on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
