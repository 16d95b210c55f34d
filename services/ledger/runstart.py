"""`RunStartRead`: everything a run reads before its first step, answered on one connection.

A run used to ask three or four times (config, customer, like window, parent), each a round trip
through NATS and a wake-up of both processes. The customer, the like window and the config's tag are
one statement (`RUN_START`); the parent and the config rows are a second and third only when needed.
The config is the largest part and changes rarely, so the caller sends the tag of the copy it holds
and the rows come back only when the config rows have changed since (`ACTIVE_CONFIG_TAG`): a new
version reaches the next run all the same.
"""

from __future__ import annotations

from libs.schemas import RunStartFacts, RunStartRead
from services.ledger import read_queries as rq
from services.ledger.deps import LedgerDeps
from services.ledger.reads import liked_items
from services.ledger.views import config_entry, customer_view, generation_view


async def on_run_start(req: RunStartRead, deps: LedgerDeps) -> RunStartFacts:
    keys = list(req.config_keys)
    limit = rq.page(req.like_limit) if req.like_limit is not None else 0
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(rq.RUN_START, req.pass_id, limit, keys)
        assert row is not None  # one row, whatever the customer
        tag = str(row["run_config_tag"])
        parent = (await conn.fetchrow(rq.GET_GENERATION, req.parent_generation_id)
                  if req.parent_generation_id else None)
        config = await conn.fetch(rq.ACTIVE_CONFIG, keys) if tag != req.config_tag else None
    return RunStartFacts(
        customer=customer_view(row if row["mg_pass_id"] is not None else None, req.pass_id),
        likes=liked_items(row["run_likes"]) if req.like_limit is not None else None,
        parent=generation_view(parent) if parent is not None else None,
        config_tag=tag,
        config={r["mg_key"]: config_entry(r) for r in config} if config is not None else None,
    )
