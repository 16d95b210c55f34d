"""Accept rate: `POST /mma/still/create` -> `queued` under wrk, against a bare FastAPI endpoint.

The pipeline is stopped while this runs (accepted jobs wait in JOBS and are purged
after), so the figure is the accept path alone: gateway -> billing -> ledger -> back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure, ratio
from bench.profile import Profile, Recorder
from bench.stack import ROOT, Stack, describe_errors, errors_since, http_ok, log_offset
from bench.wrkload import WrkResult, run_wrk
from libs.devinfra import free_port

CONNECTIONS = 32


def _baseline(duration_s: float, customers: int) -> WrkResult:
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
        return run_wrk(url, connections=CONNECTIONS, duration_s=duration_s, customers=customers)
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
    product = run_wrk(url, connections=CONNECTIONS, duration_s=duration_s, customers=customers)
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
    text = (f"{_describe(product)} ({product.requests} accepted, {bad} failed) vs bare FastAPI {_describe(base)}"
            f" -> ratio {r:.2f} (target >= 0.5, p99 < 50 ms); wrk -c{CONNECTIONS} CPU {product.cpu_pct:.0f}% "
            f"(baseline run {base.cpu_pct:.0f}%)")
    return Figure("accept rate", text, met, ", ".join(why),
                  extra={"product": product, "baseline": base})


def profile(stack: Stack, duration_s: float, customers: int, out_dir: Path) -> list[Profile]:
    """py-spy on gateway, billing and ledger while wrk drives the accept path again."""
    recorders = [Recorder(name, stack.pid(name), duration_s, out_dir) for name in ("gateway", "billing", "ledger")]
    time.sleep(0.5)
    run_wrk(f"{stack.gateway_url}/mma/still/create", connections=CONNECTIONS, duration_s=duration_s,
            customers=customers)
    return [r.result() for r in recorders]
