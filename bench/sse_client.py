"""`python -m bench.sse_client PORT GEN_FILE START COUNT TIMEOUT_S`: one SSE client process of the fan-out figure.

Opens COUNT streams (`/mma/stream/<id>`, ids START.. of GEN_FILE) as plain asyncio protocols
on uvloop (no HTTP library: the client must cost far less than the server it measures),
prints `ready N` once every stream got its first event (or failed), then records, for each
`scan_line`, its delay: the arrival time of the socket read that carried it minus the publish
time the bench wrote into its text (`t=<epoch>`, the same clock). Prints one JSON summary line
when every stream closed on `done` (or at TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import uvloop

CONNECTS_AT_ONCE = 64  # streams opening (connected, no event yet) at once per process: browsers arrive spread out


class Run:
    """What every stream of this process adds to: counts, delays, failures, and the two milestones."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.settled = 0  # streams that got their first event, or failed
        self.connected = 0
        self.closed = 0
        self.done = 0
        self.lines = 0
        self.per_stream: Counter[int] = Counter()  # scan lines a stream got -> streams
        self.delays = array("d")
        self.failures: Counter[str] = Counter()
        loop = asyncio.get_running_loop()
        self.all_settled = loop.create_future()
        self.all_closed = loop.create_future()

    def settle(self, ok: bool) -> None:
        self.settled += 1
        self.connected += int(ok)
        if self.settled == self.count and not self.all_settled.done():
            self.all_settled.set_result(None)

    def close(self) -> None:
        self.closed += 1
        if self.closed == self.count and not self.all_closed.done():
            self.all_closed.set_result(None)


class Stream(asyncio.Protocol):
    """One `/mma/stream/<id>` response, parsed line by line (chunk-size lines of the chunked body are ignored)."""

    def __init__(self, run: Run, generation_id: str) -> None:
        self.run = run
        self.request = (f"GET /mma/stream/{generation_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Accept: text/event-stream\r\n\r\n").encode()
        self.transport: Any = None  # uvloop's TCPTransport subclasses no asyncio class
        self.head = True
        self.buf = b""
        self.event = b""
        self.first = False
        self.ended = False
        self.lines = 0
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # first event, or failed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = buf[:buf.find(b"\r\n")]
            if b" 200 " not in status:
                self._fail(status.decode(errors="replace") + " " + buf[end + 4:end + 200].decode(errors="replace"))
                return
            self.head = False
            buf = buf[end + 4:]
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        run = self.run
        for line in lines:
            if line.startswith(b"event:"):
                self.event = line[6:].strip()
                if not self.first:
                    self.first = True
                    run.settle(True)
                    self.opened.set_result(None)
            elif line.startswith(b"data:"):
                if self.event == b"scan_line":
                    text = orjson.loads(line[5:])["text"]
                    run.delays.append(now - float(text.split("t=", 1)[1]))
                    run.lines += 1
                    self.lines += 1
                elif self.event in (b"done", b"error"):
                    run.done += 1
                    self.ended = True
                    assert self.transport is not None
                    self.transport.close()
                    return

    def _fail(self, why: str) -> None:
        self.run.failures[why.strip()[:200]] += 1
        if not self.first:
            self.first = True
            self.run.settle(False)
            self.opened.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended and not self.first:
            self._fail(f"closed before the first event: {exc!r}")
        self.run.per_stream[self.lines] += 1
        self.run.close()


async def main_async(port: int, ids: list[str], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    run = Run(len(ids))
    deadline = loop.time() + timeout_s
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def open_one(generation_id: str) -> None:
        async with gate:  # held until the stream's first event: at most this many requests in flight
            try:
                _, stream = await loop.create_connection(lambda: Stream(run, generation_id), "127.0.0.1", port)
                await stream.opened
            except OSError as exc:
                run.failures[f"connect: {exc!r}"[:200]] += 1
                run.settle(False)
                run.close()

    opening = [asyncio.create_task(open_one(g)) for g in ids]
    await asyncio.wait([run.all_settled], timeout=timeout_s / 2)
    print(f"ready {run.connected}", flush=True)
    await asyncio.wait([run.all_closed], timeout=max(1.0, deadline - loop.time()))
    for task in opening:
        task.cancel()
    print(orjson.dumps({"streams": len(ids), "connected": run.connected, "done": run.done, "lines": run.lines,
                        "per_stream": {str(k): v for k, v in run.per_stream.items()},
                        "failures": dict(run.failures.most_common(3)), "delays": list(run.delays)}).decode(),
          flush=True)


def main() -> None:
    port, gen_file, start, count, timeout_s = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                               float(sys.argv[5]))
    ids = Path(gen_file).read_text().split()[start:start + count]
    uvloop.run(main_async(port, ids, timeout_s))


if __name__ == "__main__":
    main()
