"""Fault suite fixtures and its figure line (printed once at the end of the run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.support import TALLY
from tests.wire import ReplicateServer


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY.kinds:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(TALLY.line())


@pytest.fixture
def replicate_server() -> Iterator[ReplicateServer]:
    with ReplicateServer(processing_s=0.1) as server:
        assert isinstance(server, ReplicateServer)
        yield server

