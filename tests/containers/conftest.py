"""The container tier: the product on NATS and Postgres containers of a real Docker engine.

`docker_engine` (tests/conftest.py) starts the project's engine and builds the local images
(scripts/docker-engine.sh), or skips the whole tier with one line saying why where no engine can
run. Here `nats` and `database_url` always come from containers, whatever MMA_TEST_INFRA says:
one NATS container emptied before each test, one Postgres container with a migrated template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libs.containerinfra import NatsContainer, PostgresContainer
from tests.conftest import _admin_exec, _clone
from tests.dockerengine import DockerEngine, fresh_jetstream

TEMPLATE_DB = "mina_containers_template"
HERE = Path(__file__).resolve().parent
# The first test of the tier may build the images from scratch (debootstrap, apt): minutes on a busy machine.
SETUP_TIMEOUT_S = 1200
_engines: list[DockerEngine] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT_S))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for engine in _engines:
        terminalreporter.write_line(f"containers tier: engine and images ready in {engine.seconds:.0f} s "
                                    f"({'started here' if engine.started_here else 'already running'})")
        for line in engine.build_log:
            terminalreporter.write_line(f"  {line}")


@pytest.fixture(scope="session", autouse=True)
def engine(docker_engine: DockerEngine) -> DockerEngine:
    _engines.append(docker_engine)
    return docker_engine


@pytest.fixture
def nats(nats_container: NatsContainer) -> NatsContainer:
    return fresh_jetstream(nats_container)


@pytest.fixture(scope="session")
async def container_template(pg_container: PostgresContainer) -> str:
    from services.ledger.migrate import apply_migrations

    await _admin_exec(pg_container, f"drop database if exists {TEMPLATE_DB}", f"create database {TEMPLATE_DB}")
    await apply_migrations(pg_container.dsn(TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
async def database_url(pg_container: PostgresContainer, container_template: str) -> Any:
    return await _clone(pg_container, container_template, "c")
