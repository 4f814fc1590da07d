"""The front (discovery/http/front.py): lookups answered on the connection, exactly as aiohttp
answers them, and everything it does not answer left to aiohttp, in order."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from svcreg.discovery.http.app import build_app
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.front import KEEPALIVE_SECONDS, Front, FrontProtocol, request_head
from svcreg.discovery.index import Index
from svcreg.telemetry.metrics import Metrics
from tests.unit.test_discovery_units import FakeApi, body

GOOD = "Authorization: Bearer good\r\n"


class Served:
    def __init__(self, front: Front, api: FakeApi, clock: list[float], ports: dict[str, int]) -> None:
        self.front, self.api, self.clock, self.ports = front, api, clock, ports

    async def exchange(
        self, port: str, raw: bytes, answers: int = 1
    ) -> list[tuple[str, dict[str, str], bytes]]:
        """Send ``raw`` on one new connection and read ``answers`` HTTP answers from it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ports[port])
        try:
            writer.write(raw)
            return [await read_answer(reader) for _ in range(answers)]
        finally:
            writer.close()

    def counted(self, name: str) -> float:
        metrics = self.front.discovery.metrics
        counter = metrics.front_answers if name == "answers" else metrics.front_handovers
        return counter.values.get((), 0.0)


async def read_answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    status, *lines = head[:-4].split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    content = await reader.readexactly(length) if length else b""
    return status, headers, content


def get(target: str, *headers: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: svcreg\r\n{''.join(headers)}\r\n".encode()


@asynccontextmanager
async def served() -> AsyncIterator[Served]:
    """The same discovery served twice: through the front, and by aiohttp alone."""
    index = Index()
    index.observe("ADDED", body("r1", capabilities=["greet"], service="web"))
    index.observe("ADDED", body("r2", namespace="b", capabilities=["greet"], service="web"))
    index.synced = True
    metrics, api, clock = Metrics(), FakeApi(), [1000.0]
    auth = Authorizer(api, clock=lambda: clock[0], metrics=metrics)  # type: ignore[arg-type]
    discovery = Discovery(index, auth, metrics)
    runner = web.AppRunner(build_app(metrics, lambda: (True, {}), discovery, registration_api=False))
    await runner.setup()
    assert runner.server is not None
    front = Front(discovery, runner.server)
    loop = asyncio.get_running_loop()
    with_front = await loop.create_server(front.protocol, "127.0.0.1", 0)
    without = await loop.create_server(runner.server, "127.0.0.1", 0)
    ports = {name: s.sockets[0].getsockname()[1] for name, s in (("front", with_front), ("aiohttp", without))}
    try:
        yield Served(front, api, clock, ports)
    finally:
        with_front.close()
        without.close()
        front.close()
        await runner.cleanup()


def same(answer: tuple[str, dict[str, str], bytes]) -> tuple[str, dict[str, str], bytes]:
    status, headers, content = answer
    return status, {k: v for k, v in headers.items() if k != "date"}, content


async def test_the_front_answers_lookups_exactly_as_aiohttp_does() -> None:
    async with served() as s:
        first = await s.exchange("aiohttp", get("/v1/services?service=web", GOOD))
        etag = first[0][1]["etag"]
        requests = [
            get("/v1/services?service=web", GOOD),
            get("/v1/services?service=web&namespace=a", GOOD),
            get("/v1/capabilities/greet", GOOD, "X-Request-Id: trace-1\r\n"),
            get("/v1/services?service=web", GOOD, f'If-None-Match: "other", {etag}\r\n'),
            get("/v1/services?service=web", GOOD, "X-Request-Id: has spaces\r\n"),
        ]
        raw = b"".join(requests)
        from_aiohttp = await s.exchange("aiohttp", raw, len(requests))
        from_front = await s.exchange("front", raw, len(requests))
        assert [same(a) for a in from_front] == [same(a) for a in from_aiohttp]
        assert [a[0] for a in from_front] == ["HTTP/1.1 200 OK"] * 3 + [
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.1 200 OK",
        ]
        assert from_front[2][1]["x-request-id"] == "trace-1"
        assert b'"namespace":"b"' not in from_front[1][2] and b'"namespace":"b"' in from_front[0][2]
        # The front answered all five itself (the reviews were already cached), and counted them
        # in the request metrics as aiohttp's path does.
        assert s.counted("answers") == len(requests) and s.counted("handovers") == 0
        requests_counted = s.front.discovery.metrics.http_requests.values
        assert requests_counted[("/v1/services", "GET", "200")] == 1 + 3 + 3
        assert requests_counted[("/v1/capabilities/{name}", "GET", "200")] == 2


async def test_a_first_request_is_reviewed_then_answered_by_the_front() -> None:
    async with served() as s:
        answers = await s.exchange("front", get("/v1/services?service=web", GOOD) * 2, 2)
        assert [a[0] for a in answers] == ["HTTP/1.1 200 OK"] * 2
        assert s.api.calls.count("tokenreviews") == 1
        assert s.counted("answers") == 2 and s.counted("handovers") == 0


async def test_what_the_front_does_not_answer_goes_to_aiohttp_in_order() -> None:
    async with served() as s:
        raw = (
            get("/v1/services?service=web", GOOD)
            + get("/v1/stats", GOOD)  # not a route the front answers
            + get("/v1/services?service=web", GOOD)
            + get("/v1/services?bogus=1", GOOD)
        )
        answers = await s.exchange("front", raw, 4)
        assert [a[0].split(" ")[1] for a in answers] == ["200", "200", "200", "400"]
        assert b'"items"' in answers[0][2] and b'"byHealth"' in answers[1][2]
        assert b'"parameter":"bogus"' in answers[3][2]
        assert s.counted("answers") == 1 and s.counted("handovers") == 1


async def test_a_refused_token_or_grant_is_answered_by_aiohttp() -> None:
    async with served() as s:
        (refused,) = await s.exchange(
            "front", get("/v1/services?service=web", "Authorization: Bearer bad\r\n")
        )
        assert refused[0].startswith("HTTP/1.1 401") and b"Unauthenticated" in refused[2]
        assert s.api.calls.count("tokenreviews") == 1  # the front's review is reused by aiohttp
        (served_,) = await s.exchange("front", get("/v1/services?service=web", GOOD))
        assert served_[0] == "HTTP/1.1 200 OK"
        # A revoked grant is noticed when its review lapses, as on aiohttp's path: the front
        # never answers past a review's lifetime.
        s.api.allowed = False
        s.clock[0] += 61
        (revoked,) = await s.exchange("front", get("/v1/services?service=web&namespace=a", GOOD))
        assert revoked[0].startswith("HTTP/1.1 403")
        (revoked,) = await s.exchange("front", get("/v1/services?service=web", GOOD))
        assert revoked[0].startswith("HTTP/1.1 403")


def test_only_plain_heads_are_read_by_the_front() -> None:
    """Anything another parser might read differently is left to aiohttp's (no smuggling)."""
    plain = (
        b"GET /v1/services?service=web HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer t\r\nConnection: keep-alive"
    )
    assert request_head(plain) == (
        "/v1/services?service=web",
        {"host": "x", "authorization": "Bearer t", "connection": "keep-alive"},
    )
    for declined in (
        b"POST /v1/services HTTP/1.1\r\nHost: x",
        b"GET /v1/services HTTP/1.0\r\nHost: x",
        b"GET /v1/services HTTP/1.1\r\nContent-Length: 5",
        b"GET /v1/services HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"GET /v1/services HTTP/1.1\r\nHost: x\r\n folded: on",
        b"GET /v1/services HTTP/1.1\nHost: x",
        b"GET /v1/services HTTP/1.1\r\nHost: x\rAuthorization: Bearer t",
        b"GET /v1/services HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b",
        b"GET /v1/services HTTP/1.1\r\nBad Name: x",
        b"GET /v1/services HTTP/1.1\r\nHost: \x00",
        b"GET /v1/services HTTP/1.1\r\nHost: caf\xc3\xa9",
        b"GET /v1/services HTTP/1.1\r\nConnection: close",
        b"GET /v1/services HTTP/1.1\r\nUpgrade: websocket",
        b"GET /v1/services HTTP/1.1\r\nOrigin: https://ui",
    ):
        assert request_head(declined) is None, declined


async def test_smuggling_shapes_get_aiohttps_answer() -> None:
    async with served() as s:
        chunked = (
            b"GET /v1/services?service=web HTTP/1.1\r\nHost: x\r\n"
            + GOOD.encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n"
        )
        for port in ("aiohttp", "front"):
            (answer,) = await s.exchange(port, chunked)
            assert answer[0] == "HTTP/1.1 200 OK"
        assert s.counted("answers") == 0 and s.counted("handovers") == 1


class FakeTransport(asyncio.Transport):
    """Records writes; says its buffer is full after ``room`` answers."""

    def __init__(self, protocol: FrontProtocol, room: int) -> None:
        super().__init__()
        self.protocol, self.room = protocol, room
        self.written: list[bytes] = []
        self.reading = True

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))
        if len(self.written) == self.room:
            self.protocol.pause_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.protocol.connection_lost(None)


async def test_a_caller_that_does_not_read_stops_being_read() -> None:
    async with served() as s:
        await s.exchange("front", get("/v1/services?service=web", GOOD))  # the reviews are cached
        protocol = s.front.protocol()
        transport = FakeTransport(protocol, room=2)
        protocol.connection_made(transport)
        protocol.data_received(get("/v1/services?service=web", GOOD) * 5)
        assert len(transport.written) == 2 and not transport.reading
        protocol.resume_writing()  # the caller read: the rest are answered, in order
        assert len(transport.written) == 5 and transport.reading
        assert all(w.startswith(b"HTTP/1.1 200 OK") for w in transport.written)


async def test_idle_connections_are_closed_after_the_keep_alive_timeout() -> None:
    async with served() as s:
        clock = [0.0]
        s.front.clock = lambda: clock[0]
        protocol = s.front.protocol()
        transport = FakeTransport(protocol, room=100)
        protocol.connection_made(transport)
        assert s.front.close_idle() == 0
        clock[0] = KEEPALIVE_SECONDS + 1
        assert s.front.close_idle() == 1 and protocol not in s.front.connections


async def test_the_front_is_visible_in_the_metrics() -> None:
    async with served() as s:
        await s.exchange("front", get("/v1/services?service=web", GOOD) + get("/metrics"), 2)
        (exposed,) = await s.exchange("aiohttp", get("/metrics"))
        assert re.search(rb"^svcreg_front_answers_total 1\.0$", exposed[2], re.M)
        assert re.search(rb"^svcreg_front_handovers_total 1\.0$", exposed[2], re.M)


async def _answer_or_none(s: Served, port: str, raw: bytes) -> tuple[str, dict[str, str], bytes] | None:
    """The one answer to ``raw`` on a new connection, or None when the server closes instead."""
    try:
        [answer] = await asyncio.wait_for(s.exchange(port, raw), 5)
    except (
        asyncio.IncompleteReadError,
        ConnectionError,
        asyncio.LimitOverrunError,
        ValueError,
        TimeoutError,
    ):
        return None
    return answer


def _random_head(rng: random.Random) -> bytes:
    """A request head of the front's routes with random header counts, line lengths,
    duplicates and bytes."""
    target = rng.choice(
        ["/v1/services?service=web", "/v1/capabilities/greet", "/v1/services", "/v1/services?namespace=a"]
    )
    lines = [
        f"{rng.choice(['GET'] * 8 + ['DELETE', 'POST'])} {target} HTTP/1.{rng.choice('1111110')}".encode()
    ]
    names = ["Host", "Authorization", "User-Agent", "Content-Type", "X-Request-Id", "If-None-Match", "Accept"]
    for n in range(rng.choice([0, 1, 3, 10, 60, 99, 100, 101, 127, 128, 129, 140])):
        name = rng.choice(names) if rng.random() < 0.2 else f"X-Fill-{n}"
        value = "Bearer good" if name == "Authorization" else "v" * rng.choice([1, 10, 100, 4000, 8200])
        line = f"{name}: {value}".encode()
        if rng.random() < 0.03:
            line += bytes([rng.choice([0, 1, 0x7F, 0xC3, 0xFF, 0x0D])])
        lines.append(line)
    if not any(line.startswith(b"Host:") for line in lines):
        lines.insert(1, b"Host: svcreg")
    if not any(line.startswith(b"Authorization:") for line in lines):
        lines.append(GOOD.strip().encode())
    end = b"\r\n" if rng.random() < 0.95 else b"\n"
    return end.join(lines) + end + end


async def test_the_front_never_answers_a_head_aiohttp_refuses_and_otherwise_answers_alike() -> None:
    """The property behind the front: for random heads, whenever aiohttp answers 400 the front
    does not answer 200, and whenever both answer, the bytes are the same but for ``Date``."""
    rng = random.Random(28)
    async with served() as s:
        await s.exchange("front", get("/v1/services?service=web", GOOD))  # reviews cached
        compared = refused = 0
        for _ in range(250):
            raw = _random_head(rng)
            plain = await _answer_or_none(s, "aiohttp", raw)
            fronted = await _answer_or_none(s, "front", raw)
            if plain is not None and plain[0].split(" ")[1] == "400":
                refused += 1
                assert fronted is None or fronted[0].split(" ")[1] != "200", raw[:300]
            if plain is not None and fronted is not None:
                compared += 1
                assert same(fronted) == same(plain), raw[:300]
        assert refused >= 20 and compared >= 100  # the random heads reached both sides


async def test_heads_aiohttp_refuses_are_declined_by_the_front() -> None:
    """Finding 11's three shapes: more headers than aiohttp takes, a line longer than its
    limit, a repeated singleton header (Host)."""
    many = "".join(f"X-Fill-{n}: v\r\n" for n in range(130))
    long_line = "X-Long: " + "v" * 8200 + "\r\n"
    twice = "Host: other\r\n"
    for extra in (many, long_line, twice):
        head = get("/v1/services?service=web", GOOD, extra)
        assert request_head(head[: head.index(b"\r\n\r\n")]) is None
        async with served() as s:
            await s.exchange("front", get("/v1/services?service=web", GOOD))
            answer = await _answer_or_none(s, "front", head)
            assert answer is None or answer[0].split(" ")[1] != "200"
