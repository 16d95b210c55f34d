"""Accept rate: `POST /mma/still/create` -> `queued` under wrk, the product against the monolith (bench/monolith.py).

Both run in the same run, on the same NATS and Postgres servers, under the same wrk load, in
alternating rounds (the host's speed drifts up to 2x within the hour on a shared VM: one long
run a side measured the drift as much as the code).
The pipeline is stopped while this runs (accepted jobs wait in JOBS and are purged after),
so the figure is the accept path alone: gateway -> billing -> ledger -> back. CPU per
create is each process's user + system time (psutil) from before the measured wrk run to
after it, once the ledger has projected every `accepted` event the run produced (the
projection is part of what a create costs); Postgres counts all its processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import Figure, FsyncProbe, connect, ratio
from bench.profile import Profile, Recorder
from bench.stack import ROOT, Stack, describe_errors, errors_since, http_ok, log_offset
from bench.wrkload import WrkResult, first_creates, merged, run_wrk
from libs.devinfra import free_port

CONNECTIONS = 32
ROUNDS = 3  # monolith and product alternate, so a drift of the host's speed meets both sides alike
# each side's warm-up after every customer's first create (`first_creates`), so the rounds measure
# returning customers, not the first ensure and welcome of each pass id
WARM_UP_S = 4
P99_MS = 50.0
SHARED = ("nats-server", "postgres")


@dataclass
class Side:
    """One side's wrk result and CPU ms per accepted create, by process."""

    wrk: WrkResult
    cpu_ms: dict[str, float]

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu_ms.values())

    def describe(self) -> str:
        r = self.wrk
        return f"{r.rps:,.0f} creates/s p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms"

    def split(self) -> str:
        return ", ".join(f"{n} {ms:.2f}" for n, ms in self.cpu_ms.items()) + f" = {self.cpu_total:.2f}"


def _cpu(stack: Stack, names: tuple[str, ...], extra: dict[str, psutil.Process] | None = None) -> dict[str, float]:
    spent = {n: s for n, s in stack.cpu_seconds().items() if n in names}
    for name, proc in (extra or {}).items():
        spent[name] = sum(proc.cpu_times()[:2])
    return spent


async def _projection_backlog(stack: Stack) -> int:
    bus = await connect(stack.nats_url, "bench-accept-info")
    try:
        info = await bus.js.consumer_info("MMA_EVENTS", "ledger")
        return int(info.num_pending + info.num_ack_pending)
    finally:
        await bus.close()


def _wait_projected(stack: Stack, cap_s: float = 30.0) -> None:
    deadline = time.monotonic() + cap_s
    while asyncio.run(_projection_backlog(stack)) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def _measure(url: str, duration_s: float, customers: int, read_cpu: Callable[[], dict[str, float]],
             settle: Callable[[], None] | None = None) -> Side:
    before = read_cpu()
    result = run_wrk(url, connections=CONNECTIONS, duration_s=duration_s, customers=customers)
    if settle is not None:
        settle()
    after = read_cpu()
    per = {n: 1000 * (after[n] - before[n]) / max(1, result.requests) for n in before}
    return Side(result, per)


def _merged(rounds: list[Side]) -> Side:
    """The rounds of one side as one: wrk figures merged, CPU per create weighted by each round's creates."""
    wrk = merged([r.wrk for r in rounds])
    cpu = {n: sum(r.cpu_ms[n] * r.wrk.requests for r in rounds) / max(1, wrk.requests) for n in rounds[0].cpu_ms}
    return Side(wrk, cpu)


def _start_monolith(stack: Stack) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (stack.root / "logs" / "monolith.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "bench.monolith", str(port)], cwd=ROOT, env=stack.env(),
                            stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 60
    while not http_ok(f"http://127.0.0.1:{port}/healthz"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the monolith did not start (see logs/monolith.log)")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/mma/still/create"


def _both(stack: Stack, duration_s: float, customers: int, probe: FsyncProbe) -> tuple[list[Side], list[Side]]:
    """Monolith and product in alternating rounds (the host's speed drifts within minutes: each
    pair of rounds sees the same host); returns each side's rounds. `probe` times the disk's
    flushes during each side's measured rounds."""
    proc, mono_url = _start_monolith(stack)
    product_url = f"{stack.gateway_url}/mma/still/create"
    me = {"monolith": psutil.Process(proc.pid)}
    names = ("gateway", "billing", "ledger", "pipeline", *SHARED)
    per_round = max(2, round(duration_s / ROUNDS))  # wrk takes whole seconds
    mono_rounds: list[Side] = []
    product_rounds: list[Side] = []
    try:
        # as a database that has run a while: no new WAL segment is made inside the rounds, and the
        # full-page images that follow a checkpoint are written by the first creates and warm-ups
        stack.recycle_wal()
        for url in (mono_url, product_url):
            failed = first_creates(url, customers, CONNECTIONS)
            if failed:
                raise RuntimeError(f"{failed} of {customers} first creates failed on {url}")
            run_wrk(url, connections=CONNECTIONS, duration_s=WARM_UP_S, customers=customers)
        _wait_projected(stack)
        for _ in range(ROUNDS):  # each round warmed for a second: the other side's round left this one idle
            run_wrk(mono_url, connections=CONNECTIONS, duration_s=1, customers=customers)
            probe.side = "monolith"
            mono_rounds.append(_measure(mono_url, per_round, customers,
                                        lambda: _cpu(stack, SHARED, me)))
            probe.side = ""
            run_wrk(product_url, connections=CONNECTIONS, duration_s=1, customers=customers)
            _wait_projected(stack)
            probe.side = "product"
            product_rounds.append(_measure(product_url, per_round, customers,
                                           lambda: _cpu(stack, names), lambda: _wait_projected(stack)))
            probe.side = ""
    finally:
        proc.terminate()
        proc.wait(15)
    return product_rounds, mono_rounds


def _p99s(rounds: list[Side]) -> str:
    return ", ".join(f"{r.wrk.p99_ms:.0f}" for r in rounds)


def run(stack: Stack, duration_s: float, customers: int) -> Figure:
    offset = log_offset(stack, "gateway")
    with FsyncProbe(stack.root) as probe:  # the directory Postgres's data (and WAL) live under
        product_rounds, mono_rounds = _both(stack, duration_s, customers, probe)
    product, mono = _merged(product_rounds), _merged(mono_rounds)
    rounds = [ratio(p.wrk.rps, m.wrk.rps) for p, m in zip(product_rounds, mono_rounds, strict=True)]
    r = ratio(product.wrk.rps, mono.wrk.rps)
    bad = product.wrk.non_2xx + product.wrk.errors
    mono_bad = mono.wrk.non_2xx + mono.wrk.errors
    why = []
    if not r >= 1.0:
        why.append(f"{r:.2f} of the monolith < 1.0")
    if not product.wrk.p99_ms < P99_MS:
        why.append(f"p99 {product.wrk.p99_ms:.0f} ms >= {P99_MS:.0f}")
    if not product.cpu_total <= mono.cpu_total:
        why.append(f"CPU {product.cpu_total:.2f} ms per create > the monolith's {mono.cpu_total:.2f}")
    if bad:
        why.append(f"{bad} non-2xx/errors")
        logged = describe_errors(errors_since(stack, "gateway", offset))
        if logged:
            why.append(logged)
    if mono_bad:
        why.append(f"the monolith had {mono_bad} non-2xx/errors")
    text = (f"{product.describe()} ({product.wrk.requests} accepted, {bad} failed) vs monolith {mono.describe()} "
            f"({mono.wrk.requests} accepted, {mono_bad} failed) -> ratio {r:.2f} "
            f"(target >= 1.0x, p99 < {P99_MS:.0f} ms, CPU per create <= the monolith's); "
            f"{ROUNDS} alternating rounds of {product.wrk.duration_s / ROUNDS:g} s a side (ratio by round "
            f"{', '.join(f'{x:.2f}' for x in rounds)}; p50/p99 of the rounds' latencies together; p99 by round: "
            f"product {_p99s(product_rounds)}, monolith {_p99s(mono_rounds)} ms); "
            f"WAL segments recycled before the first creates (Stack.recycle_wal); "
            f"wrk -c{CONNECTIONS}, its CPU {product.wrk.cpu_pct:.0f}% "
            f"(monolith run {mono.wrk.cpu_pct:.0f}%); CPU ms per accepted create: product {product.split()}; "
            f"monolith {mono.split()} ({product.cpu_total / mono.cpu_total if mono.cpu_total else 0:.2f}x); "
            f"the disk meanwhile (an 8 KB write + fdatasync every 100 ms, what a durable commit waits for): "
            f"product rounds {probe.describe('product')}, monolith rounds {probe.describe('monolith')}")
    return Figure("accept rate", text, not why, "; ".join(why),
                  extra={"product": product, "monolith": mono})


def profile(stack: Stack, duration_s: float, customers: int, out_dir: Path) -> list[Profile]:
    """py-spy on gateway, billing and ledger while wrk drives the accept path again."""
    recorders = [Recorder(name, stack.pid(name), duration_s, out_dir) for name in ("gateway", "billing", "ledger")]
    time.sleep(0.5)
    run_wrk(f"{stack.gateway_url}/mma/still/create", connections=CONNECTIONS, duration_s=duration_s,
            customers=customers)
    return [r.result() for r in recorders]
