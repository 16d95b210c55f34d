"""Request/reply handlers of `mma.rpc.ledger.*`, by request type: the credit apply (`credits`),
a customer's reads (`reads`), a run's start (`runstart`), the ops plane and the config (`ops`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from libs.schemas import (
    AddConfigVersion,
    AdminSummary,
    ChargedUnfinished,
    CreditApply,
    CreditApplyBatch,
    CustomerEvents,
    CustomerHistory,
    EnsureCustomer,
    GenerationCredits,
    GetActiveConfig,
    GetCustomer,
    GetCustomerAccess,
    GetGeneration,
    LikeWindow,
    ListCustomers,
    ListErrors,
    ListGenerations,
    ListSteps,
    Model,
    RecentDurations,
    Reconcile,
    RpcRequest,
    RunStartRead,
    SeedConfig,
    SoftDeleteHistory,
)
from services.ledger.access import on_get_customer_access
from services.ledger.credits import on_credit_apply, on_credit_apply_batch, on_ensure_customer
from services.ledger.deps import LedgerDeps
from services.ledger.ops import (
    on_add_config_version,
    on_admin_summary,
    on_charged_unfinished,
    on_get_active_config,
    on_list_customers,
    on_list_errors,
    on_list_generations,
    on_reconcile,
    on_seed_config,
)
from services.ledger.pool import POOL_RPC_HANDLERS
from services.ledger.reads import (
    on_customer_events,
    on_customer_history,
    on_generation_credits,
    on_get_customer,
    on_get_generation,
    on_like_window,
    on_list_steps,
    on_recent_durations,
    on_soft_delete_history,
)
from services.ledger.runstart import on_run_start

RPC_HANDLERS: dict[type[RpcRequest], Callable[[Any, LedgerDeps], Awaitable[Model]]] = {
    CreditApply: on_credit_apply,
    CreditApplyBatch: on_credit_apply_batch,
    EnsureCustomer: on_ensure_customer,
    GetCustomer: on_get_customer,
    GetCustomerAccess: on_get_customer_access,
    GetGeneration: on_get_generation,
    ListSteps: on_list_steps,
    RecentDurations: on_recent_durations,
    CustomerHistory: on_customer_history,
    CustomerEvents: on_customer_events,
    LikeWindow: on_like_window,
    GenerationCredits: on_generation_credits,
    SoftDeleteHistory: on_soft_delete_history,
    ListErrors: on_list_errors,
    ListGenerations: on_list_generations,
    AdminSummary: on_admin_summary,
    ListCustomers: on_list_customers,
    Reconcile: on_reconcile,
    ChargedUnfinished: on_charged_unfinished,
    GetActiveConfig: on_get_active_config,
    RunStartRead: on_run_start,
    SeedConfig: on_seed_config,
    AddConfigVersion: on_add_config_version,
    **POOL_RPC_HANDLERS,
}
