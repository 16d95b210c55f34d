"""The create path shared by MMA and legacy routes: one command, then the bus tells.

The gateway publishes `GenerationRequested` and waits for billing's decision on the
process-wide broadcast (`Decisions`: a future registered before the publish, so the
decision cannot be missed). It follows the generation's subject on the EVENTS stream (an
ordered consumer replaying from the start) only where the broadcast cannot answer: an
idempotent replay (the decision may be long past), a broadcast that stayed silent (a
reconnect), and legacy routes that wait for the terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import structlog

from libs.bus import Bus
from libs.fetch import FetchPolicy, check_customer_urls
from libs.schemas import (
    BusMessage,
    Flow,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationRejected,
    GenerationRequest,
    GenerationRequested,
    generation_events,
    new_id,
)
from services.gateway.adapters.decisions import Decision
from services.gateway.deps import GatewayDeps

log = structlog.get_logger("gateway")


@dataclass(frozen=True)
class CreateCommand:
    pass_id: str
    flow: Flow
    request: GenerationRequest
    request_id: str
    parent_generation_id: str | None = None
    session_id: str | None = None
    platform: str = "web"
    source: str = "mma"
    deadline: datetime | None = None
    idempotency_key: str | None = None
    body_digest: str = ""


@dataclass
class Outcome:
    generation_id: str
    accepted: GenerationAccepted | None = None
    rejected: GenerationRejected | None = None
    terminal: GenerationDone | GenerationFailed | None = None

    @property
    def decided(self) -> bool:
        return self.accepted is not None or self.rejected is not None or self.terminal is not None


async def submit(deps: GatewayDeps, cmd: CreateCommand, terminal_timeout_s: float | None = None) -> Outcome:
    """Send the command once (per idempotency key) and wait for billing's decision.

    With no decision within `decision_timeout_s` the outcome is undecided: the command
    is durable, so the caller still answers `queued` and SSE tells the rest.
    """
    deps.limiter.check(cmd.pass_id)
    urls = asset_urls(cmd.request)
    if urls:  # most creates name none: no policy to build
        await check_customer_urls(urls, FetchPolicy.from_settings(deps.settings), deps.store.is_ours,
                                  deps.settings.fetch_probe_timeout_s)
    if cmd.idempotency_key:
        claim = await deps.idempotency.claim(cmd.pass_id, cmd.idempotency_key, cmd.body_digest)
        generation_id, is_new = claim.generation_id, claim.is_new
    else:
        generation_id, is_new = new_id(), True
    ids = {"generation_id": generation_id, "pass_id": cmd.pass_id, "flow": cmd.flow.value}  # not a bind: cheaper
    use_broadcast = is_new and terminal_timeout_s is None and deps.decisions.is_listening
    # registered before the publish: billing cannot decide before someone waits
    decision = deps.decisions.expect(generation_id) if use_broadcast else None
    try:
        # a replay whose first request never reached the bus publishes again (the msg id dedupes the rest)
        if is_new or await deps.bus.last_seq(generation_events(generation_id)) == 0:
            await deps.bus.publish(GenerationRequested(
                generation_id=generation_id, pass_id=cmd.pass_id, flow=cmd.flow,
                parent_generation_id=cmd.parent_generation_id, request=cmd.request, request_id=cmd.request_id,
                session_id=cmd.session_id, platform=cmd.platform or "web",
                source="legacy" if cmd.source == "legacy" else "mma", deadline=cmd.deadline,
            ))
            log.info("gateway.generation_requested", replay=not is_new, **ids)
        if decision is not None:
            outcome = await await_decision(deps.bus, generation_id, decision, deps.settings.decision_timeout_s)
        else:
            outcome = await follow_outcome(deps.bus, generation_id, deps.settings.decision_timeout_s,
                                           terminal_timeout_s)
    finally:
        if decision is not None:
            deps.decisions.forget(generation_id, decision)
    log.info("gateway.generation_decided", accepted=outcome.accepted is not None,
             rejected=outcome.rejected.code if outcome.rejected else None,
             terminal=type(outcome.terminal).__name__ if outcome.terminal else None, **ids)
    return outcome


def asset_urls(request: GenerationRequest) -> list[str]:
    """Every asset URL of the request: the ones the pipeline will fetch."""
    assets = request.assets
    return [url for url in (assets.product_image_url, assets.logo_image_url, *assets.inspiration_image_urls,
                            assets.style_hero_image_url, assets.input_still_image_url, assets.end_image_url) if url]


REPLAY_WINDOW_S = 1.0


async def await_decision(bus: Bus, generation_id: str, decision: asyncio.Future[Decision],
                         decision_timeout_s: float) -> Outcome:
    """The broadcast decision; on silence, the stream tells whether one was missed (a reconnect).

    With nothing on the generation's subject the outcome is undecided after the same
    `decision_timeout_s` as before; otherwise a short replay reads what is stored.
    """
    outcome = Outcome(generation_id)
    try:
        async with asyncio.timeout(decision_timeout_s):
            decided = await decision
        _apply(outcome, decided)
    except TimeoutError:
        if await bus.last_seq(generation_events(generation_id)) > 0:
            return await follow_outcome(bus, generation_id, min(decision_timeout_s, REPLAY_WINDOW_S))
    return outcome


def follow(bus: Bus, subject: str, after_seq: int = 0) -> AsyncGenerator[tuple[int, BusMessage], None]:
    """`Bus.follow` typed as the async generator it is, so it can be closed deterministically."""
    return cast(AsyncGenerator[tuple[int, BusMessage], None], bus.follow(subject, after_seq))


def _apply(outcome: Outcome, msg: BusMessage) -> None:
    if isinstance(msg, GenerationAccepted):
        outcome.accepted = msg
    elif isinstance(msg, GenerationRejected):
        outcome.rejected = msg
    elif isinstance(msg, GenerationDone | GenerationFailed):
        outcome.terminal = msg


async def follow_outcome(bus: Bus, generation_id: str, decision_timeout_s: float,
                         terminal_timeout_s: float | None = None) -> Outcome:
    """Billing's decision; with `terminal_timeout_s`, wait on until done/failed/rejected instead."""
    outcome = Outcome(generation_id)
    waiting_for_terminal = terminal_timeout_s is not None
    timeout = terminal_timeout_s if terminal_timeout_s is not None else decision_timeout_s
    async with contextlib.aclosing(follow(bus, generation_events(generation_id))) as events:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for _seq, msg in events:
                    _apply(outcome, msg)
                    if outcome.rejected is not None or outcome.terminal is not None:
                        break
                    if outcome.decided and not waiting_for_terminal:
                        break
    return outcome
