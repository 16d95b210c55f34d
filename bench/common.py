"""What every figure shares: results, percentiles, a bus client, seeded customers, process CPU."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from libs.bus import Bus
from libs.schemas import CreditApplied, CreditApply
from libs.settings import Settings


def quiet_logs() -> None:
    """The bench's own process logs errors only (migrations, bus connects and disconnects are expected)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


@dataclass
class Figure:
    """One printed line: value, the raw baseline and the target verdict (None = no target)."""

    name: str
    text: str
    met: bool | None = None
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        verdict = "" if self.met is None else ("  [target met]" if self.met else f"  [MISSED: {self.why}]")
        return f"{self.name}: {self.text}{verdict}"


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def ratio(value: float, base: float) -> float:
    return value / base if base else math.nan


def bench_settings(nats_url: str) -> Settings:
    return Settings(_env_file=None, infra="external", nats_url=nats_url, log_level="WARNING")  # type: ignore[call-arg]


async def connect(nats_url: str, name: str = "bench") -> Bus:
    bus = await Bus.connect(bench_settings(nats_url), nats_url, name=name)
    await bus.ensure_streams()
    return bus


def pass_id(i: int) -> str:
    return f"pass:anon:bench-{i}"


async def seed_credits(bus: Bus, customers: int, credits: int, tag: str = "seed") -> None:
    """Give `customers` pass ids `credits` each through the ledger's credit apply (idempotent per tag)."""
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> CreditApplied:
        async with sem:
            return await bus.request(CreditApply(
                pass_id=pass_id(i), delta=credits, ref=f"bench:{tag}:{i}", reason="bench", source="admin",
            ), CreditApplied, timeout=30)

    await asyncio.gather(*(one(i) for i in range(customers)))


def run_child_measured(args: list[str], timeout_s: float, **kwargs: Any) -> tuple[int, float, bytes]:
    """Run a child to completion; (returncode, its CPU seconds from wait4, its stdout)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    out = b""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, children_cpu_delta_last(), out


_children_cpu_seen = 0.0


def children_cpu_delta_last() -> float:
    """CPU seconds of children reaped since the previous call (RUSAGE_CHILDREN delta)."""
    global _children_cpu_seen
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    delta, _children_cpu_seen = total - _children_cpu_seen, total
    return delta


def cpu_count() -> int:
    return os.cpu_count() or 1


ECHO = "import os\nwhile (b := os.read(0, 1)) and b != b'q':\n    os.write(1, b)\n"


def wakeup_probe_us(round_trips: int = 2000, repeats: int = 3) -> float:
    """A one-byte ping-pong with a child process over pipes, best of `repeats`, in microseconds per round
    trip: what waking another process costs on this host right now, before any work. Every create
    crosses five processes; the pure-Python probe (`host_probe_ms`) does not see this cost move."""
    best = float("inf")
    with subprocess.Popen([sys.executable, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        assert child.stdin is not None and child.stdout is not None
        send, receive = child.stdin.fileno(), child.stdout.fileno()
        try:
            for _ in range(repeats):
                started = time.perf_counter()
                for _ in range(round_trips):
                    os.write(send, b"p")
                    os.read(receive, 1)
                best = min(best, time.perf_counter() - started)
        finally:
            os.write(send, b"q")  # the child ends; leaving the block closes both pipes and waits for it
    return best / round_trips * 1_000_000


def host_probe_ms(repeats: int = 5) -> float:
    """A fixed piece of pure-Python work, best of `repeats`, in ms: how fast this host runs right now.

    On this shared VM it has read 70-115 ms within a minute, and every CPU figure moves with it, so
    the run prints it before and after its figures (absolute targets depend on it; ratios do not)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return best * 1000


class FsyncProbe:
    """What a durable commit waits for on this disk while a figure runs: an 8 KB rewrite + `fdatasync`
    (Postgres flushes its WAL so at every commit) in `directory` every `every_s`, from a thread, timed.

    Printed beside the accept figure so a slow round can be read against the disk: here the flush takes
    about 0.5 ms at the median, with single ones of 20-55 ms in some rounds (docs/bench.md, session 15).
    It adds about a tenth of the ledger's own flushes, on both sides of a figure alike.
    """

    def __init__(self, directory: Path, every_s: float = 0.1) -> None:
        self.path = directory / "fsync-probe"
        self.every_s = every_s
        self.side = ""  # what the samples are taken for now ("" drops them: a warm-up)
        self.ms: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)

    def _run(self) -> None:
        block = os.urandom(8192)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while not self._stop.wait(self.every_s):
                started = time.perf_counter()
                os.pwrite(fd, block, 0)
                os.fdatasync(fd)
                if self.side:
                    self.ms.setdefault(self.side, []).append((time.perf_counter() - started) * 1000)
        finally:
            os.close(fd)
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self, side: str) -> str:
        ms = self.ms.get(side, [])
        return f"p50 {pct(ms, 50):.1f} max {max(ms, default=math.nan):.1f} ms of {len(ms)}"
