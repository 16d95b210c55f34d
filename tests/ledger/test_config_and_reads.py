"""Versioned config and the read RPCs, called directly against a real database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.errors import NotFoundError
from libs.schemas import (
    AddConfigVersion,
    AdminSummary,
    ChargedUnfinished,
    CreditApply,
    CustomerEventRecorded,
    CustomerEvents,
    CustomerHistory,
    EnsureCustomer,
    GetActiveConfig,
    GetGeneration,
    LikeWindow,
    ListErrors,
    ListSteps,
    RunStartRead,
    SeedConfig,
    SoftDeleteHistory,
)
from services.ledger import rpc
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS
from tests.ledger.events import every_event

PASS = "pass:email:reads@example.com"


async def test_active_config_is_the_highest_enabled_version(deps: LedgerDeps) -> None:
    """Seed never overwrites; N+1 is taken under a lock; a disabled version is skipped."""
    key = "mma.ctx.gpt_reader"
    seeded = await rpc.on_seed_config(SeedConfig(entries={key: {"template": "v1"}}), deps)
    assert seeded.entries[key].id == f"app_config:{key}.v1"
    await rpc.on_seed_config(SeedConfig(entries={key: {"template": "other"}}), deps)
    added = await asyncio.gather(*(
        rpc.on_add_config_version(AddConfigVersion(key=key, value={"template": f"t{i}"}), deps) for i in range(4)))
    assert sorted(e.version for e in added) == [2, 3, 4, 5]
    await rpc.on_add_config_version(AddConfigVersion(key=key, value={"template": "off", "enabled": False}), deps)
    active = await rpc.on_get_active_config(GetActiveConfig(keys=[key]), deps)
    entry = active.entries[key]
    assert (entry.version, entry.id, entry.value["enabled"]) == (5, f"app_config:{key}.v5", True)
    assert entry.value["version"] == 5
    everything = await rpc.on_get_active_config(GetActiveConfig(), deps)
    assert set(everything.entries) == {key}
    v1 = await rpc.on_get_active_config(GetActiveConfig(keys=["missing.key"]), deps)
    assert v1.entries == {}


async def test_reads_after_projection(deps: LedgerDeps) -> None:
    """History, steps, events, likes, errors, summary and soft delete read the projected rows."""
    for msg in every_event("r", PASS):
        await EVENT_HANDLERS[type(msg)](msg, deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=3, ref="topup:test:r"), deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=-1, ref="debit:generation:g-r"), deps)

    customer = await rpc.on_ensure_customer(EnsureCustomer(pass_id=PASS, email="reads@example.com"), deps)
    assert customer.created is False and customer.email == "reads@example.com"
    fresh = await rpc.on_ensure_customer(EnsureCustomer(pass_id="pass:anon:new", user_id="not-a-uuid"), deps)
    assert fresh.created is True and fresh.credits == 0

    gen = await rpc.on_get_generation(GetGeneration(generation_id="g-r"), deps)
    assert gen.status == "done" and gen.output_url == "https://assets.example.com/o.png"
    with pytest.raises(NotFoundError):
        await rpc.on_get_generation(GetGeneration(generation_id="nope"), deps)
    steps = await rpc.on_list_steps(ListSteps(generation_id="g-r"), deps)
    assert [s.step_type for s in steps.steps] == ["scan_product", "seedream_generate"]

    history = await rpc.on_customer_history(CustomerHistory(pass_id=PASS, limit=1), deps)
    assert [g.generation_id for g in history.generations] == ["b-r"] and history.has_more
    page2 = await rpc.on_customer_history(CustomerHistory(pass_id=PASS, cursor=history.next_cursor), deps)
    assert [g.generation_id for g in page2.generations] == ["g-r"] and not page2.has_more
    full = await rpc.on_customer_history(CustomerHistory(pass_id=PASS), deps)
    assert len(full.sessions) == 1 and len(full.feedbacks) == 1 and len(full.credit_txns) == 2
    assert full.credits == 2

    events = await rpc.on_customer_events(CustomerEvents(pass_id=PASS), deps)
    assert [e.event_type for e in events.events] == ["preference_set", "like"]
    likes = await rpc.on_like_window(LikeWindow(pass_id=PASS), deps)
    assert [(i.generation_id, i.prompt, i.tags) for i in likes.items] == [("g-r", "p", ["style.minimal"])]
    await EVENT_HANDLERS[CustomerEventRecorded](
        CustomerEventRecorded(event_id="dl", pass_id=PASS, event_type="download", generation_id="g-r"), deps)
    assert len((await rpc.on_like_window(LikeWindow(pass_id=PASS), deps)).items) == 1

    errors = await rpc.on_list_errors(ListErrors(generation_id="b-r"), deps)
    assert [e.id for e in errors.errors] == ["error:b-r"]
    invalid = await rpc.on_list_errors(ListErrors(category="INVALID_MESSAGE"), deps)
    assert [e.id for e in invalid.errors] == ["error:dlq:MMA_EVENTS:99"]

    summary = await rpc.on_admin_summary(AdminSummary(), deps)
    assert summary.total_generations == 2 and summary.total_customers == 2
    assert {"day": "2025-12-19", "record_type": "mma_step", "count": 3} in summary.counts_by_day

    charged = await rpc.on_charged_unfinished(ChargedUnfinished(older_than_s=0), deps)
    assert charged.items == []

    other = await rpc.on_soft_delete_history(SoftDeleteHistory(pass_id="pass:anon:new", id="g-r"), deps)
    assert other.deleted_count == 0
    deleted = await rpc.on_soft_delete_history(SoftDeleteHistory(pass_id=PASS, id="generation:g-r"), deps)
    assert deleted.deleted_count > 1
    after = await rpc.on_customer_history(CustomerHistory(pass_id=PASS), deps)
    assert [g.generation_id for g in after.generations] == ["b-r"]


async def test_charged_unfinished_lists_debits_without_outcome(deps: LedgerDeps, pool: Any) -> None:
    """A debit with no terminal generation and no refund is listed; a refunded one is not."""
    for gid in ("u1", "u2"):
        await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=1, ref=f"topup:test:{gid}"), deps)
        await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=-1, ref=f"debit:generation:{gid}"), deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=1, ref="refund:generation:u2"), deps)
    items = (await rpc.on_charged_unfinished(ChargedUnfinished(older_than_s=0), deps)).items
    assert [(i.generation_id, i.debit, i.status) for i in items] == [("u1", 1, None)]
    assert (await rpc.on_charged_unfinished(ChargedUnfinished(older_than_s=3600), deps)).items == []


async def test_run_start_read_is_one_answer_with_the_config_only_when_it_changed(deps: LedgerDeps) -> None:
    """A run's start read: customer, like window and parent together; the config rows only when the config
    rows changed since the tag the caller holds, so a new version (or a value edited in SQL, or a version
    switched off) still reaches the next run."""
    who, key = "pass:email:start@example.com", "mma.ctx.gpt_reader_motion"
    for msg in every_event("s", who):
        await EVENT_HANDLERS[type(msg)](msg, deps)
    await rpc.on_seed_config(SeedConfig(entries={key: {"system": "v1"}}), deps)
    first = await rpc.on_run_start(
        RunStartRead(pass_id=who, like_limit=5, parent_generation_id="g-s", config_keys=[key]), deps)
    assert first.customer.pass_id == who
    assert [(i.generation_id, i.tags) for i in first.likes or []] == [("g-s", ["style.minimal"])]
    assert first.parent is not None and first.parent.status == "done"
    assert first.config is not None and first.config[key].version == 1 and first.config_tag

    same = await rpc.on_run_start(RunStartRead(pass_id=who, config_keys=[key], config_tag=first.config_tag), deps)
    assert same.config is None and same.config_tag == first.config_tag
    assert same.likes is None and same.parent is None

    await rpc.on_add_config_version(AddConfigVersion(key=key, value={"system": "v2"}), deps)
    changed = await rpc.on_run_start(RunStartRead(pass_id=who, config_keys=[key], config_tag=first.config_tag),
                                     deps)
    assert changed.config_tag != first.config_tag
    assert changed.config is not None and changed.config[key].version == 2
    assert changed.config[key].value["system"] == "v2"

    async with deps.pool.acquire() as conn:  # an operator edits the active version in place
        await conn.execute("update mega_admin set mg_value = jsonb_set(mg_value, '{system}', '\"v2 edited\"') "
                           "where mg_id = $1", changed.config[key].id)
    edited = await rpc.on_run_start(RunStartRead(pass_id=who, config_keys=[key], config_tag=changed.config_tag),
                                    deps)
    assert edited.config_tag != changed.config_tag
    assert edited.config is not None and edited.config[key].value["system"] == "v2 edited"

    async with deps.pool.acquire() as conn:  # ... then switches it off: version 1 is the active one again
        await conn.execute("update mega_admin set mg_value = mg_value || '{\"enabled\": false}' where mg_id = $1",
                           changed.config[key].id)
    off = await rpc.on_run_start(RunStartRead(pass_id=who, config_keys=[key], config_tag=edited.config_tag), deps)
    assert off.config is not None and off.config[key].version == 1 and off.config_tag != edited.config_tag

    nobody = await rpc.on_run_start(RunStartRead(pass_id="pass:anon:nobody", parent_generation_id="missing",
                                                 config_keys=[key], config_tag=off.config_tag), deps)
    assert (nobody.customer.credits, nobody.parent, nobody.config) == (0, None, None)
