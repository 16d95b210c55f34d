"""`python -m bench.monolith PORT`: the accept path as one process, the baseline the product must beat.

What a team would run instead of the bus design (issue #19), written with our own code and
under the gateway's server settings, so the comparison is fair and not a straw man:

- the gateway's uvicorn config on the services' event loop (uvloop + httptools), FastAPI;
- the create body parsed and validated like the gateway's (`StillCreateBody` -> `GenerationRequest`,
  the pass id checked by `normalize_pass_id`);
- ONE Postgres transaction per create on the ledger's pool size: the conditional debit
  (`mega_credit_apply`: the customer locked, the `credit_transaction:` row at most once,
  never below zero) and the generation row (the ledger's own `UPSERT_ACCEPTED`, same vars);
- ONE awaited JetStream publish of the job (`GenerationJob` on MMA_JOBS, deterministic msg id);
- the answer `queued` (or 402 without credit).

No auth, no idempotency keys, no rate limit, no decision broadcast: the product does more
per create, not less. Configured by the bench's environment (`MMA_NATS_URL`, `MMA_DATABASE_URL`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from libs.bus import Bus
from libs.logging import configure_logging
from libs.schemas import CreditOutcome, Flow, GenerationAccepted, GenerationJob, GenerationRequested, new_id
from libs.service import run_loop
from libs.settings import Settings
from services.gateway.auth.identity import BODY_KEYS, normalize_pass_id
from services.gateway.bodies import StillCreateBody
from services.ledger import credit_queries as cq
from services.ledger import queries as q
from services.ledger.adapters.pg import create_pool
from services.ledger.writes import accepted_rows


class ORJSONResponse(JSONResponse):
    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def build_app(settings: Settings) -> FastAPI:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        assert settings.nats_url and settings.database_url
        state["bus"] = await Bus.connect(settings, settings.nats_url, name="bench-monolith")
        state["pool"] = await create_pool(settings.database_url, settings.db_pool_max, settings.db_pool_max)
        try:
            yield
        finally:
            await state["pool"].close()
            await state["bus"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/mma/still/create")
    async def create(request: Request, body: StillCreateBody | None = None) -> Response:
        body = body or StillCreateBody()
        pass_id = next((p for p in (normalize_pass_id(getattr(body, k, None)) for k in BODY_KEYS) if p), None)
        if pass_id is None:
            return ORJSONResponse({"error": "MISSING_PASS_ID"}, status_code=400)
        generation_id = new_id()
        price = settings.price_of(Flow.STILL_CREATE.value)
        cmd = GenerationRequested(generation_id=generation_id, pass_id=pass_id, flow=Flow.STILL_CREATE,
                                  request=body.to_request(), session_id=body.session(),
                                  platform=body.platform or "web")
        ref = f"debit:generation:{generation_id}"
        async with state["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(cq.CREDIT_APPLY, ref, pass_id, generation_id, -price, cmd.flow.value, "mma",
                                      "generation", generation_id, None)
            if row["outcome"] == CreditOutcome.INSUFFICIENT.value:
                return ORJSONResponse({"error": "INSUFFICIENT_CREDITS", "balance": row["credits"]}, status_code=402)
            accepted = GenerationAccepted(generation_id=generation_id, pass_id=pass_id, flow=cmd.flow, price=price,
                                          balance=row["credits"], request=cmd.request, session_id=cmd.session_id,
                                          platform=cmd.platform)
            generation_row = next(args for sql, args in accepted_rows(accepted) if sql == q.UPSERT_ACCEPTED)
            await conn.execute(q.UPSERT_ACCEPTED, *generation_row)
        await state["bus"].publish(GenerationJob(command=cmd, price=price))
        sse_url = f"/mma/stream/{generation_id}"
        return ORJSONResponse({"generation_id": generation_id, "status": "queued", "sse_url": sse_url,
                               "generationId": generation_id, "id": generation_id, "sseUrl": sse_url})

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app


def main() -> None:
    port = int(sys.argv[1])
    settings = Settings()
    configure_logging(settings, "monolith")
    # the gateway's settings (services/gateway/app.py `serve`), on the services' event loop
    server = uvicorn.Server(uvicorn.Config(
        build_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False,
        timeout_graceful_shutdown=10, timeout_keep_alive=max(75, int(settings.decision_timeout_s) + 5),
    ))
    run_loop(server.serve(), settings)


if __name__ == "__main__":
    main()
