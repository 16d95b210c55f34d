-- The books open: one opening-balance credit row per customer, and the welcome-credit rule.
--
-- A production customer's balance may have been copied from the legacy customers table with no
-- ledger row behind it, or written next to rows that do not add up to it. The usual accounting
-- entry makes balance = sum of deltas true from the first minute without touching any existing
-- row: `credit_transaction:opening:<pass_id>` with delta = balance - sum of the existing deltas
-- (0 when they already agree; it still records that the customer existed before this product).
--
-- mega_open_books() writes the missing ones and returns how many; it is idempotent (one row per
-- customer, by id) and may be called again by hand after a late write of the old backend
-- (docs/runbook.md). Customers are locked against balance changes while it computes.
--
-- mega_welcome(pass_id, credits): the welcome credits, once (ref `welcome:<pass_id>`), and only
-- for a pass id this product created: a customer with an opening row existed before and is
-- refused ('ineligible'), whatever its balance.

create or replace function mega_open_books() returns integer
language plpgsql as $$
declare
    written integer;
begin
    lock table mega_customers in share row exclusive mode;
    insert into mega_generations (
        mg_id, mg_record_type, mg_pass_id, mg_delta, mg_reason, mg_source, mg_ref_type, mg_ref_id, mg_meta,
        mg_source_system, mg_created_at
    )
    select 'credit_transaction:opening:' || c.mg_pass_id, 'credit_transaction', c.mg_pass_id,
           (coalesce(c.mg_credits, 0) - coalesce(s.total, 0))::integer, 'opening_balance', 'migration',
           'opening_balance', c.mg_pass_id,
           jsonb_build_object('ref', 'opening:' || c.mg_pass_id, 'balance', coalesce(c.mg_credits, 0),
                              'sum_before', coalesce(s.total, 0)),
           'mma', now()
    from mega_customers c
    left join (
        select g.mg_pass_id, sum(g.mg_delta)::bigint as total
        from mega_generations g
        where g.mg_record_type = 'credit_transaction'
        group by g.mg_pass_id
    ) s on s.mg_pass_id = c.mg_pass_id
    where not exists (
        select 1 from mega_generations o where o.mg_id = 'credit_transaction:opening:' || c.mg_pass_id)
    on conflict (mg_id) do nothing;
    get diagnostics written = row_count;
    return written;
end
$$;

select mega_open_books();

create or replace function mega_welcome(p_pass_id text, p_credits integer)
returns table (outcome text, credits integer, expires_at timestamptz)
language plpgsql as $$
#variable_conflict use_column
declare
    v_credits integer;
    v_expires timestamptz;
begin
    if exists (select 1 from mega_generations g where g.mg_id = 'credit_transaction:opening:' || p_pass_id) then
        select c.mg_credits, c.mg_expires_at into v_credits, v_expires
        from mega_customers c where c.mg_pass_id = p_pass_id;
        outcome := 'ineligible';
        credits := case when v_expires is not null and v_expires < now() then 0 else coalesce(v_credits, 0) end;
        expires_at := v_expires;
        return next;
        return;
    end if;
    return query select a.outcome, a.credits, a.expires_at from mega_credit_apply(
        'welcome:' || p_pass_id, p_pass_id, null, p_credits, 'welcome', 'welcome', 'welcome', p_pass_id, null
    ) as a;
end
$$;
