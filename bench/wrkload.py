"""wrk as the HTTP load generator (C, epoll): POST bodies from a Lua script, its own CPU from rusage."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import children_cpu_delta_last

SETUP = Path(__file__).resolve().parent / "setup.sh"

BRIEF = '"inputs":{"userBrief":"a red glass bottle on marble","style":"editorial","aspect_ratio":"1:1"}'
LUA = """
local counter = 0
local thread_no = 0
local threads = 0
function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end
function init(args)
  counter = thread_no * 100003
end
request = function()
  counter = counter + 1
  local body = string.format('{"passId":"pass:anon:bench-%d",BRIEF}', counter % CUSTOMERS)
  return wrk.format("POST", "/mma/still/create", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  local q = {}
  for i = 1, 999 do q[i] = string.format("%d", latency:percentile(i / 10)) end
  io.write("QUANTILES_US " .. table.concat(q, ",") .. "\\n")
end
"""


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int
    cpu_s: float
    duration_s: float
    server_cpu_s: float = 0.0  # filled in by callers that watch the server
    quantiles_ms: tuple[float, ...] = ()  # latency at 0.1%, 0.2%, ... 99.9% (the Lua `done` hook)

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.duration_s if self.duration_s else 0.0


def ensure_wrk() -> str:
    """The wrk binary; runs bench/setup.sh (apt-get, as root) when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["bash", str(SETUP)], check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed and bench/setup.sh could not install it (needs root and apt-get)")
    return found


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse(out: str, cpu_s: float, duration_s: float) -> WrkResult:
    def latency(q: str) -> float:
        m = re.search(rf"^\s*{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return _ms(m.group(1), m.group(2)) if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    quantiles = re.search(r"^QUANTILES_US ([\d,]+)$", out, re.M)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(rps.group(1)) if rps else 0.0, p50_ms=latency("50"), p99_ms=latency("99"),
        requests=int(total.group(1)) if total else 0, non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(g) for g in errs.groups()) if errs else 0, cpu_s=cpu_s, duration_s=duration_s,
        quantiles_ms=tuple(int(v) / 1000 for v in quantiles.group(1).split(",")) if quantiles else (),
    )


def merged(runs: list[WrkResult]) -> WrkResult:
    """Several runs as one: counts and times added, p50/p99 from the runs' latency distributions mixed by
    request count (each run's 999 quantiles weigh its requests / 999)."""
    if len(runs) == 1:
        return runs[0]
    points = sorted((q, run.requests / len(run.quantiles_ms)) for run in runs for q in run.quantiles_ms)
    total = sum(weight for _, weight in points)

    def quantile(share: float) -> float:
        seen = 0.0
        for value, weight in points:
            seen += weight
            if seen >= share * total:
                return value
        return points[-1][0] if points else float("nan")

    duration = sum(r.duration_s for r in runs)
    requests = sum(r.requests for r in runs)
    return WrkResult(
        rps=sum(r.rps * r.duration_s for r in runs) / duration if duration else 0.0,
        p50_ms=quantile(0.50), p99_ms=quantile(0.99),
        requests=requests, non_2xx=sum(r.non_2xx for r in runs), errors=sum(r.errors for r in runs),
        cpu_s=sum(r.cpu_s for r in runs), duration_s=duration,
        quantiles_ms=tuple(quantile(i / 1000) for i in range(1, 1000)),
    )


async def _first_creates(url: str, customers: int, connections: int) -> int:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=connections)) as client:
        todo = iter(range(customers))
        failed = 0

        async def worker() -> None:
            nonlocal failed
            for i in todo:
                body = f'{{"passId":"pass:anon:bench-{i}",{BRIEF}}}'
                answer = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                failed += answer.status_code >= 300

        await asyncio.gather(*(worker() for _ in range(connections)))
        return failed


def first_creates(url: str, customers: int, connections: int) -> int:
    """One create for each of the `customers` pass ids wrk sends (`connections` at a time); the number
    that failed. A timed warm-up reaches only the pass ids its rate gets to: at 600 creates/s, 4 s of wrk
    had sent 724 of 1,000 customers their first create, and the next round met the rest for the first
    time (the gateway's customer ensure, a round trip through billing and the ledger, in its p99)."""
    return asyncio.run(_first_creates(url, customers, connections))


def run_wrk(url: str, *, connections: int, duration_s: float, customers: int, threads: int = 2) -> WrkResult:
    """`wrk -t threads -c connections -d duration --latency` POSTing still creates (bounded by time)."""
    binary = ensure_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(LUA.replace("CUSTOMERS", str(customers)).replace("BRIEF", BRIEF))
        script = fh.name
    children_cpu_delta_last()
    done = subprocess.run(
        [binary, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s", "--latency",
         "--timeout", "5s", "-s", script, url],
        capture_output=True, text=True, timeout=duration_s + 30, check=False,
    )
    cpu = children_cpu_delta_last()
    Path(script).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse(done.stdout, cpu, duration_s)
