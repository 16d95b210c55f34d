"""Billing's wiring: which handler takes which command, event and request."""

from __future__ import annotations

from libs.schemas import (
    FAILED_EVENTS,
    GENERATION_COMMANDS,
    AdminAdjust,
    ClaimWelcome,
    CreateCheckout,
    EnsureWelcome,
    GenerationFailed,
    GenerationRequested,
    PriceList,
    ShopifyOrder,
    Stream,
)
from libs.service import ServiceContext
from libs.supervise import stop, supervised
from services.billing.checkout import on_create_checkout
from services.billing.deps import BillingDeps
from services.billing.handlers import (
    on_command_exhausted,
    on_generation_failed,
    on_generation_requested,
    on_generation_requests,
)
from services.billing.rpc import on_admin_adjust, on_ensure_welcome, on_price_list, on_shopify_order
from services.billing.sweeper import run_sweeper
from services.billing.welcome import on_claim_welcome

QUEUE = "billing"
COMMAND_BATCH = 128  # commands per ledger transaction (a CreditApplyBatch stays well under 1 MB)


async def setup(ctx: ServiceContext) -> None:
    deps = BillingDeps.build(ctx.settings, ctx.bus)
    await ctx.bus.serve(EnsureWelcome, on_ensure_welcome, deps, queue=QUEUE)
    await ctx.bus.serve(ShopifyOrder, on_shopify_order, deps, queue=QUEUE)
    await ctx.bus.serve(AdminAdjust, on_admin_adjust, deps, queue=QUEUE)
    await ctx.bus.serve(PriceList, on_price_list, deps, queue=QUEUE)
    await ctx.bus.serve(CreateCheckout, on_create_checkout, deps, queue=QUEUE)
    await ctx.bus.serve(ClaimWelcome, on_claim_welcome, deps, queue=QUEUE)

    async def close_shop() -> None:
        await ctx.bus.close()  # the checkouts in hand finish first (closing the bus twice is harmless)
        await deps.shopify.aclose()

    ctx.stack.push_async_callback(close_shop)
    # Both consumers wait out an unavailable ledger for ever: a ledger restart must not drop a
    # command (the command's own deadline bounds how late it may still run) nor a refund (a
    # failed generation is terminal, so the sweeper would never find it again). A message that
    # keeps failing otherwise (a bug) is dead-lettered after `max_deliveries`, one that can never
    # succeed at once; a command given up fails its generation (refunded if it was charged).
    # Commands come in batches (one ledger transaction for all their debits); a batch that
    # fails on bad data or a bug is re-run one command at a time through `on_generation_requested`.
    await ctx.bus.consume_batch(
        stream=Stream.COMMANDS, durable="billing", filter_subject=GENERATION_COMMANDS,
        handlers={GenerationRequested: on_generation_requested}, batch_handler=on_generation_requests, deps=deps,
        batch=COMMAND_BATCH, retry_unavailable=True, on_exhausted=on_command_exhausted,
    )
    await ctx.bus.consume(
        stream=Stream.EVENTS, durable="billing-refunds", filter_subject=FAILED_EVENTS,
        handlers={GenerationFailed: on_generation_failed}, deps=deps, concurrency=64, retry_unavailable=True,
    )
    # supervised: an unexpected error in one sweep is logged and counted, and the sweeper starts again
    sweeper = supervised("billing:sweeper", lambda: run_sweeper(deps))
    ctx.stack.push_async_callback(stop, sweeper)
