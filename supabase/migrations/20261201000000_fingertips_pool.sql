-- The fingertips pool: fractions of a credit, held in the ledger beside the balance.
--
-- Fingertips tools cost fractions of a credit (0.5, 0.2, 0.1). A customer's pool is a column,
-- `mega_customers.mg_fingertips_pool`, and every change of it is a `credit_transaction` row carrying
-- `mg_pool_delta` (the original backend kept the pool as a JSON number in mg_mma_preferences, changed
-- by read-modify-write with no row of its own). Invariants, checked by reconcile:
--   balance = sum(mg_delta)  and  pool = sum(mg_pool_delta)  per customer,
-- so balance + pool = the sum of all deltas, and neither goes below zero.
--
-- The rows of one fingertips generation <gid> (ids are `credit_transaction:<ref>`):
--   fingertips:refill:<gid>  mg_delta -1, mg_pool_delta +1.00: the pool was short, one whole credit moved in
--   fingertips:draw:<gid>    mg_delta  0, mg_pool_delta -cost
--   fingertips:refund:<gid>  mg_delta  0, mg_pool_delta +cost: the edit failed, its cost goes back to the pool
-- Each ref is written at most once (the id is the ref), so a redelivered draw or refund changes nothing.
--
-- mega_pool_draw(pass_id, generation_id, cost, model_key): the customer row is created if missing and
-- locked (FOR NO KEY UPDATE, as mega_credit_apply), so two draws of one customer take turns and never
-- overdraw. 'applied' | 'duplicate' (this generation already drew: the first draw's facts are reported)
-- | 'insufficient' (pool < cost and fewer than 1 unexpired credit; nothing written).
-- mega_pool_refund(generation_id): the draw's cost back to the pool, once. 'applied' | 'duplicate' |
-- 'no_draw' (the generation never drew from the pool: not a fingertips edit, or refused).
-- mega_open_pool(): a pool the original backend left in mg_mma_preferences.fingertips_pool becomes an
-- opening row (`fingertips:opening:<pass_id>`, once per customer) and the column's value.

alter table mega_customers add column if not exists mg_fingertips_pool numeric(12, 2) not null default 0;
alter table mega_generations add column if not exists mg_pool_delta numeric(12, 2);

do $$
begin
    if not exists (select 1 from pg_constraint
                   where conrelid = 'mega_customers'::regclass and conname = 'mega_customers_fingertips_pool_check') then
        alter table mega_customers add constraint mega_customers_fingertips_pool_check
            check (mg_fingertips_pool >= 0);
    end if;
end
$$;

create or replace function mega_open_pool() returns integer
language plpgsql as $$
declare
    written integer;
begin
    lock table mega_customers in share row exclusive mode;
    with old as (
        select c.mg_pass_id,
               round(case
                   when jsonb_typeof(c.mg_mma_preferences -> 'fingertips_pool') = 'number'
                       then (c.mg_mma_preferences ->> 'fingertips_pool')::numeric
                   when jsonb_typeof(c.mg_mma_preferences -> 'fingertips_pool') = 'string'
                        and (c.mg_mma_preferences ->> 'fingertips_pool') ~ '^\s*[0-9]+(\.[0-9]+)?\s*$'
                       then trim(c.mg_mma_preferences ->> 'fingertips_pool')::numeric
               end, 2) as pool
        from mega_customers c
    ), opened as (
        insert into mega_generations (
            mg_id, mg_record_type, mg_pass_id, mg_delta, mg_pool_delta, mg_reason, mg_source, mg_ref_type,
            mg_ref_id, mg_meta, mg_source_system
        )
        select 'credit_transaction:fingertips:opening:' || o.mg_pass_id, 'credit_transaction', o.mg_pass_id, 0,
               o.pool, 'fingertips_pool_opening', 'migration', 'fingertips_opening', o.mg_pass_id,
               jsonb_build_object('ref', 'fingertips:opening:' || o.mg_pass_id, 'pool', o.pool,
                                  'from', 'mg_mma_preferences.fingertips_pool'),
               'mma'
        from old o
        where o.pool > 0 and o.pool < 1000000
        on conflict (mg_id) do nothing
        returning mg_pass_id, mg_pool_delta
    )
    update mega_customers c set mg_fingertips_pool = c.mg_fingertips_pool + opened.mg_pool_delta
    from opened where c.mg_pass_id = opened.mg_pass_id;
    get diagnostics written = row_count;
    return written;
end
$$;

select mega_open_pool();

create or replace function mega_pool_draw(p_pass_id text, p_generation_id text, p_cost numeric, p_model_key text)
returns table (outcome text, credits integer, pool numeric, expires_at timestamptz, pool_before numeric,
               matchas_deducted integer)
language plpgsql as $$
#variable_conflict use_column
declare
    v_credits integer;
    v_expires timestamptz;
    v_pool numeric;
    v_before numeric;
    v_refill integer := 0;
    v_meta jsonb;
    v_expired boolean;
begin
    if p_cost is null or p_cost <= 0 or p_cost > 1 or round(p_cost, 2) <> p_cost then
        raise exception 'a fingertips cost is a positive amount of at most 1 credit, in hundredths: %', p_cost
            using errcode = '22023';
    end if;
    insert into mega_customers (mg_pass_id, mg_credits, mg_source_system, mg_meta)
    values (p_pass_id, 0, 'mma', '{}'::jsonb)
    on conflict (mg_pass_id) do nothing;
    select coalesce(c.mg_credits, 0), c.mg_expires_at, c.mg_fingertips_pool into v_credits, v_expires, v_pool
    from mega_customers c where c.mg_pass_id = p_pass_id
    for no key update;
    v_expired := v_expires is not null and v_expires < now();

    select g.mg_meta into v_meta from mega_generations g
    where g.mg_id = 'credit_transaction:fingertips:draw:' || p_generation_id;
    if found then
        outcome := 'duplicate';
        pool_before := (v_meta ->> 'pool_before')::numeric;
        matchas_deducted := coalesce((v_meta ->> 'matchas_deducted')::integer, 0);
    elsif v_pool < p_cost and (v_expired or v_credits < 1) then
        outcome := 'insufficient';
        pool_before := v_pool;
        matchas_deducted := 0;
    else
        v_before := v_pool;
        if v_pool < p_cost then
            insert into mega_generations (
                mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_delta, mg_pool_delta, mg_reason, mg_source,
                mg_ref_type, mg_ref_id, mg_status, mg_meta, mg_source_system
            ) values (
                'credit_transaction:fingertips:refill:' || p_generation_id, 'credit_transaction', p_pass_id,
                p_generation_id, -1, 1, 'fingertips_pool_refill', 'fingertips', 'fingertips_refill', p_generation_id,
                'succeeded',
                jsonb_build_object('ref', 'fingertips:refill:' || p_generation_id, 'credits_before', v_credits,
                                   'credits_after', v_credits - 1, 'pool_before', v_pool, 'pool_after', v_pool + 1,
                                   'expires_at', v_expires),
                'mma'
            )
            on conflict (mg_id) do nothing;
            if found then
                v_credits := v_credits - 1;
                v_pool := v_pool + 1;
                v_refill := 1;
            end if;
        end if;
        insert into mega_generations (
            mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_delta, mg_pool_delta, mg_reason, mg_source,
            mg_ref_type, mg_ref_id, mg_status, mg_meta, mg_source_system
        ) values (
            'credit_transaction:fingertips:draw:' || p_generation_id, 'credit_transaction', p_pass_id,
            p_generation_id, 0, -p_cost, 'fingertips_pool_draw', 'fingertips', 'fingertips_draw', p_generation_id,
            'succeeded',
            jsonb_build_object('ref', 'fingertips:draw:' || p_generation_id, 'pool_before', v_before,
                               'pool_cost', p_cost, 'pool_after', v_pool - p_cost, 'matchas_deducted', v_refill,
                               'model_key', p_model_key),
            'mma'
        );
        v_pool := v_pool - p_cost;
        update mega_customers c set
            mg_credits = v_credits,
            mg_fingertips_pool = v_pool,
            mg_last_active = now(),
            mg_updated_at = now()
        where c.mg_pass_id = p_pass_id;
        outcome := 'applied';
        pool_before := v_before;
        matchas_deducted := v_refill;
    end if;

    credits := case when v_expired then 0 else v_credits end;
    pool := v_pool;
    expires_at := v_expires;
    return next;
end
$$;

create or replace function mega_pool_refund(p_generation_id text)
returns table (outcome text, amount numeric, credits integer, pool numeric, expires_at timestamptz)
language plpgsql as $$
#variable_conflict use_column
declare
    v_pass text;
    v_cost numeric;
    v_credits integer;
    v_expires timestamptz;
    v_pool numeric;
begin
    select g.mg_pass_id, -g.mg_pool_delta into v_pass, v_cost from mega_generations g
    where g.mg_id = 'credit_transaction:fingertips:draw:' || p_generation_id;
    if not found then
        outcome := 'no_draw';
        amount := 0;
        credits := 0;
        pool := 0;
        return next;
        return;
    end if;
    select coalesce(c.mg_credits, 0), c.mg_expires_at, c.mg_fingertips_pool into v_credits, v_expires, v_pool
    from mega_customers c where c.mg_pass_id = v_pass
    for no key update;
    insert into mega_generations (
        mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_delta, mg_pool_delta, mg_reason, mg_source,
        mg_ref_type, mg_ref_id, mg_status, mg_meta, mg_source_system
    ) values (
        'credit_transaction:fingertips:refund:' || p_generation_id, 'credit_transaction', v_pass, p_generation_id,
        0, v_cost, 'fingertips_pool_refund', 'fingertips', 'fingertips_refund', p_generation_id, 'succeeded',
        jsonb_build_object('ref', 'fingertips:refund:' || p_generation_id, 'pool_refunded', v_cost,
                           'pool_before', v_pool, 'pool_after', v_pool + v_cost),
        'mma'
    )
    on conflict (mg_id) do nothing;
    if found then
        v_pool := v_pool + v_cost;
        update mega_customers c set mg_fingertips_pool = v_pool, mg_updated_at = now()
        where c.mg_pass_id = v_pass;
        outcome := 'applied';
    else
        outcome := 'duplicate';
    end if;
    amount := v_cost;
    credits := case when v_expires is not null and v_expires < now() then 0 else v_credits end;
    pool := v_pool;
    expires_at := v_expires;
    return next;
end
$$;
