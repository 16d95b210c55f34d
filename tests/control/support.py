"""Helpers of the control tests: create through HTTP, read events, credit rows and SSE."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from libs.bus import Bus
from libs.schemas import BusMessage, GenerationFailed, StatusChanged, generation_events, new_id
from tests.gateway.support import SseRead, png_bytes, read_sse
from tests.helpers import wait_for


def new_pass() -> str:
    return f"pass:anon:{new_id()}"


async def create(client: httpx.AsyncClient, pass_id: str, **body: Any) -> str:
    answer = await client.post("/mma/still/create", json={"passId": pass_id, "inputs": {"brief": "a bottle"},
                                                          **body})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["generation_id"])


async def upload_product(client: httpx.AsyncClient, pass_id: str) -> str:
    upload = await client.post("/api/upload", files={"file": ("p.png", png_bytes(), "image/png")},
                               headers={"X-Mina-Pass-Id": pass_id})
    assert upload.status_code == 200, upload.text
    return str(upload.json()["publicUrl"])


async def events(bus: Bus, generation_id: str) -> list[tuple[int, BusMessage]]:
    """Every event of the generation now in the stream, with its stream sequence."""
    last = await bus.last_seq(generation_events(generation_id))
    found: list[tuple[int, BusMessage]] = []
    if last == 0:
        return found
    async with asyncio.timeout(10):
        async for seq, msg in bus.follow(generation_events(generation_id)):
            found.append((seq, msg))
            if seq >= last:
                break
    return found


async def failed_event(bus: Bus, generation_id: str, timeout: float = 30.0) -> GenerationFailed:
    async def ended() -> GenerationFailed | None:
        for _seq, msg in await events(bus, generation_id):
            if isinstance(msg, GenerationFailed):
                return msg
        return None

    found: GenerationFailed = await wait_for(ended, timeout, interval=0.1, what=f"{generation_id} to fail")
    return found


async def reached(bus: Bus, generation_id: str, status: str, timeout: float = 30.0) -> None:
    async def seen() -> bool:
        return any(isinstance(m, StatusChanged) and m.status.value == status
                   for _s, m in await events(bus, generation_id))

    await wait_for(seen, timeout, interval=0.05, what=f"{generation_id} to reach {status}")


async def credit_deltas(db: asyncpg.Connection, generation_id: str) -> list[int]:
    rows = await db.fetch(
        "select mg_delta from mega_generations where mg_record_type = 'credit_transaction'"
        " and mg_generation_id = $1 order by mg_created_at", generation_id)
    return [int(r["mg_delta"]) for r in rows]


async def sse_of(client: httpx.AsyncClient, generation_id: str) -> SseRead:
    return await read_sse(client, f"/mma/stream/{generation_id}", timeout=30)
