"""The Docker engine of the container tests (tests/containers, MMA_TEST_INFRA=containers).

By default the project's private engine: `scripts/docker-engine.sh start` and `images` (the
local Debian/NATS/Postgres images, built only when missing), stopped at the end of the session
when this session started it; its state dir is the script's default or MMA_TEST_DOCKER_STATE.
With `MMA_TEST_DOCKER=system` the tests use the engine the environment points at (Docker
Desktop, DOCKER_HOST...) and the images of MMA_TEST_NATS_IMAGE / MMA_TEST_POSTGRES_IMAGE
(default: the official ones, which that engine can pull).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nats

from libs.containerinfra import DEFAULT_NATS_IMAGE, DEFAULT_POSTGRES_IMAGE, NatsContainer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "docker-engine.sh"


class EngineUnavailable(Exception):
    """No Docker engine can run here (the container tests skip, saying why)."""


@dataclass
class DockerEngine:
    nats_image: str
    postgres_image: str
    env: dict[str, str] = field(default_factory=dict)
    started_here: bool = False
    seconds: float = 0.0
    build_log: list[str] = field(default_factory=list)
    _saved: dict[str, str | None] = field(default_factory=dict)

    def export(self) -> None:
        """DOCKER_HOST and friends into this process's environment (testcontainers reads them)."""
        for key, value in self.env.items():
            self._saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def stop(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.started_here:
            _script("stop")


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if os.environ.get("MMA_TEST_DOCKER_STATE"):  # MMA_* variables are dropped in tests: this one is passed on
        env["MMA_DOCKER_STATE"] = os.environ["MMA_TEST_DOCKER_STATE"]
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)


def _parse_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key.isidentifier():
            env[key] = value
    return env


def start_engine() -> DockerEngine:
    began = time.monotonic()
    if os.environ.get("MMA_TEST_DOCKER") == "system":
        return DockerEngine(
            os.environ.get("MMA_TEST_NATS_IMAGE", DEFAULT_NATS_IMAGE),
            os.environ.get("MMA_TEST_POSTGRES_IMAGE", DEFAULT_POSTGRES_IMAGE),
            env={"TESTCONTAINERS_RYUK_DISABLED": os.environ.get("TESTCONTAINERS_RYUK_DISABLED", "true")},
        )
    running = _script("status").returncode == 0
    if not running:
        if os.geteuid() != 0:
            raise EngineUnavailable("not root, and the private dockerd needs root "
                                    "(MMA_TEST_DOCKER=system uses the engine you have)")
        started = _script("start")
        if started.returncode != 0:
            if shutil.which("dockerd") is None:
                raise EngineUnavailable(f"docker.io is not installed and could not be: {started.stderr.strip()[-300:]}")
            raise RuntimeError(f"scripts/docker-engine.sh start failed:\n{started.stderr[-3000:]}")
    images = _script("images")
    if images.returncode != 0:
        raise RuntimeError(f"scripts/docker-engine.sh images failed:\n{images.stderr[-3000:]}")
    env = _parse_env(_script("env").stdout)
    engine = DockerEngine(env["MMA_NATS_IMAGE"], env["MMA_POSTGRES_IMAGE"],
                          env={k: v for k, v in env.items() if not k.startswith("MMA_")},
                          started_here=not running, seconds=time.monotonic() - began)
    engine.build_log = [line.removeprefix("docker-engine: ") for line in images.stderr.splitlines()
                        if line.startswith("docker-engine: ")]
    return engine


def fresh_jetstream(server: NatsContainer) -> NatsContainer:
    """One NATS container serves the whole session; before each test it is running and empty:
    every stream (KV buckets and object stores are streams too) is deleted."""
    wrapped = server.container.get_wrapped_container()
    wrapped.reload()
    if wrapped.status != "running":
        server.start()

    async def wipe() -> None:
        client = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            jsm = client.jsm()
            for info in await jsm.streams_info():
                await jsm.delete_stream(info.config.name or "")
        finally:
            await client.close()

    with ThreadPoolExecutor(1) as pool:  # its own event loop: never the tests' loop
        pool.submit(asyncio.run, wipe()).result(30)
    return server
