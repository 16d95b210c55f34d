"""Group commit for single credit applies: the ones that arrive together share one transaction.

Every `CreditApply` request used to be its own transaction (one commit, one WAL flush, a pool
connection each). Under load they queue here and go to Postgres as ONE `mega_credit_apply_many`
call per batch, at most `lanes` batches at once: each item is decided exactly as it would be
alone (the function applies them in pass id order, then arrival order, so concurrent batches
lock customers in the same order and never deadlock). A lone request still goes at once.

A batch Postgres refuses for its data (a constraint, a value it cannot store) is re-run one item
at a time, so only the bad item fails; Postgres being away fails every waiter, and their
callers retry as before (the ref makes a retry a DUPLICATE, never a second charge).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from libs.schemas import CreditApply
from services.ledger.adapters.pg import UNAVAILABLE, Row

ApplyMany = Callable[[Sequence[CreditApply]], Awaitable[list[Row]]]
ApplyOne = Callable[[CreditApply], Awaitable[Row]]

MAX_BATCH = 256
LANES = 2


class CreditQueue:
    """Pending applies and the batches running them; `submit` answers each item's row."""

    def __init__(self, max_batch: int = MAX_BATCH, lanes: int = LANES) -> None:
        self.max_batch = max_batch
        self.lanes = lanes
        self._pending: list[tuple[CreditApply, asyncio.Future[Row]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: CreditApply, many: ApplyMany, one: ApplyOne) -> Row:
        future: asyncio.Future[Row] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self.lanes:
            self._running += 1
            task = asyncio.create_task(self._drain(many, one))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, many: ApplyMany, one: ApplyOne) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                await self._run(batch, many, one)
        finally:
            self._running -= 1

    @staticmethod
    async def _run(batch: list[tuple[CreditApply, asyncio.Future[Row]]], many: ApplyMany, one: ApplyOne) -> None:
        try:
            rows = await many([item for item, _ in batch]) if len(batch) > 1 else [await one(batch[0][0])]
        except UNAVAILABLE as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:  # bad data somewhere in the batch: each item alone, so only it fails
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for item, future in batch:
                try:
                    row = await one(item)
                except Exception as single:
                    if not future.done():
                        future.set_exception(single)
                else:
                    if not future.done():
                        future.set_result(row)
            return
        for (_, future), row in zip(batch, rows, strict=True):
            if not future.done():
                future.set_result(row)
