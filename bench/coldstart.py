"""Cold start: `python -m libs.devstack up` (what `make up` runs once installed) on an empty state dir,
to the first 200 from the gateway's `/health`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure
from bench.stack import ROOT, http_ok
from libs.devinfra import free_port, stop_process


def run(root: Path, timeout_s: float = 120.0) -> Figure:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update({"MMA_STATE_DIR": str(root / "cold"), "MMA_GATEWAY_PORT": str(port), "MMA_LOG_LEVEL": "WARNING",
                "MMA_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)})
    log = (root / "coldstart.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "libs.devstack", "up"], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    elapsed = None
    try:
        while time.monotonic() - started < timeout_s and proc.poll() is None:
            if http_ok(f"http://127.0.0.1:{port}/health", timeout=2):
                elapsed = time.monotonic() - started
                break
            time.sleep(0.05)
    finally:
        stop_process(proc, signal.SIGTERM, 60)
        log.close()
    if elapsed is None:
        return Figure("cold start", f"no healthy answer within {timeout_s:.0f}s (see {root / 'coldstart.log'})")
    return Figure("cold start", f"{elapsed:.1f} s from `libs.devstack up` on an empty state dir (initdb, "
                                f"migrations, 4 services) to the first 200 on /health")
