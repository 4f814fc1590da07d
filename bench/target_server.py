"""A minimal, fast HTTP/1.1 target for benchmarks: answers 200 on every port it is given.

    python -m bench.target_server COUNT [HANGING]

Runs in its own process so the benchmark measures the operator's CPU, not the targets'.
HANGING more ports accept connections and never answer. Prints every port it listens on, the
answering ones first, on one line, then serves until killed.
"""

from __future__ import annotations

import asyncio
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]
            self.transport.close()


class Hang(asyncio.Protocol):
    """Accepts, reads, never answers: a target that costs its prober the whole timeout."""


async def main(count: int, hanging: int = 0) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(Answer, "127.0.0.1", 0, backlog=4096) for _ in range(count)]
    servers += [await loop.create_server(Hang, "127.0.0.1", 0, backlog=4096) for _ in range(hanging)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    )
