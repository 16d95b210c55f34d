"""Containers mode: NATS and Postgres in Docker containers through testcontainers.

The containers use the host network (`network_mode="host"`) and listen on free loopback ports
picked here (never 4222/5432), so nothing needs a container network address: the project's own
engine (scripts/docker-engine.sh) runs with `--bridge=none`. Images are settings
(`MMA_NATS_IMAGE`, `MMA_POSTGRES_IMAGE`): the official `nats:2.11` / `postgres:16` by default,
the locally built `mina-local/*` ones when the engine script set them. Readiness is checked
here, not by log lines: NATS must answer INFO with JetStream on and PING with PONG; Postgres
must answer a real query. Ryuk (testcontainers' reaper) is off unless asked for: its image comes
from a registry, and these classes stop and remove their own containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.devinfra import _pg_bin, free_port

DEFAULT_NATS_IMAGE = "nats:2.11"
DEFAULT_POSTGRES_IMAGE = "postgres:16"
PG_PASSWORD = "mina-containers"


def _docker_container(image: str) -> Any:
    try:
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.container import DockerContainer
    except ImportError as exc:  # pragma: no cover - testcontainers is a dependency
        raise RuntimeError("testcontainers is not installed (make install)") from exc
    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        testcontainers_config.ryuk_disabled = True
    return DockerContainer(image).with_kwargs(network_mode="host", labels={"mina.containerinfra": "1"})


def _wait(predicate: Any, timeout_s: float, what: str, container: Any) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            last = str(exc)
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            break
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        out, err = container.get_logs()
        last += "\n" + (out + err).decode(errors="replace")[-3000:]
    raise RuntimeError(f"{what} did not become ready in {timeout_s:.0f}s: {last.strip()}")


def _start(container: Any, image: str) -> None:
    try:
        container.start()
    except Exception as exc:
        hint = ""
        if image.startswith("mina-local/"):
            hint = " (build the local images: scripts/docker-engine.sh start && scripts/docker-engine.sh images)"
        raise RuntimeError(f"could not start a container from {image}{hint}: {exc}") from exc


# --------------------------------------------------------------------------- NATS


def nats_info(port: int, timeout_s: float = 2.0) -> dict[str, Any]:
    """The server's INFO, after a PING answered by PONG: the server really serves clients."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        reader = sock.makefile("rb")
        line = reader.readline()
        if not line.startswith(b"INFO "):
            raise RuntimeError(f"unexpected greeting {line[:80]!r}")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        answer = reader.readline()
        if answer.strip() != b"PONG":
            raise RuntimeError(f"no PONG: {answer[:80]!r}")
        return dict(json.loads(line[5:]))


@dataclass
class NatsContainer:
    """A nats-server with JetStream in a container; stop() keeps its data, start() brings it back
    on the same port (like NatsServer, so fault tests can restart it)."""

    image: str = DEFAULT_NATS_IMAGE
    port: int = 0
    container: Any = field(default=None, repr=False)
    _conf_dir: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> NatsContainer:
        if self.container is not None:
            self.container.get_wrapped_container().start()
        else:
            self.port = self.port or free_port()
            self._conf_dir = Path(tempfile.mkdtemp(prefix="mina-nats-"))
            (self._conf_dir / "nats.conf").write_text(
                f"listen: 127.0.0.1:{self.port}\nserver_name: mina_container\nmax_payload: 8MB\n"
                'jetstream { store_dir: "/data/jetstream" }\n'
            )
            self._conf_dir.chmod(0o755)
            self.container = (
                _docker_container(self.image)
                .with_volume_mapping(str(self._conf_dir), "/etc/mina-nats", "ro")
                .with_command(["--config", "/etc/mina-nats/nats.conf"])
                .with_name(f"mina-nats-{self.port}-{uuid.uuid4().hex[:6]}")
            )
            _start(self.container, self.image)
        _wait(lambda: bool(nats_info(self.port).get("jetstream")), timeout_s, f"NATS on {self.url}", self.container)
        return self

    def stop(self) -> None:
        """Graceful (SIGTERM); the container and its JetStream files stay."""
        if self.container is not None:
            self.container.get_wrapped_container().stop(timeout=15)

    def kill(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.get_wrapped_container().kill()

    def remove(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.stop(force=True, delete_volume=True)
            self.container = None
        if self._conf_dir is not None:
            for path in self._conf_dir.iterdir():
                path.unlink()
            self._conf_dir.rmdir()
            self._conf_dir = None


# --------------------------------------------------------------------------- Postgres


@dataclass
class PostgresContainer:
    """Postgres in a container (the official image or mina-local/postgres: same entrypoint
    interface), user `postgres` with a password. `fast=True` (tests): fsync off."""

    image: str = DEFAULT_POSTGRES_IMAGE
    database: str = "postgres"
    port: int = 0
    fast: bool = False
    container: Any = field(default=None, repr=False)

    def dsn(self, database: str | None = None) -> str:
        return f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self, timeout_s: float = 90.0) -> PostgresContainer:
        if self.container is not None:
            self.container.get_wrapped_container().start()
        else:
            self.port = self.port or free_port()
            args = ["-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"]
            container = (
                _docker_container(self.image)
                .with_env("POSTGRES_USER", "postgres")
                .with_env("POSTGRES_PASSWORD", PG_PASSWORD)
                .with_env("POSTGRES_DB", self.database)
                .with_name(f"mina-postgres-{self.port}-{uuid.uuid4().hex[:6]}")
            )
            if self.fast:
                container = container.with_env("POSTGRES_INITDB_ARGS", "--no-sync")
                args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            self.container = container.with_command(args)
            _start(self.container, self.image)
        _wait(self._answers, timeout_s, f"Postgres on 127.0.0.1:{self.port}", self.container)
        return self

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
            pass
        return self.psql("select 1", check=False).strip() == "1"

    def psql(self, sql: str, database: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [str(_pg_bin() / "psql"), self.dsn(database), "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql],
            check=check, capture_output=True, text=True, timeout=30,
        )
        return done.stdout

    def stop(self) -> None:
        """Fast shutdown (the image's stop signal is SIGINT); the data stays in the container."""
        if self.container is not None:
            self.container.get_wrapped_container().stop(timeout=30)

    def kill(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.get_wrapped_container().kill()

    def remove(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.stop(force=True, delete_volume=True)
            self.container = None


# --------------------------------------------------------------------------- both, for make up


@dataclass
class ContainerInfra:
    """`MMA_INFRA=containers`: a NATS and a Postgres container; `stop()` removes both."""

    nats_image: str = DEFAULT_NATS_IMAGE
    postgres_image: str = DEFAULT_POSTGRES_IMAGE
    database: str = "mina"
    nats: NatsContainer | None = None
    pg: PostgresContainer | None = None

    @property
    def nats_url(self) -> str:
        return self.nats.url if self.nats else ""

    @property
    def database_url(self) -> str:
        return self.pg.dsn() if self.pg else ""

    def start(self) -> ContainerInfra:
        try:
            self.nats = NatsContainer(self.nats_image).start()
            self.pg = PostgresContainer(self.postgres_image, database=self.database).start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for part in (self.nats, self.pg):
            if part is not None:
                part.remove()
