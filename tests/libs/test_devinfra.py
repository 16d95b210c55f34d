"""Embedded infrastructure: free ports, restarts that keep data."""

from __future__ import annotations

from pathlib import Path

from libs.bus import Bus
from libs.devinfra import RESERVED_PORTS, NatsServer, free_port
from libs.schemas import ScanLine, Stream
from libs.settings import Settings


def test_free_ports_never_take_the_well_known_ones() -> None:
    ports = {free_port() for _ in range(50)}
    assert not ports & RESERVED_PORTS
    assert all(p > 1024 for p in ports)


async def test_nats_restart_keeps_jetstream_data(tmp_path: Path) -> None:
    """JetStream file storage survives a stop and start on the same port."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        bus = await Bus.connect(settings, server.url, "t")
        await bus.ensure_streams()
        await bus.publish(ScanLine(generation_id="g", pass_id="p", index=0, text="kept"))
        await bus.close()
        port = server.port
        server.stop()
        server.start()
        assert server.port == port
        bus = await Bus.connect(settings, server.url, "t")
        info = await bus.js.stream_info(Stream.EVENTS.value)
        assert info.state.messages == 1
        await bus.close()
    finally:
        server.kill()
