"""The container tier: the product on NATS and Postgres containers of a real Docker engine.

`docker_engine` (tests/conftest.py) starts the project's engine and builds the local images
(scripts/docker-engine.sh), or skips the whole tier with one line saying why where no engine can
run. Here `nats` and `database_url` always come from containers, whatever MMA_TEST_INFRA says:
one NATS container emptied before each test, one Postgres container with a migrated template.
"""

from __future__ import annotations

from typing import Any

import pytest

from libs.containerinfra import NatsContainer, PostgresContainer
from tests.conftest import _admin_exec, _clone
from tests.dockerengine import DockerEngine, fresh_jetstream

TEMPLATE_DB = "mina_containers_template"


@pytest.fixture(scope="session", autouse=True)
def engine(docker_engine: DockerEngine) -> DockerEngine:
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
