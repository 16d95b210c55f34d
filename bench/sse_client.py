"""`python -m bench.sse_client PORT GEN_FILE START COUNT TIMEOUT_S`: SSE client process for the fan-out figure.

Opens COUNT raw-socket SSE streams (`/mma/stream/<id>`, ids START.. of GEN_FILE), prints
`ready` once every stream got its first event, then records for each `scan_line` the
delay between its publish time (carried in its text as `t=<epoch>`) and its arrival.
Prints one JSON summary line at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from pathlib import Path

import orjson


async def stream(port: int, generation_id: str, ready: asyncio.Event, first: list[int],
                 delays: list[float], lines: dict[str, int], done: set[str],
                 failures: Counter[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /mma/stream/{generation_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    event = ""
    seen_first = False

    def settled(ok: bool) -> None:
        first[0 if ok else 2] += 1
        if first[0] + first[2] == first[1]:
            ready.set()

    try:
        status = await reader.readline()
        if b" 200 " not in status:
            settled(False)
            failures[status.decode(errors="replace").strip() + " " + (await reader.read(300)).decode(
                errors="replace").rsplit("\r\n", 1)[-1][:200]] += 1
            return
        while True:
            raw = await reader.readline()
            if not raw:
                if not seen_first:
                    settled(False)
                return
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
                if not seen_first:
                    seen_first = True
                    settled(True)
            elif line.startswith(b"data:") and event == "scan_line":
                now = time.time()
                text = orjson.loads(line[5:])["text"]
                delays.append(now - float(text.split("t=", 1)[1]))
                lines[generation_id] = lines.get(generation_id, 0) + 1
            elif line.startswith(b"data:") and event in ("done", "error"):
                done.add(generation_id)
                return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def run(port: int, ids: list[str], timeout_s: float) -> None:
    ready = asyncio.Event()
    first = [0, len(ids), 0]  # connected, total, refused
    delays: list[float] = []
    lines: dict[str, int] = {}
    done: set[str] = set()
    failures: Counter[str] = Counter()
    tasks = []
    for generation_id in ids:
        tasks.append(asyncio.create_task(stream(port, generation_id, ready, first, delays, lines, done, failures)))
        await asyncio.sleep(0)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s / 2):
            await ready.wait()
    print(f"ready {first[0]}", flush=True)
    finished, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    errors = sum(1 for t in finished if t.exception() is not None)
    print(orjson.dumps({"streams": len(ids), "connected": first[0], "done": len(done), "errors": errors,
                        "refused": first[2], "failures": dict(failures.most_common(3)),
                        "lines": list(lines.values()), "delays": delays}).decode(), flush=True)


def main() -> None:
    port, gen_file, start, count, timeout_s = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                               float(sys.argv[5]))
    ids = Path(gen_file).read_text().split()[start:start + count]
    asyncio.run(run(port, ids, timeout_s))


if __name__ == "__main__":
    main()
