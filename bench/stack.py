"""The product under measurement: embedded NATS + Postgres in a temp dir and the service processes.

Services run as `python -m services.<name>` with `MMA_INFRA=external` and the
bench's own servers; readiness is polled over HTTP (the gateway's `/healthz`, the
other services' health port), since the bench keeps their logs at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from libs.devinfra import NatsServer, PostgresServer, free_port, stop_process
from libs.offline_shop import OfflineShop, serve

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token-3c7d"
SHOP_TOKEN = "shpat_bench_offline_shop"  # billing needs a shop: the offline one, in this process
DATABASE = "mina"
SERVICES = ("ledger", "billing", "pipeline", "gateway")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class ServiceProc:
    name: str
    env: dict[str, str]
    log_path: Path
    health_url: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], cwd=ROOT, env=self.env,
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
        )
        logf.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if http_ok(self.health_url):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready in {timeout_s:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout_s)


class RssSampler:
    """Peak RSS per service name (over every process that carried the name), sampled in a thread."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        self.window: dict[str, int] = {}  # peaks since the last `reset_window`
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()

    def track(self, name: str, pid: int | None) -> None:
        with self._lock:
            if pid is None:
                self._pids.pop(name, None)
            else:
                self._pids[name] = pid

    def reset_window(self) -> None:
        with self._lock:
            self.window = {}

    def sample(self) -> None:
        with self._lock:
            pids = dict(self._pids)
        for name, pid in pids.items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
            with self._lock:
                self.peaks[name] = max(self.peaks.get(name, 0), rss)
                self.window[name] = max(self.window.get(name, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


WAL_SEGMENTS = 32  # 512 MB of recycled WAL: more than a full accept figure writes (about 200 MB)


@dataclass
class Stack:
    """Embedded servers + services; everything lives under `root` and stops with `close`."""

    root: Path
    pg_fast: bool = False
    nats: NatsServer | None = None
    pg: PostgresServer | None = None
    dsn: str = ""
    gateway_port: int = 0
    services: dict[str, ServiceProc] = field(default_factory=dict)
    rss: RssSampler = field(default_factory=RssSampler)
    base_env: dict[str, str] = field(default_factory=dict)
    shop: ThreadingHTTPServer | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    def start_infra(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(self.root / "nats").start()
        self.pg = PostgresServer(self.root / "pg", fast=self.pg_fast).start()
        self.rss.track("nats-server", self.nats.pid)
        self.rss.track("postgres", self.pg.pid)
        if self.pg.psql(f"select 1 from pg_database where datname = '{DATABASE}'").strip() != "1":
            self.pg.psql(f"create database {DATABASE}")
        self.dsn = self.pg.dsn(DATABASE)
        from services.ledger.migrate import apply_migrations

        asyncio.run(apply_migrations(self.dsn))
        self.gateway_port = free_port()
        shop_port = free_port()
        self.shop = serve(OfflineShop(SHOP_TOKEN, base_url=f"http://127.0.0.1:{shop_port}"), shop_port)
        threading.Thread(target=self.shop.serve_forever, name="offline-shop", daemon=True).start()
        (self.root / "logs").mkdir(exist_ok=True)
        self.base_env = {
            "MMA_INFRA": "external",
            "MMA_NATS_URL": self.nats.url,
            "MMA_DATABASE_URL": self.dsn,
            "MMA_STATE_DIR": str(self.root / "state"),
            "MMA_GATEWAY_PORT": str(self.gateway_port),
            "MMA_PROVIDER": "offline",
            "MMA_OFFLINE_LATENCY_MS": "0",
            "MMA_WELCOME_CREDITS": "0",
            "MMA_ADMIN_TOKEN": ADMIN_TOKEN,
            "MMA_LOG_LEVEL": "WARNING",
            "MMA_LOG_FORMAT": "json",
            "MMA_RATE_LIMIT_PER_MINUTE": "0",
            "MMA_SHOPIFY_STORE_DOMAIN": f"http://127.0.0.1:{shop_port}",
            "MMA_SHOPIFY_ADMIN_TOKEN": SHOP_TOKEN,
        }

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
        env.update(self.base_env)
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        for key, value in overrides.items():
            env[key if key.startswith("MMA_") else f"MMA_{key.upper()}"] = str(value)
        return env

    def start(self, name: str, **overrides: Any) -> ServiceProc:
        """Start (or restart) `services.<name>` and wait until its health endpoint answers."""
        self.stop(name)
        if name == "gateway":
            health = f"{self.gateway_url}/healthz"
            env = self.env(**overrides)
        else:
            port = free_port()
            health = f"http://127.0.0.1:{port}/readyz"
            env = self.env(health_port=port, **overrides)
        index = sum(1 for p in (self.root / "logs").glob(f"{name}-*.log"))
        svc = ServiceProc(name, env, self.root / "logs" / f"{name}-{index}.log", health)
        svc.start()
        self.services[name] = svc
        self.rss.track(name, svc.pid)
        svc.wait_ready()
        return svc

    def start_all(self, **overrides: Any) -> None:
        for name in SERVICES:
            self.start(name, **overrides)

    def stop(self, name: str) -> None:
        svc = self.services.pop(name, None)
        if svc is not None:
            self.rss.sample()
            svc.stop()
            self.rss.track(name, None)

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU so far of each running service, nats-server and Postgres (its backends, live or exited)."""
        procs: dict[str, list[psutil.Process]] = {}
        for name, svc in self.services.items():
            if svc.pid is not None:
                procs[name] = [psutil.Process(svc.pid)]
        if self.nats is not None and self.nats.pid:
            procs["nats-server"] = [psutil.Process(self.nats.pid)]
        if self.pg is not None and self.pg.pid:
            postmaster = psutil.Process(self.pg.pid)
            procs["postgres"] = [postmaster, *postmaster.children(recursive=True)]
        spent: dict[str, float] = {}
        for name, group in procs.items():
            total = 0.0
            for proc in group:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            spent[name] = total
        if "postgres" in procs:  # backends that exited since: the postmaster reaped them into its children's times
            with contextlib.suppress(psutil.Error):
                reaped = procs["postgres"][0].cpu_times()
                spent["postgres"] += reaped.children_user + reaped.children_system
        return spent

    def pid(self, name: str) -> int:
        svc = self.services[name]
        assert svc.pid is not None
        return svc.pid

    def recycle_wal(self, segments: int = WAL_SEGMENTS) -> None:
        """Leave `segments` recycled WAL segments ahead, as a database that has run a while has.

        This Postgres was initdb'd minutes ago and has never checkpointed, so every 16 MB of WAL it
        creates a new segment: 16 MB of zeros written and flushed while every commit waits. Under the
        accept load that is every 3-4 s, 30-70 ms each on this VM's disk, and with the GIN index's
        pending list (supabase/migrations/20261203000000_gin_pending_limit.sql) it made the slow 1% of
        the accept rounds (the slow commits' times matched the segments' birth times, docs/bench.md,
        session 15). One that has checkpointed renames the segments it no longer needs into future
        ones instead. So: switch through `segments` new segments (each switch needs a WAL record
        since the last), then checkpoint, which recycles them. Both sides of a figure share it."""
        assert self.pg is not None
        switches = "".join("select pg_logical_emit_message(false, 'bench', 'wal'); select pg_switch_wal(); "
                           for _ in range(segments))
        self.pg.psql(switches + "checkpoint;")

    def close(self) -> None:
        for name in list(self.services):
            self.stop(name)
        if self.pg is not None:
            self.pg.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.shop is not None:
            self.shop.shutdown()
            self.shop.server_close()
        self.rss.close()


def log_offset(stack: Stack, name: str) -> int:
    svc = stack.services.get(name)
    return svc.log_path.stat().st_size if svc is not None and svc.log_path.exists() else 0


def errors_since(stack: Stack, name: str, offset: int) -> dict[str, int]:
    """The exceptions a service logged after `offset`: last traceback line -> count."""
    import json

    svc = stack.services.get(name)
    if svc is None or not svc.log_path.exists():
        return {}
    found: dict[str, int] = {}
    with svc.log_path.open("rb") as fh:
        fh.seek(offset)
        for raw in fh:
            if b'"exception"' not in raw:
                continue
            with contextlib.suppress(ValueError):
                text = str(json.loads(raw).get("exception") or "").strip().splitlines()[-1][:200]
                found[text] = found.get(text, 0) + 1
    return found


def describe_errors(found: dict[str, int]) -> str:
    if not found:
        return ""
    top = max(found, key=lambda k: found[k])
    return f"gateway logged {sum(found.values())} exceptions, e.g. {found[top]} x {top!r}"
