"""Real servers for every test that touches them.

Postgres: one embedded server per session (or `MMA_TEST_DATABASE_URL` for an external
one); migrations run once into a template database, each test gets a fresh clone.
NATS: a fresh embedded server per test (it starts in ~50 ms), so streams and durable
consumers never leak between tests. Services run as real subprocesses
(`python -m services.<name>`) configured through `MMA_*` environment variables.

`MMA_TEST_INFRA=containers`: both servers run in Docker containers instead (tests/dockerengine.py
says which engine): one Postgres container per session, and one NATS container per session that
is emptied before each test (a container per test would cost ~0.5 s each; deleting the streams
costs milliseconds and isolates just as well, and a test may still stop and start it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from libs.bus import Bus
from libs.containerinfra import NatsContainer, PostgresContainer
from libs.devinfra import NatsServer, PostgresServer, free_port
from libs.settings import Settings
from tests.dockerengine import DockerEngine, EngineUnavailable, fresh_jetstream, start_engine
from tests.helpers import wait_for
from tests.wire import OpenAIServer

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token-5f1c"
TEMPLATE_DB = "mina_template"
TEST_INFRA = os.environ.get("MMA_TEST_INFRA", "embedded")


def pytest_configure(config: pytest.Config) -> None:
    """The caller's shell cannot change the tests: every `MMA_*` variable it exported (a
    `MMA_GATEWAY_PORT` left from `make up`...) is dropped before any Settings is built.
    `MMA_TEST_*` variables are the tests' own switches (e.g. `MMA_TEST_DATABASE_URL`) and stay."""
    for name in [n for n in os.environ if n.startswith("MMA_") and not n.startswith("MMA_TEST_")]:
        del os.environ[name]


# --------------------------------------------------------------------------- time per tier

TIER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Setup + call + teardown of every test, summed by tier (the folder under tests/)."""
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0].split("::")[0]
    TIER_SECONDS[tier] = TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIER_SECONDS:
        return
    terminalreporter.write_sep("=", "time per tier")
    spent = sorted(TIER_SECONDS.items(), key=lambda item: -item[1])
    terminalreporter.write_line("tiers: " + ", ".join(f"{tier} {seconds:.0f} s" for tier, seconds in spent)
                                + f" (total {sum(TIER_SECONDS.values()) / 60:.1f} min)")


# --------------------------------------------------------------------------- Postgres


@dataclass
class ExternalPostgres:
    """An already running server given by `MMA_TEST_DATABASE_URL` (CI against a real server)."""

    base_dsn: str

    def dsn(self, database: str = "postgres") -> str:
        return self.base_dsn.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The Docker engine (and images) of the container tests; skips them, saying why, where none can run."""
    try:
        engine = start_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    engine.export()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def pg_container(docker_engine: DockerEngine) -> Iterator[PostgresContainer]:
    server = PostgresContainer(docker_engine.postgres_image, fast=True).start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def nats_container(docker_engine: DockerEngine) -> Iterator[NatsContainer]:
    server = NatsContainer(docker_engine.nats_image).start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Any]:
    external = os.environ.get("MMA_TEST_DATABASE_URL")
    if external:
        yield ExternalPostgres(external)
        return
    if TEST_INFRA == "containers":
        yield request.getfixturevalue("pg_container")
        return
    server = PostgresServer(tmp_path_factory.mktemp("pg") / "data", fast=True).start()
    yield server
    server.stop()


async def _admin_exec(pg: Any, *statements: str) -> None:
    conn = await asyncpg.connect(pg.dsn("postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def template_dsn(pg: Any) -> str:
    from services.ledger.migrate import apply_migrations

    await _admin_exec(pg, f"drop database if exists {TEMPLATE_DB}", f"create database {TEMPLATE_DB}")
    await apply_migrations(pg.dsn(TEMPLATE_DB))
    return str(pg.dsn(TEMPLATE_DB))


async def _clone(pg: Any, template: str, prefix: str) -> str:
    """A fresh database copied from `template` (Postgres copies it file by file: fast)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin_exec(pg, f"create database {name} template {template}")
    return str(pg.dsn(name))


@pytest.fixture
async def database_url(pg: Any, template_dsn: str) -> str:
    """A fresh, migrated database for this test."""
    return await _clone(pg, TEMPLATE_DB, "t")


PRE_MMA_FIXTURE = ROOT / "tests" / "ledger" / "fixtures" / "pre_mma.sql"
PROD_TEMPLATE_DB = "mina_prod_template"


@pytest.fixture(scope="session")
async def prod_template_dsn(pg: Any) -> str:
    """The production-shaped pre-MMA database (tests/ledger/fixtures/pre_mma.sql), migrated once."""
    from services.ledger.migrate import apply_migrations

    await _admin_exec(pg, f"drop database if exists {PROD_TEMPLATE_DB}", f"create database {PROD_TEMPLATE_DB}")
    conn = await asyncpg.connect(pg.dsn(PROD_TEMPLATE_DB))
    try:
        await conn.execute(PRE_MMA_FIXTURE.read_text())
    finally:
        await conn.close()
    await apply_migrations(pg.dsn(PROD_TEMPLATE_DB))
    return str(pg.dsn(PROD_TEMPLATE_DB))


@pytest.fixture
async def prod_database_url(pg: Any, prod_template_dsn: str) -> str:
    """A fresh copy of the migrated production-shaped database for this test (tests/production)."""
    return await _clone(pg, PROD_TEMPLATE_DB, "p")


@pytest.fixture
async def empty_database_url(pg: Any) -> str:
    """A fresh database with no tables (migration tests)."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    await _admin_exec(pg, f"create database {name}")
    return str(pg.dsn(name))


# --------------------------------------------------------------------------- NATS


@pytest.fixture
def nats(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NatsServer | NatsContainer]:
    if TEST_INFRA == "containers":
        yield fresh_jetstream(request.getfixturevalue("nats_container"))
        return
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


# --------------------------------------------------------------------------- settings and bus


def settings_env(settings: Settings) -> dict[str, str]:
    """The MMA_* environment that makes a subprocess build the same Settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, dict | list):
            value = json.dumps(value)
        env[f"MMA_{name.upper()}"] = str(value)
    return env


@pytest.fixture
def settings(tmp_path: Path, nats: NatsServer, database_url: str) -> Settings:
    port = free_port()
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        infra="external",
        nats_url=nats.url,
        database_url=database_url,
        state_dir=tmp_path / "state",
        gateway_port=port,
        admin_token=ADMIN_TOKEN,
        log_format="json",
        log_level="DEBUG",
        provider="offline",
        welcome_credits=0,
        ack_wait_s=10.0,
        rpc_timeout_s=10.0,
        upload_signing_secret="test-upload-secret-9d2e",
        shopify_webhook_secret="test-shopify-secret-71aa",
        # billing needs a shop; by default one that is down (checkout answers 503 SHOPIFY_UNREACHABLE with
        # Retry-After): a test that buys starts tests/wire/shopify_admin.py and passes its domain
        shopify_store_domain=f"http://127.0.0.1:{free_port()}",
        shopify_admin_token="shpat_test_shop_down",
        supabase_jwt_secret="test-jwt-secret-0b7c-abcdefghijklmnopqrstuvwxyz",
    )


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    connected = await Bus.connect(settings, settings.nats_url or "", name="test")
    await connected.ensure_streams()
    yield connected
    await connected.close()


# --------------------------------------------------------------------------- service processes


@dataclass
class ServiceProcess:
    """One `python -m services.<name>` child; its JSON log goes to `log_path`."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _logf: Any = None

    def start(self) -> None:
        self._logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=self._logf,
        )

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log entry written so far (other lines are skipped)."""
        entries = []
        if not self.log_path.exists():
            return entries
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready_count(self) -> int:
        return sum(1 for e in self.log_lines() if e.get("event") == "service.ready")

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        if self.is_running and self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait: the graceful shutdown path."""
        if self.proc is None:
            return None
        if self.is_running:
            self.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: self.proc is not None and self.proc.poll() is not None, timeout,
                       what=f"{self.name} to exit")
        return self.proc.returncode


@dataclass
class Services:
    """Starts and restarts the product's service processes for one test."""

    settings: Settings
    log_dir: Path
    procs: list[ServiceProcess] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
        env.update(settings_env(self.settings))
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        for key, value in overrides.items():
            env[key if key.startswith("MMA_") else f"MMA_{key.upper()}"] = str(value)
        return env

    async def start(self, name: str, timeout: float = 60.0, **overrides: Any) -> ServiceProcess:
        """Start `services.<name>` (again) and wait until it logs `service.ready`."""
        index = sum(1 for p in self.procs if p.name == name)
        proc = ServiceProcess(name, self.env(**overrides), self.log_dir / f"{name}-{index}.log")
        proc.start()
        self.procs.append(proc)

        def ready() -> bool:
            if not proc.is_running:
                raise AssertionError(f"{name} exited early:\n{proc.log_text()[-4000:]}")
            return proc.ready_count() > 0

        await wait_for(ready, timeout, what=f"{name} ready")
        return proc

    async def start_all(self, **overrides: Any) -> dict[str, ServiceProcess]:
        """ledger, billing, pipeline and gateway, in dependency order."""
        started = {}
        for name in ("ledger", "billing", "pipeline", "gateway"):
            started[name] = await self.start(name, **overrides)
        return started

    def all_logs(self) -> str:
        return "\n".join(p.log_text() for p in self.procs)

    async def shutdown(self) -> None:
        for proc in self.procs:
            if proc.is_running and proc.proc is not None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc.proc is not None:
                try:
                    await asyncio.to_thread(proc.proc.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if proc._logf is not None:
                proc._logf.close()


@pytest.fixture
async def services(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Services]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    launcher = Services(settings, log_dir)
    yield launcher
    await launcher.shutdown()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        artifacts = ROOT / "test-artifacts" / "logs" / request.node.name
        artifacts.mkdir(parents=True, exist_ok=True)
        for proc in launcher.procs:
            (artifacts / proc.log_path.name).write_text(proc.log_text())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        assert isinstance(server, OpenAIServer)
        yield server
