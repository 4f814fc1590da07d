"""The front: repeated discovery lookups answered on the connection, everything else by aiohttp.

Every connection starts with a ``FrontProtocol``. While the caller sends plain lookups
(``GET /v1/services`` or ``GET /v1/capabilities/{name}``, across the namespaces it may read or
in one), answered from the reviews the authorizer holds and the index's ``Answer`` cache, the
front writes each answer straight to the transport: no request or response objects, no task
per request. That is most of a steady consumer's traffic, and it is
where aiohttp's own per-request machinery cost two thirds of the CPU (docs/performance.md).

The first request it cannot answer so, for any reason, hands the connection over to aiohttp
for good: the transport is given an aiohttp ``RequestHandler`` and the unanswered bytes, so
aiohttp parses, authenticates and answers from there exactly as it would have from the start.
The front therefore never answers anything differently from aiohttp; it only declines more
(a property test sends random heads to both and holds it to that):

- anything but ``GET`` over HTTP/1.1 with a head made only of well-formed header lines (no
  folding, no control characters, no ``Content-Length``, ``Transfer-Encoding``, ``Upgrade``,
  ``Expect``, ``Origin``, or ``Connection`` other than keep-alive; no repeated
  ``Authorization``, ``If-None-Match``, ``X-Request-Id`` or header aiohttp takes only once,
  such as ``Host``; at most ``MAX_HEADERS`` lines and ``MAX_HEAD`` bytes), so nothing it reads
  can be read otherwise by aiohttp (no request smuggling between the two);
- a path other than the two routes, or a target with percent-escapes or ``+``; a query string
  that does not parse (aiohttp answers the 400), long polls and ``select=one``;
- a token the reviews refuse (a first request, or one past its reader memo's freshness, is
  reviewed by the front as aiohttp's path would, with nothing after it read meanwhile; a refusal
  is answered by aiohttp from the cached review), or a caller over its request rate (429 there);
- a stale index (the answer must carry ``X-Svcreg-Stale-Seconds``).

Answers carry the same status, headers (with ``Date`` and ``Server``) and body as aiohttp's,
and are counted in the same request metrics. Bounds: a head larger than ``MAX_HEAD`` is handed
over (aiohttp refuses it); pipelined requests are answered in order, and while the transport's
write buffer is over its high-water mark the front stops reading; a connection idle for
``KEEPALIVE_SECONDS`` since its last answer is closed (aiohttp's runner is given the same
keep-alive for the connections handed to it), and so is one whose request head has not arrived
whole within ``HEAD_SECONDS``, however its bytes trickle in. At most ``max_connections`` are
open at once, the front's and aiohttp's together: past it a new connection is answered 503
``TooManyConnections`` and closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import SINGLETON_HEADERS
from yarl import URL

from svcreg.core.errors import BadParameter
from svcreg.discovery import query as query_mod
from svcreg.discovery.http import discovery as routes
from svcreg.discovery.http.answers import Answer
from svcreg.discovery.http.auth import Identity
from svcreg.discovery.http.serving import REQUEST_ID

logger = logging.getLogger(__name__)
MAX_HEAD = 8190  # bytes of request head the front waits for before handing over (aiohttp's line limit)
KEEPALIVE_SECONDS = 75.0  # an idle connection is closed after it (aiohttp's runner is given the same)
HEAD_SECONDS = 10.0  # a request head must arrive whole within this, however its bytes trickle in
MAX_CONNECTIONS = 10_000
SWEEP_SECONDS = 1.0

# The whole head: request line, then header lines of a token name and visible-ASCII value.
_HEAD = re.compile(
    rb"GET [!-~]+ HTTP/1\.1(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~]*)*",
)
_DECLINED = frozenset(
    {"content-length", "transfer-encoding", "upgrade", "expect", "origin", "access-control-request-method"}
)
# Headers that may appear once: those the front reads, and those aiohttp refuses twice.
_SINGLE = frozenset({"authorization", "if-none-match", "x-request-id"}) | SINGLETON_HEADERS
MAX_HEADERS = 100  # header lines the front reads at most (aiohttp refuses past 128 lines)
SERVICES_ROUTE = "/v1/services"
CAPABILITY_PREFIX = "/v1/capabilities/"
CAPABILITY_ROUTE = "/v1/capabilities/{name}"


def request_head(head: bytes) -> tuple[str, dict[str, str]] | None:
    """The target and headers (lower-case names) of a request head the front may answer, or
    None to hand it to aiohttp. ``head`` ends before the blank line."""
    if len(head) > MAX_HEAD or not _HEAD.fullmatch(head):
        return None
    lines = head.decode("ascii").split("\r\n")
    if len(lines) > MAX_HEADERS:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.lower()
        if name in _DECLINED or (name in _SINGLE and name in headers):
            return None
        headers[name] = value.strip(" \t")
    connection = headers.get("connection")
    if connection is not None and connection.lower() != "keep-alive":
        return None
    return lines[0][4:-9], headers


class Front:
    """What every connection's ``FrontProtocol`` shares: the lookups it may answer and the
    aiohttp server it hands connections to."""

    def __init__(
        self,
        discovery: routes.Discovery,
        handler: Callable[[], asyncio.Protocol],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_connections: int = MAX_CONNECTIONS,
        answers: bool = True,
    ) -> None:
        self.discovery = discovery
        self.handler = handler  # makes aiohttp's protocol for one connection (web.Server())
        self.clock = clock
        self.connections: set[FrontProtocol] = set()
        # Every open connection, the front's and those handed to aiohttp: at most
        # ``max_connections``; past it a new one is answered 503 and closed.
        self.open = 0
        self.max_connections = max_connections
        self.answers = answers  # False: every connection goes to aiohttp at once, counted
        self._date = (0, b"")
        self._sweeping: asyncio.Task[None] | None = None
        self._observe = discovery.metrics.observe_request
        self._answered = discovery.metrics.front_answers
        self._handovers = discovery.metrics.front_handovers

    async def review(self, review: Review, client: str | None) -> bool:
        """Work out what the token may read as aiohttp's path would (the reviews, cached and
        bounded per client there too); whether the memo now holds it. A refusal is left for
        aiohttp to answer: its reviews are cached, so asking again costs nothing."""
        index, auth = self.discovery.index, self.discovery.auth

        def admit(identity: Identity) -> None:  # charged before any access review, as there
            self.discovery.admit_identity(identity)

        try:
            if review.namespace:
                identity = await auth.identify(review.authorization, client)
                admit(identity)
                await auth.require(identity, "list", review.namespace)
            else:
                await auth.reader(
                    review.authorization, index.by_namespace.keys(), index.namespaces_version, client, admit
                )
        except Exception:  # whatever it was, aiohttp's path answers it
            return False
        return True

    def protocol(self) -> FrontProtocol:
        """A new connection's protocol (the factory ``loop.create_server`` takes)."""
        if self._sweeping is None:
            self._sweeping = asyncio.get_running_loop().create_task(self._sweep(), name="svcreg-front-sweep")
        return FrontProtocol(self)

    def close(self) -> None:
        """Close every connection the front still holds (aiohttp closes its own)."""
        if self._sweeping is not None:
            self._sweeping.cancel()
        for connection in list(self.connections):
            connection.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.close_idle()

    def close_idle(self) -> int:
        """Close the connections idle for ``KEEPALIVE_SECONDS`` since their last answer, and those
        whose request head has not arrived whole within ``HEAD_SECONDS`` (bytes trickling in do
        not keep a connection open); how many."""
        now = self.clock()
        idle = [c for c in self.connections if c.overdue(now)]
        for connection in idle:
            connection.close()
        return len(idle)

    def _date_lines(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            self._date = (now, f"Date: {stamp}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n".encode())
        return self._date[1]

    def answer(self, head: bytes, *, charged: bool = False) -> bytes | Review | None:
        """The whole HTTP answer to one request head; a ``Review`` when the caller's token must
        be reviewed first (then ask again, ``charged``: the review spent the caller's request
        already); None when aiohttp must answer it."""
        started = time.perf_counter()
        parsed = request_head(head)
        if parsed is None:
            return None
        target, headers = parsed
        routed = _route(target)
        if routed is None:
            return None
        route, label, capability, query_string = routed
        understood = _understood(target, query_string, route, capability)
        if understood is None:
            return None
        query, parsed_here = understood
        discovery = self.discovery
        index = discovery.index
        authorization = headers.get("authorization")
        if index.staleness() is not None or not authorization:
            return None  # the stale answer, or the 401, there
        caller = self._caller(authorization, query)
        if caller is None or isinstance(caller, Review):
            return caller
        identity, readable = caller
        if parsed_here:  # the caller's reviews hold: it is authenticated
            query_mod.remember(query_string, route, capability, query)
        if not charged and discovery.rates is not None and discovery.rates.take(identity.username):
            return None  # 429 there (nothing was spent)
        routes.note_consumer(discovery, identity.username, query, readable)
        cached = routes.answer_for(
            discovery,
            query,
            readable,
            lambda: (
                routes.services_payload(index, query, readable)
                if capability is None
                else routes.capability_payload(index, query, readable, capability)
            ),
        )
        status, answer = self._written(cached, headers)
        self._observe(label, "GET", status, time.perf_counter() - started)
        self._answered.inc(())
        return answer

    def _caller(
        self, authorization: str, query: query_mod.Query
    ) -> tuple[Identity, frozenset[str] | None] | Review | None:
        """Who asks and what it may read, from remembered reviews only: a ``Review`` when they
        must be made first, None when the answer is a refusal (made there)."""
        auth = self.discovery.auth
        if query.namespace:
            lister = auth.remembered_lister(authorization, query.namespace)
            if lister is None:
                return Review(authorization, query.namespace)
            return lister, frozenset({query.namespace})
        caller = auth.remembered_reader(authorization, self.discovery.index.namespaces_version)
        if caller is None:
            return Review(authorization)
        if caller[1] is not None and not caller[1]:
            return None  # 403 there
        return caller

    def _written(self, cached: Answer, headers: dict[str, str]) -> tuple[int, bytes]:
        """The status and bytes of ``cached`` for this request: 304 when the caller holds it."""
        wire = cached.wire
        request_id = headers.get("x-request-id")
        extra = (
            b""
            if request_id is None or not REQUEST_ID.match(request_id)
            else b"X-Request-Id: %s\r\n" % request_id.encode()
        )
        if routes.not_modified(headers.get("if-none-match"), cached.etag):
            return 304, wire.not_modified + extra + self._date_lines()
        return 200, b"".join((wire.head, extra, wire.length, self._date_lines(), cached.body))


def _route(target: str) -> tuple[str, str, str | None, str] | None:
    """The route a target asks for (route, metric label, capability, query string), or None
    when it is not one the front answers (or its spelling is left to aiohttp's parser)."""
    if "%" in target or "#" in target:
        return None
    path, _, query_string = target.partition("?")
    if path == SERVICES_ROUTE:
        return "services", SERVICES_ROUTE, None, query_string
    if path.startswith(CAPABILITY_PREFIX) and "/" not in path[len(CAPABILITY_PREFIX) :]:
        capability = path[len(CAPABILITY_PREFIX) :]
        return ("capability", CAPABILITY_ROUTE, capability, query_string) if capability else None
    return None


def _understood(
    target: str, query_string: str, route: str, capability: str | None
) -> tuple[query_mod.Query, bool] | None:
    """The parsed query (remembered, else parsed here: True) when the front answers it; None
    for a 400, a long poll or select=one, which aiohttp answers."""
    query = query_mod.remembered(query_string, route, capability)
    parsed_here = query is None
    if query is None:
        # First sight of this query string: parsed as aiohttp's path parses it (yarl), and
        # remembered once the caller is known. "+" is left to aiohttp.
        if "+" in query_string or len(query_string) > query_mod.MAX_QUERY_LENGTH:
            return None
        try:
            query = query_mod.parse(URL(target).query, route, capability)
        except BadParameter:
            return None  # a 400 naming the parameter, there
    if query.select_one or (query.index is not None and query.wait):
        return None
    return query, parsed_here


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for a connection handed over, still counted among the front's open
    connections until it closes."""

    __slots__ = ("_front", "_inner")

    def __init__(self, front: Front, inner: asyncio.Protocol) -> None:
        self._front, self._inner = front, inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.open -= 1
        self._inner.connection_lost(exc)


_REFUSED = b'{"error":{"code":"TooManyConnections","message":"too many open connections to svcreg; retry"}}'
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSED), _REFUSED)
)


class Review:
    """What ``Front.answer`` asks for when the reader memo holds nothing fresh for a token:
    review it (``Front.review``), then ask again."""

    __slots__ = ("authorization", "namespace")

    def __init__(self, authorization: str, namespace: str | None = None) -> None:
        self.authorization = authorization
        self.namespace = namespace  # the query's namespace: only its list review is needed


class FrontProtocol(asyncio.Protocol):
    """One connection: answered by the front until its first request the front declines."""

    def __init__(self, front: Front) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._writing_paused = False
        self._reviewing: asyncio.Task[None] | None = None
        self.last_request = self.head_since = front.clock()  # when it was last answered (or opened)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        front = self._front
        if front.open >= front.max_connections:
            transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
            transport.close()
            return
        front.open += 1
        self._transport = transport  # type: ignore[assignment]
        front.connections.add(self)
        if not front.answers:
            self._hand_over(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:  # counted (not refused, not handed over)
            self._front.open -= 1
        self._front.connections.discard(self)
        self._transport = None
        if self._reviewing is not None:
            self._reviewing.cancel()

    def overdue(self, now: float) -> bool:
        """Whether the connection is idle past the keep-alive, or its head is late."""
        if self._reviewing is not None:
            return False  # svcreg is working for it: a review has its own deadline
        if self._buffer:
            return now - self.head_since > HEAD_SECONDS
        return now - self.last_request > KEEPALIVE_SECONDS

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._buffer:
            self.head_since = self._front.clock()  # a new request head begins
        self._buffer = self._buffer + data if self._buffer else data
        if self._reviewing is None:
            self._serve()

    def eof_received(self) -> bool:
        return False  # the caller is done sending: close, as aiohttp does

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and self._reviewing is None:
            self._transport.resume_reading()
            self._serve()

    def _serve(self) -> None:
        """Answer every complete request in the buffer, in order, until one is declined (the
        connection goes to aiohttp with it and everything after it) or writing must wait."""
        buffer, start = self._buffer, 0
        transport = self._transport
        while not self._writing_paused and transport is not None:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buffer) - start > MAX_HEAD:
                    self._hand_over(buffer[start:])
                    return
                break
            answer = self._front.answer(buffer[start:end])
            if answer is None:
                self._hand_over(buffer[start:])
                return
            if isinstance(answer, Review):
                # Reviewed off the hot path; nothing after this request is read or answered
                # until it is (answers stay in order).
                self._buffer = buffer[start:]
                self._reviewing = asyncio.get_running_loop().create_task(self._review(answer))
                transport.pause_reading()
                return
            transport.write(answer)
            start = end + 4
            self.last_request = self.head_since = self._front.clock()
        self._buffer = buffer[start:] if start else buffer

    async def _review(self, review: Review) -> None:
        try:
            await self._answer_reviewed(review)
        except Exception:  # a fault of svcreg's, not the caller's: logged, the connection closed
            logger.exception("the front failed to answer a reviewed request")
            self.close()

    async def _answer_reviewed(self, review: Review) -> None:
        transport = self._transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        known = await self._front.review(review, peer[0] if isinstance(peer, tuple) else None)
        self._reviewing = None
        if self._transport is None:
            return  # the caller left meanwhile
        if not self._writing_paused:
            self._transport.resume_reading()
        end = self._buffer.find(b"\r\n\r\n")
        answer = self._front.answer(self._buffer[:end], charged=True) if known else None
        if not isinstance(answer, bytes):
            self._hand_over(self._buffer)  # refused, or changed again meanwhile: aiohttp answers
            return
        self._transport.write(answer)
        self._buffer = self._buffer[end + 4 :]
        self.last_request = self.head_since = self._front.clock()
        self._serve()

    def _hand_over(self, pending: bytes) -> None:
        """Give the connection to aiohttp, with the bytes it has not answered."""
        transport = self._transport
        assert transport is not None
        self._front.connections.discard(self)
        self._front._handovers.inc(())
        self._transport = None
        self._buffer = b""
        transport.resume_reading()  # aiohttp reads on its own terms from here
        handler = _Counted(self._front, self._front.handler())
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if pending:
            handler.data_received(pending)
