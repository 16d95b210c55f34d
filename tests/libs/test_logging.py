"""`libs.logging.bound`: the request's fields on every log line inside it, and what was bound before after it."""

from __future__ import annotations

import asyncio

import structlog

from libs.logging import bound


def fields() -> dict[str, object]:
    return structlog.contextvars.get_contextvars()


async def test_bound_fields_reach_log_lines_and_are_restored_after() -> None:
    structlog.contextvars.clear_contextvars()
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        structlog.contextvars.bind_contextvars(service="gateway", request_id="outer")
        with bound(request_id="inner", subject="mma.cmd.x"):
            structlog.get_logger().info("inside")
            assert fields() == {"service": "gateway", "request_id": "inner", "subject": "mma.cmd.x"}
        structlog.get_logger().info("after")
    assert fields() == {"service": "gateway", "request_id": "outer"}  # `subject` was never bound before
    assert [(line["event"], line["request_id"], line.get("subject")) for line in lines] == [
        ("inside", "inner", "mma.cmd.x"), ("after", "outer", None)]

    both_bound = asyncio.Barrier(2)

    async def one(request_id: str) -> object:  # each task its own: a request's id never leaks to another
        with bound(request_id=request_id):
            await asyncio.wait_for(both_bound.wait(), 5)  # the other task has bound its id meanwhile
            return fields()["request_id"]

    assert await asyncio.gather(one("a"), one("b")) == ["a", "b"]
    assert fields()["request_id"] == "outer"
    structlog.contextvars.clear_contextvars()
