"""The ledger's reads the admin and ops console routes share: typed request/reply calls, never SQL.

Limits are clamped here (1..1000) so every route asks the ledger for a bounded page.
"""

from __future__ import annotations

from libs.bus import Bus
from libs.errors import NotFoundError
from libs.schemas import (
    AdminSummary,
    ConfigMap,
    CreditTxnList,
    CustomerList,
    ErrorList,
    GenerationCredits,
    GenerationList,
    GenerationView,
    GetActiveConfig,
    GetGeneration,
    ListCustomers,
    ListErrors,
    ListGenerations,
    ListSteps,
    Reconcile,
    ReconcileReport,
    StepList,
    SummaryView,
)

MAX_PAGE = 1000
RECONCILE_TIMEOUT_S = 60.0
MAX_CHAIN = 50  # a tweak of a tweak of ...: deep enough for any real history, bounded against a cycle


def clamp(limit: int, ceiling: int = MAX_PAGE) -> int:
    return max(1, min(limit, ceiling))


class LedgerReads:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def errors(self, generation_id: str | None = None, category: str | None = None,
                     limit: int = 100) -> ErrorList:
        """The ops error feed, newest first."""
        return await self._bus.request(ListErrors(generation_id=generation_id or None, category=category or None,
                                                  limit=clamp(limit)), ErrorList)

    async def steps(self, generation_id: str) -> StepList:
        return await self._bus.request(ListSteps(generation_id=generation_id), StepList)

    async def summary(self, timeout: float | None = None) -> SummaryView:
        return await self._bus.request(AdminSummary(), SummaryView, timeout=timeout)

    async def customers(self, limit: int) -> CustomerList:
        return await self._bus.request(ListCustomers(limit=clamp(limit)), CustomerList)

    async def reconcile(self, stuck_after_s: float, public_base: str | None) -> ReconcileReport:
        """The MEGA invariants as the ledger checks them (a full scan: a long timeout)."""
        return await self._bus.request(Reconcile(stuck_after_s=stuck_after_s, public_base=public_base),
                                       ReconcileReport, timeout=RECONCILE_TIMEOUT_S)

    async def active_config(self) -> ConfigMap:
        return await self._bus.request(GetActiveConfig(), ConfigMap)

    async def generations(self, pass_id: str | None, limit: int) -> GenerationList:
        return await self._bus.request(ListGenerations(pass_id=pass_id or None, limit=clamp(limit)), GenerationList)

    async def generation(self, generation_id: str) -> GenerationView:
        """NotFoundError when the ledger has no such generation."""
        return await self._bus.request(GetGeneration(generation_id=generation_id), GenerationView)

    async def generation_credits(self, generation_id: str) -> CreditTxnList:
        return await self._bus.request(GenerationCredits(generation_id=generation_id), CreditTxnList)

    async def parent_chain(self, view: GenerationView) -> list[GenerationView]:
        """The ancestors of a generation, nearest first; stops at a missing parent or a repeat."""
        chain: list[GenerationView] = []
        seen = {view.generation_id}
        parent = view.parent_id
        while parent and parent not in seen and len(chain) < MAX_CHAIN:
            seen.add(parent)
            try:
                current = await self.generation(parent)
            except NotFoundError:
                break
            chain.append(current)
            parent = current.parent_id
        return chain
