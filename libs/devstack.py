"""`make up` / `make down`: the whole product on one machine, with no API keys.

`python -m libs.devstack up` starts embedded NATS and Postgres (or uses external /
container ones), migrates MEGA, starts the four services as child processes, prints
where to look, then streams their logs until Ctrl-C, which stops everything cleanly.
State (JetStream files, the Postgres cluster, assets, logs) lives in the state dir,
so a second `up` keeps the credits and generations of the first. `down` stops what
an earlier `up` left running (its pids are in `<state_dir>/infra.json`).

With no shop configured (MMA_SHOPIFY_STORE_DOMAIN unset), `up` also runs the offline shop
(libs/offline_shop.py) as one more child, with an Admin token and webhook secret generated once
per state dir, so the buy button opens a local invoice whose Pay button credits the pass id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.containerinfra import ContainerInfra
from libs.devinfra import NatsServer, PostgresServer, free_port, port_is_free, stop_process
from libs.settings import Settings
from libs.startup import infra_file

SERVICES = ("ledger", "billing", "pipeline", "gateway")
DATABASE = "mina"
COLOURS = {"ledger": "\033[35m", "billing": "\033[33m", "pipeline": "\033[36m", "gateway": "\033[32m",
           "shop": "\033[34m"}
RESET = "\033[0m"


def say(text: str) -> None:
    print(f"[mina] {text}", flush=True)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclass
class Child:
    """A service process whose output is prefixed and copied to the terminal and a log file."""

    name: str
    env: dict[str, str]
    log_path: Path
    argv: tuple[str, ...] = ()  # default: `python -m services.<name>`
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _pump: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *(self.argv or ("-m", f"services.{self.name}"))], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        tty = sys.stdout.isatty()
        prefix = f"{COLOURS.get(self.name, '')}{self.name:>8}{RESET} | " if tty else f"{self.name:>8} | "
        with self.log_path.open("ab") as logf:
            for line in self.proc.stdout:
                logf.write(line)
                logf.flush()
                sys.stdout.write(prefix + line.decode(errors="replace"))
                sys.stdout.flush()

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout_s)


class DevStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.state_path = infra_file(settings).resolve()
        self.nats: NatsServer | None = None
        self.pg: PostgresServer | None = None
        self.containers: ContainerInfra | None = None
        self.children: list[Child] = []
        self.nats_url = ""
        self.database_url = ""
        self.previous = _read_state(self.state_path)  # the last run's ports, read before this run writes
        self.shop_port: int | None = None
        self.shop_env: dict[str, str] = {}

    # ------------------------------------------------------------------ infrastructure

    def start_infra(self) -> None:
        mode = self.settings.infra
        previous = self.previous
        if mode == "external":
            if not (self.settings.nats_url and self.settings.database_url):
                raise SystemExit("infra=external needs MMA_NATS_URL and MMA_DATABASE_URL")
            self.nats_url, self.database_url = self.settings.nats_url, self.settings.database_url
        elif mode == "containers":
            images = f"{self.settings.nats_image} and {self.settings.postgres_image}"
            say(f"starting NATS and Postgres containers ({images}) ...")
            self.containers = ContainerInfra(self.settings.nats_image, self.settings.postgres_image, DATABASE).start()
            self.nats_url, self.database_url = self.containers.nats_url, self.containers.database_url
        else:
            say(f"starting embedded NATS (JetStream) under {self.state_dir / 'nats'} ...")
            self.nats = NatsServer(self.state_dir / "nats", port=int(previous.get("nats_port") or 0)).start()
            say(f"starting embedded Postgres under {self.state_dir / 'pg'} ...")
            self.pg = PostgresServer(self.state_dir / "pg", port=int(previous.get("pg_port") or 0)).start()
            if self.pg.psql(f"select 1 from pg_database where datname = '{DATABASE}'").strip() != "1":
                self.pg.psql(f"create database {DATABASE}")
            self.nats_url, self.database_url = self.nats.url, self.pg.dsn(DATABASE)
        self.write_state()

    def write_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "infra": self.settings.infra,
            "nats_url": self.nats_url,
            "database_url": self.database_url,
            "nats_port": self.nats.port if self.nats else None,
            "pg_port": self.pg.port if self.pg else None,
            "shop_port": self.shop_port,
            "shop_url": self.shop_env.get("MMA_SHOPIFY_STORE_DOMAIN"),
            "owner_pid": os.getpid(),
            "pids": {
                "nats": self.nats.pid if self.nats else None,
                "postgres": self.pg.pid if self.pg else None,
                **{c.name: c.proc.pid for c in self.children if c.proc is not None},
            },
            "gateway_url": self.settings.gateway_public_url,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.state_path.write_text(json.dumps(state, indent=2))

    # ------------------------------------------------------------------ services

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "MMA_NATS_URL": self.nats_url,
            "MMA_DATABASE_URL": self.database_url,
            "MMA_STATE_DIR": str(self.state_dir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(Path.cwd()),
            **self.shop_env,
        })
        if sys.stdout.isatty() and "MMA_LOG_FORMAT" not in os.environ:
            env["MMA_LOG_FORMAT"] = "console"
        return env

    def migrate(self) -> None:
        say("applying MEGA migrations ...")
        subprocess.run([sys.executable, "-m", "services.ledger", "migrate"], env=self.child_env(), check=True)

    def plan_shop(self) -> None:
        """No shop configured: the offline shop on a loopback port (the previous one when free), with
        a token and webhook secret kept in `<state_dir>/shop/secrets.json`, and the buyer's way back
        to the studio unless MMA_FRONTEND_URL says where the frontend is."""
        if self.settings.shopify_store_domain:
            return
        previous = self.previous.get("shop_port")
        self.shop_port = int(previous) if previous and port_is_free(int(previous)) else free_port()
        path = self.state_dir / "shop" / "secrets.json"
        keys = _read_state(path)
        if not (keys.get("admin_token") and keys.get("webhook_secret")):
            keys = {"admin_token": f"shpat_offline_{secrets.token_hex(16)}", "webhook_secret": secrets.token_hex(24)}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(keys))
            path.chmod(0o600)
        webhook_secret = self.settings.shopify_webhook_secret
        self.shop_env = {
            "MMA_SHOPIFY_STORE_DOMAIN": f"http://127.0.0.1:{self.shop_port}",
            "MMA_SHOPIFY_ADMIN_TOKEN": keys["admin_token"],
            "MMA_SHOPIFY_WEBHOOK_SECRET": webhook_secret.get_secret_value() if webhook_secret
            else keys["webhook_secret"],
        }
        if "frontend_url" not in self.settings.model_fields_set:
            self.shop_env["MMA_FRONTEND_URL"] = f"{self.settings.gateway_public_url}/studio"

    def start_services(self) -> None:
        log_dir = self.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        if self.shop_port is not None:
            shop = Child("shop", self.child_env(), log_dir / "shop.log", argv=(
                "-m", "libs.offline_shop", "--port", str(self.shop_port),
                "--state", str(self.state_dir / "shop" / "orders.json")))
            shop.start()
            self.children.append(shop)
        for name in SERVICES:
            child = Child(name, self.child_env(), log_dir / f"{name}.log")
            child.start()
            self.children.append(child)
        self.write_state()

    def wait_healthy(self, timeout_s: float = 90.0) -> float:
        url = f"{self.settings.gateway_public_url}/health"
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    raise SystemExit(f"{child.name} exited with {child.proc.returncode}; see {child.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
        raise SystemExit(f"the gateway did not answer {url} within {timeout_s:.0f}s")

    def supervise(self, stopping: threading.Event) -> None:
        """Restart a service that died (a crash must not take the product down), a few times."""
        while not stopping.wait(1.0):
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None and not stopping.is_set():
                    if child.restarts >= 5:
                        continue
                    child.restarts += 1
                    say(f"{child.name} exited with {child.proc.returncode}; restarting ({child.restarts}/5)")
                    child.start()
                    self.write_state()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.containers is not None:
            self.containers.stop()
        state = _read_state(self.state_path)
        state["pids"] = {}
        state["owner_pid"] = None
        self.state_path.write_text(json.dumps(state, indent=2))


def up(settings: Settings) -> int:
    state = _read_state(infra_file(settings))
    if _alive(state.get("owner_pid")):
        say(f"already running (pid {state['owner_pid']}); `make down` stops it")
        return 1
    started = time.monotonic()
    stack = DevStack(settings)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        stack.start_infra()
        stack.plan_shop()
        stack.migrate()
        stack.start_services()
        stack.wait_healthy()
        elapsed = time.monotonic() - started
        base = settings.gateway_public_url
        say("")
        say(f"Mina Mind is up in {elapsed:.1f}s (infra: {settings.infra})")
        say(f"  gateway   {base}            (health: {base}/health)")
        say(f"  API docs  {base}/docs")
        say(f"  studio    {base}/studio")
        say(f"  NATS      {stack.nats_url}")
        say(f"  Postgres  {stack.database_url}")
        if stack.shop_port is not None:
            say(f"  shop      {stack.shop_env['MMA_SHOPIFY_STORE_DOMAIN']}   (offline: Buy opens an invoice paid here)")
        say(f"  state     {stack.state_dir}   (logs in {stack.state_dir / 'logs'})")
        say("  stop      Ctrl-C here, or `make down` from another terminal")
        say("")
        stack.supervise(stopping)
    finally:
        say("stopping ...")
        stack.stop()
        say("stopped")
    return 0


def down(settings: Settings) -> int:
    path = infra_file(settings)
    state = _read_state(path)
    owner = state.get("owner_pid")
    if owner and _alive(owner):
        os.kill(int(owner), signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(owner) and time.monotonic() < deadline:
            time.sleep(0.2)
    pids = state.get("pids") or {}
    for name in (*reversed(SERVICES), "shop", "postgres", "nats"):
        pid = pids.get(name)
        if pid and _alive(pid):
            say(f"stopping {name} (pid {pid})")
            os.kill(int(pid), signal.SIGINT if name == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids.values():
        if _alive(pid):
            os.kill(int(pid), signal.SIGKILL)
    if state:
        state["pids"], state["owner_pid"] = {}, None
        path.write_text(json.dumps(state, indent=2))
    say("nothing left running")
    return 0


def status(settings: Settings) -> int:
    state = _read_state(infra_file(settings))
    if not state:
        say("never started here")
        return 1
    for name, pid in (state.get("pids") or {}).items():
        say(f"{name:>9}: {'running' if _alive(pid) else 'stopped'} (pid {pid})")
    say(f"gateway: {state.get('gateway_url')}")
    if state.get("shop_url"):
        say(f"   shop: {state['shop_url']} (offline shop)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    settings = Settings()
    return {"up": up, "down": down, "status": status}[args.command](settings)


if __name__ == "__main__":
    raise SystemExit(main())
