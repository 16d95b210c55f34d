"""The contracts billing's outside parties satisfy (today: the shop that sells credit packs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DraftOrderRequest:
    """One line of `quantity` × `variant_id`, tagged with the pass id the paid order credits."""

    variant_id: int
    quantity: int
    pass_id: str
    email: str | None = None


@dataclass(frozen=True)
class DraftOrder:
    id: int
    invoice_url: str


class DraftOrders(Protocol):
    """Creates a draft order the buyer pays at its invoice URL.

    Raises ServiceUnavailableError when the shop is away for a moment (timeouts, 429, 5xx)
    and MmaError (code CHECKOUT_FAILED or NO_INVOICE_URL) when it refuses or answers nonsense.
    """

    async def create_draft_order(self, order: DraftOrderRequest) -> DraftOrder: ...

    async def aclose(self) -> None: ...
