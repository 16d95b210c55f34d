"""The product image in the container tier: built once per session from deploy/Dockerfile on the
engine of `docker_engine` (tests/conftest.py), plus small `docker` helpers (containers on the host
network, loopback ports only).

On the project's private engine the base is the local Debian image (scripts/docker-engine.sh; no
registry here); with MMA_TEST_DOCKER=system it is the Dockerfile's default, the official slim Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dockerengine import DockerEngine, _parse_env, _script

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "mina-mind:test"


@dataclass(frozen=True)
class Engine:
    """`docker` calls on the tests' engine (DOCKER_HOST from `docker_engine`)."""

    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done


@dataclass(frozen=True)
class ProductImage:
    engine: Engine
    name: str
    nats_image: str
    postgres_image: str
    build_s: float
    size_mb: float


_BUILT: list[ProductImage] = []


def build_product_image(docker_engine: DockerEngine) -> ProductImage:
    """deploy/Dockerfile built once per session (the engine's layer cache makes a rebuild cheap)."""
    if not _BUILT:
        env = {**os.environ, **docker_engine.env, "DOCKER_BUILDKIT": "0"}  # the classic builder: any docker CLI
        engine = Engine(env)
        args = ["build", "--network", "host", "-q", "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", IMAGE]
        if os.environ.get("MMA_TEST_DOCKER") != "system":
            args += ["--build-arg", f"BASE={_parse_env(_script('env').stdout)['MMA_BASE_IMAGE']}"]
        start = time.monotonic()
        engine.run(*args, str(ROOT), timeout=900)
        seconds = time.monotonic() - start
        size = int(engine.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()) / 1e6
        _BUILT.append(ProductImage(engine, IMAGE, docker_engine.nats_image, docker_engine.postgres_image,
                                   seconds, size))
        print(f"\nimage {IMAGE}: built in {seconds:.1f} s, {size:.0f} MB")
    return _BUILT[0]


@pytest.fixture(scope="session")
def product_image(docker_engine: DockerEngine) -> ProductImage:
    return build_product_image(docker_engine)


@dataclass
class Container:
    """One `docker run -d --network host` of the product image."""

    engine: Engine
    name: str

    def logs(self) -> str:
        done = self.engine.run("logs", self.name, check=False)
        return done.stdout + done.stderr

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.engine.run("inspect", "--format", "{{json .State}}", self.name).stdout))

    def ready(self) -> bool:
        if not self.state()["Running"]:
            raise AssertionError(f"{self.name} exited:\n{self.logs()[-3000:]}")
        return any(e.get("event") == "service.ready" for e in self.events())


@dataclass
class Fleet:
    """Containers of one test: started on the host network, removed (with their volume) at the end."""

    engine: Engine
    image: str
    prefix: str
    volume: str
    containers: list[Container]

    def run(self, name: str, command: list[str], env: dict[str, str], detach: bool = True) -> Container:
        args = ["run", "--network", "host", "--name", f"{self.prefix}-{name}", "-v", f"{self.volume}:/data"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        if detach:
            args.append("-d")
        container = Container(self.engine, f"{self.prefix}-{name}")
        self.containers.append(container)
        self.engine.run(*args, self.image, *command, timeout=600)
        return container


@pytest.fixture
def fleet(product_image: ProductImage) -> Iterator[Fleet]:
    prefix = f"mina-test-{uuid.uuid4().hex[:8]}"
    engine = product_image.engine
    engine.run("volume", "create", f"{prefix}-data")
    out = Fleet(engine, product_image.name, prefix, f"{prefix}-data", [])
    yield out
    for container in out.containers:
        engine.run("rm", "-f", "-v", container.name, check=False)
    engine.run("volume", "rm", "-f", out.volume, check=False)
