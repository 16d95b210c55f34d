"""Request/reply over core NATS, both sides: a typed call to a queue group, and serving one.

The answer is an envelope `{"ok": true, "data": ...}` or `{"ok": false, "error": <MmaError.to_wire()>}`,
so the caller raises the server's MmaError again with the same class and code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import nats.errors
import orjson
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from libs import deadletter
from libs.bus.inline import subscribe_inline
from libs.bus.retry import retried
from libs.bus.types import D, Q, R, RpcHandler
from libs.errors import InvalidMessageError, MmaError, ServiceUnavailableError, error_from_wire
from libs.schemas import RpcRequest
from libs.settings import Settings
from libs.transient import NATS_AWAY

log = structlog.get_logger("bus")

RESPONDER_POLL_S = 0.1
BACKLOG_MAX = 65_536  # requests waiting for a free slot of one subscription
OK_PREFIX = b'{"ok":true,"data":'


def _error(exc: MmaError) -> bytes:
    return orjson.dumps({"ok": False, "error": exc.to_wire()})


def _nobody_serves(exc: Exception) -> bool:
    """No responder means nobody got the request, so asking again cannot run it twice."""
    return isinstance(exc, nats.errors.NoRespondersError)


class Rpc:
    """The request/reply side of one connection; `close` waits for the answers in progress."""

    def __init__(self, nc: NatsClient, settings: Settings) -> None:
        self.nc = nc
        self.settings = settings
        self.tasks: set[asyncio.Task[None]] = set()

    async def request(self, req: RpcRequest, reply: type[R], timeout: float | None = None) -> R:
        """Call the queue group serving `req`; its MmaError is raised again here.

        While nobody serves the subject (a service restarting), the call asks again every 0.1 s for
        up to `rpc_responder_wait_s` (never longer than `timeout`); other trouble reaching it, or
        no answer within `timeout`, is ServiceUnavailableError at once.
        """
        wait_s = timeout or self.settings.rpc_timeout_s
        subject = req.rpc_subject
        payload = req.model_dump_json().encode()
        try:
            raw = await retried(lambda: self.nc.request(subject, payload, timeout=wait_s), on=_nobody_serves,
                                timeout_s=min(wait_s, self.settings.rpc_responder_wait_s), wait_s=RESPONDER_POLL_S)
        except NATS_AWAY as exc:
            raise ServiceUnavailableError(f"no answer on {subject}", subject=subject) from exc
        data: bytes = raw.data
        if data.startswith(OK_PREFIX) and data.endswith(b"}"):  # an answer: its data read straight into the model
            return reply.model_validate_json(data[len(OK_PREFIX):-1])
        envelope = orjson.loads(data)
        if not envelope.get("ok"):
            raise error_from_wire(envelope.get("error") or {})
        return reply.model_validate(envelope["data"])

    async def serve(self, req_type: type[Q], handler: RpcHandler[Q, D], deps: D, queue: str,
                    concurrency: int | None = None) -> Subscription:
        """Answer `req_type` requests in queue group `queue`, each in its own task, at most `concurrency`
        (default `rpc_concurrency`) at once: the rest wait in line as messages, not as tasks on the loop
        (at most `BACKLOG_MAX`; past it a request is dropped and its caller times out, as NATS drops
        messages for a slow consumer). A request's task starts as the connection reads it (`inline.py`)."""
        limit = max(1, concurrency or self.settings.rpc_concurrency)
        backlog: deque[Msg] = deque()
        running = 0

        async def respond(raw: Msg) -> None:
            started = time.perf_counter()
            outcome = "ok"
            try:
                req = req_type.model_validate_json(raw.data)
                result = await handler(req, deps)
                answer = OK_PREFIX + result.model_dump_json().encode() + b"}"  # the reply's JSON as is, wrapped
            except ValidationError as exc:
                outcome = "invalid"
                answer = _error(InvalidMessageError(f"invalid {req_type.__name__}: {exc}"))
            except MmaError as exc:
                outcome = exc.instance_code
                answer = _error(exc)
            except Exception as exc:  # the edge: answer, log, never leave the caller hanging
                outcome = "error"
                log.exception("bus.rpc_failed", subject=raw.subject)
                # a bug answers a non-retryable INTERNAL_ERROR: a consumer calling it must not loop
                answer = _error(deadletter.rpc_error(exc, raw.subject))
            if raw.reply:
                with contextlib.suppress(*NATS_AWAY):
                    await raw.respond(answer)
            log.debug("bus.rpc_handled", subject=raw.subject, outcome=outcome,
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))

        def start(raw: Msg) -> None:
            task = asyncio.create_task(respond(raw))
            self.tasks.add(task)
            task.add_done_callback(finished)

        def finished(task: asyncio.Task[None]) -> None:
            nonlocal running
            self.tasks.discard(task)
            if backlog:
                start(backlog.popleft())  # its slot goes to the next in line
            else:
                running -= 1

        def on_msg(raw: Msg) -> None:
            nonlocal running
            if running < limit:
                running += 1
                start(raw)
            elif len(backlog) < BACKLOG_MAX:
                backlog.append(raw)
            else:
                log.warning("bus.rpc_backlog_full", subject=raw.subject, backlog=len(backlog))

        return await subscribe_inline(self.nc, req_type.rpc_subject, on_msg, queue=queue, pending=backlog.__len__)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the answers in progress."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout_s)
