"""Cold start: `python -m libs.devstack up` (what `make up` runs once installed) on an empty state dir.

Measured: the whole `up` to the first 200 from the gateway's `/health`, its phases (embedded NATS
and Postgres with initdb, the migrations, the services) from the moments devstack announces them,
and each service from its spawn (the process's start time) to its `service.ready` log line. The
target is on the services: each one ready within 3 s of its spawn (what a restart or a new
replica costs); initdb happens once per state dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

from bench.common import Figure
from bench.stack import ROOT, SERVICES, http_ok
from libs.devinfra import free_port, stop_process

TARGET_S = 3.0
PHASES = (("nats", "starting embedded NATS"), ("postgres", "starting embedded Postgres"),
          ("migrations", "applying MEGA migrations"))


def _ready_at(log_path: Path) -> float | None:
    """Epoch seconds of the service's `service.ready` line (JSON logs)."""
    with contextlib.suppress(OSError):
        for raw in log_path.read_text(errors="replace").splitlines():
            if '"service.ready"' not in raw:
                continue
            with contextlib.suppress(ValueError, KeyError):
                return datetime.fromisoformat(json.loads(raw)["timestamp"].replace("Z", "+00:00")).timestamp()
    return None


def _services(state_dir: Path) -> dict[str, float]:
    """Seconds from each service's spawn to its ready line."""
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads((state_dir / "infra.json").read_text()).get("pids") or {}
        found: dict[str, float] = {}
        for name in SERVICES:
            ready = _ready_at(state_dir / "logs" / f"{name}.log")
            with contextlib.suppress(psutil.Error, TypeError):
                if ready is not None:
                    found[name] = ready - psutil.Process(int(pids[name])).create_time()
        return found
    return {}


def run(root: Path, timeout_s: float = 120.0) -> Figure:
    port = free_port()
    state_dir = root / "cold"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update({"MMA_STATE_DIR": str(state_dir), "MMA_GATEWAY_PORT": str(port), "MMA_LOG_LEVEL": "INFO",
                "MMA_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)})
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "libs.devstack", "up"], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: dict[str, float] = {}

    def read_output() -> None:  # the phases from the moments devstack announces them; the rest to a log
        assert proc.stdout is not None
        with (root / "coldstart.log").open("wb") as log:
            for line in proc.stdout:
                log.write(line)
                for phase, text in PHASES:
                    if phase not in seen and text.encode() in line:
                        seen[phase] = time.monotonic() - started

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    elapsed = None
    services: dict[str, float] = {}
    try:
        while time.monotonic() - started < timeout_s and proc.poll() is None:
            if http_ok(f"http://127.0.0.1:{port}/health", timeout=2):
                elapsed = time.monotonic() - started
                break
            time.sleep(0.05)
        while elapsed is not None and time.monotonic() - started < timeout_s:  # the pipeline may be ready later
            services = _services(state_dir)
            if len(services) == len(SERVICES) or proc.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        stop_process(proc, signal.SIGTERM, 60)
        reader.join(5)
    if elapsed is None:
        return Figure("cold start", f"no healthy answer within {timeout_s:.0f}s (see {root / 'coldstart.log'})")
    marks = [seen.get(phase) for phase, _ in PHASES]
    launch = f"{marks[0]:.1f} s" if marks[0] is not None else "?"
    infra = f"{marks[2] - marks[0]:.1f} s" if marks[0] is not None and marks[2] is not None else "?"
    after = f"{elapsed - marks[2]:.1f} s" if marks[2] is not None else "?"
    each = ", ".join(f"{name} {services[name]:.1f} s" for name in SERVICES if name in services)
    slowest = max(services.values()) if len(services) == len(SERVICES) else None
    met = slowest is not None and slowest < TARGET_S
    why = "" if met else ("a service's ready line was not found" if slowest is None
                          else f"slowest service {slowest:.1f} s >= {TARGET_S:.0f} s")
    text = (f"each service from spawn to ready: {each or '?'}; `libs.devstack up` on an empty state dir to the "
            f"first 200 on /health {elapsed:.1f} s (devstack itself {launch}, NATS + Postgres initdb {infra}, then "
            f"migrations + the services {after}) (target: every service < {TARGET_S:.0f} s)")
    return Figure("cold start", text, met, why)
