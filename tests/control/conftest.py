"""Fixtures of the control tests: the real stack, a gateway client, the database, a slow Replicate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.wire import ReplicateServer


@pytest.fixture
def slow_replicate() -> Iterator[ReplicateServer]:
    """Predictions stay `processing` for a minute: long enough to cancel one mid-flight."""
    with ReplicateServer(processing_s=60.0) as server:
        assert isinstance(server, ReplicateServer)
        yield server
