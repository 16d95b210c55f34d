"""Accept rate: `POST /mma/still/create` -> `queued` under wrk, against a bare FastAPI endpoint.

The pipeline is stopped while this runs (accepted jobs wait in JOBS and are purged
after), so the figure is the accept path alone: gateway -> billing -> ledger -> back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.common import Figure, ratio
from bench.profile import Profile, Recorder
from bench.stack import ROOT, Stack, describe_errors, errors_since, http_ok, log_offset
from bench.wrkload import WrkResult, run_wrk
from libs.devinfra import free_port

CONNECTIONS = 32


def _baseline(duration_s: float, customers: int) -> WrkResult:
    """wrk against the bare endpoint; `server_cpu_s` is the server process's CPU during the run."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline_http", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not http_ok(f"http://127.0.0.1:{port}/healthz"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the baseline FastAPI server did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/mma/still/create"
        run_wrk(url, connections=CONNECTIONS, duration_s=2, customers=customers)  # warm-up
        server = psutil.Process(proc.pid)
        before = sum(server.cpu_times()[:2])
        result = run_wrk(url, connections=CONNECTIONS, duration_s=duration_s, customers=customers)
        result.server_cpu_s = sum(server.cpu_times()[:2]) - before
        return result
    finally:
        proc.terminate()
        proc.wait(15)


def _describe(r: WrkResult) -> str:
    return f"{r.rps:,.0f} req/s p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms"


def run(stack: Stack, duration_s: float, customers: int) -> Figure:
    base = _baseline(duration_s, customers)
    url = f"{stack.gateway_url}/mma/still/create"
    run_wrk(url, connections=CONNECTIONS, duration_s=2, customers=customers)  # warm-up
    offset = log_offset(stack, "gateway")
    cpu_before = stack.cpu_seconds()
    product = run_wrk(url, connections=CONNECTIONS, duration_s=duration_s, customers=customers)
    cpu_used = {name: stack.cpu_seconds()[name] - spent for name, spent in cpu_before.items()}
    r = ratio(product.rps, base.rps)
    bad = product.non_2xx + product.errors
    met = r >= 0.5 and product.p99_ms < 50 and bad == 0
    why = []
    if r < 0.5:
        why.append(f"{r:.2f} of baseline < 0.5")
    if not product.p99_ms < 50:
        why.append(f"p99 {product.p99_ms:.0f} ms >= 50")
    if bad:
        why.append(f"{bad} non-2xx/errors")
        logged = describe_errors(errors_since(stack, "gateway", offset))
        if logged:
            why.append(logged)
    per_create = {name: 1000 * spent / max(1, product.requests) for name, spent in cpu_used.items()}
    split = ", ".join(f"{name} {ms:.2f}" for name, ms in per_create.items())
    text = (f"{_describe(product)} ({product.requests} accepted, {bad} failed) vs bare FastAPI {_describe(base)}"
            f" -> ratio {r:.2f} (target >= 0.5, p99 < 50 ms); wrk -c{CONNECTIONS} CPU {product.cpu_pct:.0f}% "
            f"(baseline run {base.cpu_pct:.0f}%); CPU ms per accepted create: {split} = "
            f"{sum(per_create.values()):.2f} (bare FastAPI: {1000 * base.server_cpu_s / max(1, base.requests):.2f})")
    return Figure("accept rate", text, met, ", ".join(why),
                  extra={"product": product, "baseline": base})


def profile(stack: Stack, duration_s: float, customers: int, out_dir: Path) -> list[Profile]:
    """py-spy on gateway, billing and ledger while wrk drives the accept path again."""
    recorders = [Recorder(name, stack.pid(name), duration_s, out_dir) for name in ("gateway", "billing", "ledger")]
    time.sleep(0.5)
    run_wrk(f"{stack.gateway_url}/mma/still/create", connections=CONNECTIONS, duration_s=duration_s,
            customers=customers)
    return [r.result() for r in recorders]
