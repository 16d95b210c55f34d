"""The ledger as billing sees it: typed request/reply calls, never SQL.

Every call may raise `ServiceUnavailableError` (ledger down or slow); callers inside a
bus consumer let it propagate so the message is redelivered instead of lost.
"""

from __future__ import annotations

from libs.bus import Bus
from libs.errors import NotFoundError
from libs.schemas import (
    ChargedList,
    ChargedUnfinished,
    CreditApplied,
    CreditAppliedBatch,
    CreditApply,
    CreditApplyBatch,
    CreditTxnList,
    CustomerView,
    DrawnUnfinished,
    EnsureCustomer,
    GenerationCredits,
    GetCustomer,
    PoolDraw,
    PoolDrawn,
    PoolRefund,
    PoolRefunded,
)


class LedgerClient:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def apply(self, req: CreditApply) -> CreditApplied:
        """Atomic balance change; the ledger applies `req.ref` at most once (DUPLICATE after)."""
        return await self._bus.request(req, CreditApplied)

    async def apply_batch(self, items: list[CreditApply]) -> CreditAppliedBatch:
        """Many applies in one ledger transaction; results in the same order."""
        return await self._bus.request(CreditApplyBatch(items=items), CreditAppliedBatch)

    async def pool_draw(self, req: PoolDraw) -> PoolDrawn:
        """A fingertips edit's cost from the pool (one credit in when it is short); once per generation."""
        return await self._bus.request(req, PoolDrawn)

    async def drawn_unfinished(self, older_than_s: float, limit: int = 500) -> ChargedList:
        """Fingertips edits that drew, never ended and show no progress: the sweeper's other candidates."""
        return await self._bus.request(DrawnUnfinished(older_than_s=older_than_s, limit=limit), ChargedList)

    async def pool_refund(self, generation_id: str) -> PoolRefunded:
        """A failed edit's cost back to the pool, once; NO_DRAW when the generation never drew."""
        return await self._bus.request(PoolRefund(generation_id=generation_id), PoolRefunded)

    async def ensure_customer(self, req: EnsureCustomer) -> CustomerView:
        return await self._bus.request(req, CustomerView)

    async def balance(self, pass_id: str) -> int:
        """Current credits; an unknown pass id has none (it is created on its first write)."""
        try:
            view = await self._bus.request(GetCustomer(pass_id=pass_id), CustomerView)
        except NotFoundError:
            return 0
        return view.credits

    async def generation_credits(self, generation_id: str) -> CreditTxnList:
        return await self._bus.request(GenerationCredits(generation_id=generation_id), CreditTxnList)

    async def charged_unfinished(self, older_than_s: float, video_older_than_s: float | None = None,
                                 limit: int = 500) -> ChargedList:
        return await self._bus.request(ChargedUnfinished(older_than_s=older_than_s,
                                                         video_older_than_s=video_older_than_s, limit=limit),
                                       ChargedList)
