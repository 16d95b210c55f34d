"""libs tests need NATS only: settings without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.devinfra import NatsServer
from libs.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, nats: NatsServer) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        infra="external", nats_url=nats.url, state_dir=tmp_path / "state", ack_wait_s=5.0, max_deliveries=3,
    )
