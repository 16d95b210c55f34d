"""The MEGA invariants, checked in SQL: money, generation outcomes, steps, links, URLs.

Each check is one query returning the offending rows; a report lists the breaches
per check. Run as an RPC (`Reconcile`) or as `python -m services.ledger reconcile`.
"""

from __future__ import annotations

from libs.schemas import Reconcile, ReconcileReport
from services.ledger.adapters.pg import Conn

DEFAULT_PROVIDER_HOSTS = ["replicate.delivery", "replicate.com", "oaidalleapiprodscus", "openai.com"]
MAX_BREACHES_PER_CHECK = 200

# Debits and refunds of a generation: credit rows naming it, by the sign of the delta.
_GEN_CREDITS = """
select mg_generation_id as gid,
       count(*) filter (where mg_delta < 0) as debits,
       count(*) filter (where mg_delta > 0) as refunds
from mega_generations
where mg_record_type = 'credit_transaction' and mg_generation_id is not null
group by mg_generation_id
"""

CHECKS: dict[str, str] = {
    # balance = sum of the ledger deltas, per customer (a ledger row without a customer too)
    "balance_mismatch": """
        select coalesce(c.mg_pass_id, s.mg_pass_id) as pass_id, c.mg_credits as balance,
               coalesce(s.total, 0) as sum_deltas
        from mega_customers c
        full join (
            select mg_pass_id, sum(mg_delta)::bigint as total from mega_generations
            where mg_record_type = 'credit_transaction' group by mg_pass_id
        ) s on s.mg_pass_id = c.mg_pass_id
        where coalesce(c.mg_credits, 0) <> coalesce(s.total, 0) or c.mg_pass_id is null
    """,
    "negative_balance": """
        select mg_pass_id as pass_id, mg_credits as balance from mega_customers where mg_credits < 0
    """,
    "multiple_debits": f"""
        select gid as generation_id, debits from ({_GEN_CREDITS}) x where debits > 1
    """,
    # a debited generation that failed has exactly one refund; a cancel after the generator
    # started may have none (MMA_CANCEL_REFUND_AFTER_PROVIDER_START, docs/control.md)
    "failed_refund_count": f"""
        select g.mg_generation_id as generation_id, x.refunds
        from mega_generations g join ({_GEN_CREDITS}) x on x.gid = g.mg_generation_id
        where g.mg_record_type = 'generation' and g.mg_mma_status in ('error', 'cancelled')
          and x.debits > 0 and x.refunds <> 1
          and not (x.refunds = 0 and g.mg_mma_status = 'cancelled' and exists (
                select 1 from mega_admin a
                where a.mg_record_type = 'error' and a.mg_detail->>'generation_id' = g.mg_generation_id
                  and a.mg_detail->>'provider_started' = 'true'))
    """,
    "refund_without_failure": f"""
        select x.gid as generation_id, g.mg_mma_status as status
        from ({_GEN_CREDITS}) x
        left join mega_generations g on g.mg_id = 'generation:' || x.gid
        where x.refunds > 0 and (g.mg_id is null or g.mg_mma_status is null
                                 or g.mg_mma_status not in ('error', 'cancelled'))
    """,
    "done_without_public_output": """
        select mg_generation_id as generation_id, mg_output_url as output_url
        from mega_generations
        where mg_record_type = 'generation' and mg_mma_status = 'done'
          and (mg_output_url is null or ($1::text is not null and not starts_with(mg_output_url, $1::text)))
    """,
    # both log planes: the run plane (failed step or mg_error) and the ops plane (error row)
    "error_missing_planes": """
        select g.mg_generation_id as generation_id,
               (g.mg_error is not null or exists (
                    select 1 from mega_generations s
                    where s.mg_generation_id = g.mg_generation_id and s.mg_record_type = 'mma_step'
                      and s.mg_status = 'failed')) as run_plane,
               exists (
                    select 1 from mega_admin a
                    where a.mg_detail->>'generation_id' = g.mg_generation_id
                      and a.mg_record_type = 'error') as ops_plane
        from mega_generations g
        where g.mg_record_type = 'generation' and g.mg_mma_status = 'error'
          and not (
              (g.mg_error is not null or exists (
                    select 1 from mega_generations s
                    where s.mg_generation_id = g.mg_generation_id and s.mg_record_type = 'mma_step'
                      and s.mg_status = 'failed'))
              and exists (
                    select 1 from mega_admin a
                    where a.mg_detail->>'generation_id' = g.mg_generation_id and a.mg_record_type = 'error'))
    """,
    # every row this product writes has mg_mma_status; a legacy row (mg_status only) is history, not stuck
    "stuck": """
        select mg_generation_id as generation_id, mg_mma_status as status, mg_created_at as created_at
        from mega_generations
        where mg_record_type = 'generation'
          and mg_mma_status is not null and mg_mma_status not in ('done', 'suggested', 'error', 'cancelled')
          and mg_created_at < now() - make_interval(secs => $1)
    """,
    "step_gaps": """
        select mg_generation_id as generation_id, count(*) as steps, min(mg_step_no) as first_step,
               max(mg_step_no) as last_step
        from mega_generations where mg_record_type = 'mma_step'
        group by mg_generation_id
        having min(mg_step_no) <> 1 or max(mg_step_no) <> count(*)
    """,
    "orphan_parent": """
        select g.mg_id as id, g.mg_parent_id as parent_id
        from mega_generations g
        where g.mg_parent_id is not null
          and not exists (select 1 from mega_generations p where p.mg_id = g.mg_parent_id)
    """,
    "provider_url": """
        select g.mg_id as id, coalesce(g.mg_output_url, g.mg_image_url, g.mg_video_url) as url
        from mega_generations g
        where exists (
            select 1 from unnest($1::text[]) as h(host)
            where strpos(coalesce(g.mg_output_url, ''), h.host) > 0
               or strpos(coalesce(g.mg_image_url, ''), h.host) > 0
               or strpos(coalesce(g.mg_video_url, ''), h.host) > 0)
    """,
}

TOTALS = """
select (select count(*) from mega_customers) as customers,
       (select count(*) from mega_generations where mg_record_type = 'generation') as generations,
       (select coalesce(sum(mg_credits), 0)::bigint from mega_customers) as sum_balances,
       (select coalesce(sum(mg_delta), 0)::bigint from mega_generations
         where mg_record_type = 'credit_transaction') as sum_deltas
"""


def _args(name: str, req: Reconcile) -> list[object]:
    if name == "done_without_public_output":
        return [req.public_base]
    if name == "stuck":
        return [float(req.stuck_after_s)]
    if name == "provider_url":
        return [list(req.provider_hosts or DEFAULT_PROVIDER_HOSTS)]
    return []


async def run_checks(conn: Conn, req: Reconcile) -> ReconcileReport:
    """Every check in one repeatable-read snapshot, so money totals and rows agree."""
    checks: dict[str, int] = {}
    breaches: list[dict[str, object]] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for name, sql in CHECKS.items():
            rows = await conn.fetch(sql, *_args(name, req))
            checks[name] = len(rows)
            breaches.extend({"check": name, **dict(row)} for row in rows[:MAX_BREACHES_PER_CHECK])
        totals_row = await conn.fetchrow(TOTALS)
    assert totals_row is not None  # aggregates: always one row
    totals = dict(totals_row)
    report = ReconcileReport(ok=not any(checks.values()), checks=checks, breaches=breaches, totals=totals)
    return ReconcileReport.model_validate(report.model_dump(mode="json"))


def format_report(report: ReconcileReport) -> str:
    """A readable report for the CLI: one line per check, then each breach."""
    lines = [f"MEGA reconcile: {'OK' if report.ok else 'BREACHES FOUND'}"]
    lines += [f"  totals: {', '.join(f'{k}={v}' for k, v in report.totals.items())}"]
    for name, count in report.checks.items():
        lines.append(f"  [{'ok' if count == 0 else 'FAIL'}] {name}: {count}")
    for breach in report.breaches:
        fields = ", ".join(f"{k}={v}" for k, v in breach.items() if k != "check")
        lines.append(f"    - {breach['check']}: {fields}")
    return "\n".join(lines)
