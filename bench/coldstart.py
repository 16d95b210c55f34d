"""Cold start: what a restart or a new replica of one service costs, and `make up` from nothing.

The target is on the restart: with the stack of `python -m libs.devstack up` running, one more copy
of each service (the same command and environment as devstack's child, its own ports) is spawned
alone, and timed from just before the spawn to its `service.ready` line on its output: interpreter
start, every import, settings, the bus connect, streams and consumers, its own setup. Each one,
twice, the slower counts: ready within 3 s. Nothing is pre-warmed: a fresh process each time.
The CPU the process used by then is printed beside: on a shared box the wall time is that CPU
plus the waits for a core.
Bytecode caches are as a machine has them after the first start (that first start, below, writes
them; the production image writes them at build); the same restarts without them
(`PYTHONDONTWRITEBYTECODE=1`, every module compiled from source) are printed beside.

Also printed, without a target: `python -m libs.devstack up` on an empty state dir (initdb, the
migrations and all four services spawned at once on the shared cores, compiling their bytecode) to
the first 200 from the gateway's `/health`, its phases from the moments devstack announces them, and
each service from its spawn (the process's start time) to its `service.ready` line in that crowd.
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
ROUNDS = 2  # restarts per service with bytecode; the slower one counts
READY = b'"service.ready"'
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


def _pids(state_dir: Path) -> dict[str, int]:
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads((state_dir / "infra.json").read_text()).get("pids") or {}
        return {name: int(pid) for name, pid in pids.items() if pid}
    return {}


def _crowd(state_dir: Path) -> dict[str, float]:
    """Seconds from each devstack child's spawn to its ready line."""
    pids, found = _pids(state_dir), {}
    for name in SERVICES:
        ready = _ready_at(state_dir / "logs" / f"{name}.log")
        with contextlib.suppress(psutil.Error, KeyError):
            if ready is not None:
                found[name] = ready - psutil.Process(pids[name]).create_time()
    return found


def restart(name: str, env: dict[str, str], log_path: Path, timeout_s: float = 60.0) -> tuple[float, float] | None:
    """Spawn `python -m services.<name>` alone: (seconds from just before the spawn to its ready line, CPU
    seconds it used by then: on a shared box the wall time is this CPU time plus the waits for a core)."""
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ready = threading.Event()
    took: list[tuple[float, float]] = []

    def read_output() -> None:
        assert proc.stdout is not None
        with log_path.open("ab") as log:
            for line in proc.stdout:
                if not took and READY in line:
                    wall = time.monotonic() - began
                    cpu = float("nan")
                    with contextlib.suppress(psutil.Error):
                        times = psutil.Process(proc.pid).cpu_times()
                        cpu = times.user + times.system
                    took.append((wall, cpu))
                    ready.set()
                log.write(line)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        while not ready.wait(0.1) and proc.poll() is None and time.monotonic() - began < timeout_s:
            pass
    finally:
        stop_process(proc, signal.SIGTERM, 30)
        reader.join(5)
    return took[0] if took else None


def _replica_env(pid: int, name: str) -> dict[str, str]:
    """The running child's own environment, with ports of its own (a second copy beside the first)."""
    env = dict(psutil.Process(pid).environ())
    env["MMA_HEALTH_PORT"] = str(free_port())  # as in the image: the health server is part of the start
    if name == "gateway":
        env["MMA_GATEWAY_PORT"] = str(free_port())
    return env


Took = dict[str, tuple[float, float]]  # service: (wall seconds, CPU seconds)


def _restarts(state_dir: Path, logs: Path) -> tuple[Took, Took]:
    """Per service: the slowest of ROUNDS restarts with bytecode caches, and one without."""
    pids = _pids(state_dir)
    warm: Took = {}
    bare: Took = {}
    for name in SERVICES:
        env = _replica_env(pids[name], name)
        rounds = [restart(name, env, logs / f"{name}-restart.log") for _ in range(ROUNDS)]
        done = [t for t in rounds if t is not None]
        if len(done) == ROUNDS:
            warm[name] = max(done)
        plain = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"}  # the stdlib's own bytecode only
        took = restart(name, {**plain, "PYTHONDONTWRITEBYTECODE": "1"}, logs / f"{name}-restart-nobytecode.log")
        if took is not None:
            bare[name] = took
    return warm, bare


def run(root: Path, timeout_s: float = 120.0) -> Figure:
    port = free_port()
    state_dir = root / "cold"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_") and k != "PYTHONDONTWRITEBYTECODE"}
    # bytecode written where a fresh install keeps it (beside the sources), here in the run's own dir
    env.update({"MMA_STATE_DIR": str(state_dir), "MMA_GATEWAY_PORT": str(port), "MMA_LOG_LEVEL": "INFO",
                "MMA_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(root / "pycache")})
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
    crowd: dict[str, float] = {}
    warm: Took = {}
    bare: Took = {}
    try:
        while time.monotonic() - started < timeout_s and proc.poll() is None:
            if http_ok(f"http://127.0.0.1:{port}/health", timeout=2):
                elapsed = time.monotonic() - started
                break
            time.sleep(0.05)
        while elapsed is not None and time.monotonic() - started < timeout_s:  # the pipeline may be ready later
            crowd = _crowd(state_dir)
            if len(crowd) == len(SERVICES) or proc.poll() is not None:
                break
            time.sleep(0.2)
        if len(crowd) == len(SERVICES) and proc.poll() is None:
            warm, bare = _restarts(state_dir, state_dir / "logs")
    finally:
        stop_process(proc, signal.SIGTERM, 60)
        reader.join(5)
    if elapsed is None:
        return Figure("cold start", f"no healthy answer within {timeout_s:.0f}s (see {root / 'coldstart.log'})")
    return _figure(elapsed, seen, crowd, warm, bare)


def _each(found: dict[str, float]) -> str:
    return ", ".join(f"{name} {found[name]:.1f} s" for name in SERVICES if name in found) or "?"


def _each_cpu(found: Took) -> str:
    return ", ".join(f"{name} {found[name][0]:.1f} s (CPU {found[name][1]:.1f} s)" for name in SERVICES
                     if name in found) or "?"


def _figure(elapsed: float, seen: dict[str, float], crowd: dict[str, float], warm: Took, bare: Took) -> Figure:
    marks = [seen.get(phase) for phase, _ in PHASES]
    launch = f"{marks[0]:.1f} s" if marks[0] is not None else "?"
    infra = f"{marks[2] - marks[0]:.1f} s" if marks[0] is not None and marks[2] is not None else "?"
    after = f"{elapsed - marks[2]:.1f} s" if marks[2] is not None else "?"
    slowest = max(wall for wall, _ in warm.values()) if len(warm) == len(SERVICES) else None
    met = slowest is not None and slowest < TARGET_S
    why = "" if met else ("a restarted service's ready line was not found" if slowest is None
                          else f"slowest restart {slowest:.1f} s >= {TARGET_S:.0f} s")
    text = (f"restart of one service (a new copy spawned alone beside the running stack, spawn to its "
            f"`service.ready` line, imports included, slower of {ROUNDS}): {_each_cpu(warm)}; the same without "
            f"bytecode caches (every module compiled): {_each_cpu(bare)}. All four at once by `libs.devstack up` on "
            f"an empty state dir (first start: initdb, compiling, 2 shared cores), each spawn to ready: "
            f"{_each(crowd)}; to the first 200 on /health {elapsed:.1f} s (devstack itself {launch}, NATS + "
            f"Postgres initdb {infra}, then migrations + the services {after}) "
            f"(target: every restart < {TARGET_S:.0f} s)")
    return Figure("cold start", text, met, why)
