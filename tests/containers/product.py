"""The product image in the container tier: the private engine, the image built once per session,
and small `docker` helpers (containers on the host network, loopback ports only).

The engine and the local base image come from scripts/docker-engine.sh; the product image is
built from deploy/Dockerfile on that base (the official slim Python needs a registry).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "scripts" / "docker-engine.sh"
IMAGE = "mina-mind:test"


@dataclass(frozen=True)
class Engine:
    """The private engine's environment (DOCKER_HOST, local image names) for `docker` calls."""

    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done


def _engine_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_") or k.startswith("MMA_DOCKER")}
    for command in ("start", "images"):
        done = subprocess.run(["bash", str(ENGINE), command], env=env, capture_output=True, text=True,
                              timeout=900, check=False)
        if done.returncode != 0:
            pytest.skip(f"no Docker engine here: scripts/docker-engine.sh {command}: {done.stderr.strip()[-400:]}")
    printed = subprocess.run(["bash", str(ENGINE), "env"], env=env, capture_output=True, text=True, check=True)
    for line in printed.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    env["DOCKER_BUILDKIT"] = "0"
    return env


_BUILT: dict[str, Any] = {}


def build_product_image(engine: Engine) -> dict[str, Any]:
    """deploy/Dockerfile on the local Debian base, once per session; its build seconds and size."""
    if not _BUILT:
        start = time.monotonic()
        engine.run("build", "--network", "host", "-q", "--build-arg", f"BASE={engine.env['MMA_BASE_IMAGE']}",
                   "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", IMAGE, str(ROOT), timeout=900)
        size = int(engine.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
        _BUILT.update(image=IMAGE, build_s=time.monotonic() - start, size_mb=size / 1e6)
        print(f"\nimage {IMAGE}: built in {_BUILT['build_s']:.1f} s, {_BUILT['size_mb']:.0f} MB")
    return _BUILT


@pytest.fixture(scope="session")
def engine() -> Engine:
    if shutil.which("docker") is None and not ENGINE.exists():
        pytest.skip("no docker client")
    return Engine(_engine_env())


@pytest.fixture(scope="session")
def product_image(engine: Engine) -> dict[str, Any]:
    return build_product_image(engine)


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
def fleet(engine: Engine, product_image: dict[str, Any]) -> Iterator[Fleet]:
    prefix = f"mina-test-{uuid.uuid4().hex[:8]}"
    engine.run("volume", "create", f"{prefix}-data")
    out = Fleet(engine, product_image["image"], prefix, f"{prefix}-data", [])
    yield out
    for container in out.containers:
        engine.run("rm", "-f", "-v", container.name, check=False)
    engine.run("volume", "rm", "-f", out.volume, check=False)
