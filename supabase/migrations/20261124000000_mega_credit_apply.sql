-- The credit apply as one statement (one round trip instead of six).
--
-- mega_credit_apply: the customer row is created if missing and locked (FOR NO KEY UPDATE,
-- the lock an UPDATE takes, so the projection's inserts referencing the customer never wait
-- on it); the ref row (`credit_transaction:<ref>`) is written at most once; the balance
-- never goes below zero and expired credits are never debited. A refused change writes nothing, so the
-- same ref may be applied later once there is credit. Returns the outcome
-- ('applied' | 'duplicate' | 'insufficient') and the effective balance after it.
--
-- mega_credit_apply_many: the same for a batch, in one transaction. Rows are taken in
-- pass id order (then in the order given), so two batches lock customers in the same
-- order and cannot deadlock; `idx` is the item's 1-based position in the arrays.

create or replace function mega_credit_apply(
    p_ref text, p_pass_id text, p_generation_id text, p_delta integer, p_reason text, p_source text,
    p_ref_type text, p_ref_id text, p_expires_at timestamptz
) returns table (outcome text, credits integer, expires_at timestamptz)
language plpgsql as $$
#variable_conflict use_column
declare
    v_credits integer;
    v_expires timestamptz;
begin
    insert into mega_customers (mg_pass_id, mg_credits, mg_source_system, mg_meta)
    values (p_pass_id, 0, 'mma', '{}'::jsonb)
    on conflict (mg_pass_id) do nothing;
    select c.mg_credits, c.mg_expires_at into v_credits, v_expires
    from mega_customers c where c.mg_pass_id = p_pass_id
    for no key update;  -- what an UPDATE takes: rows that merely reference the customer (FK) are not blocked

    if coalesce(v_credits, 0) + p_delta < 0
       or (p_delta < 0 and v_expires is not null and v_expires < now()) then
        -- a ref already applied is a duplicate even when the balance could not take it again
        if exists (select 1 from mega_generations g where g.mg_id = 'credit_transaction:' || p_ref) then
            outcome := 'duplicate';
        else
            outcome := 'insufficient';
        end if;
    else
        insert into mega_generations (
            mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_delta, mg_reason, mg_source,
            mg_ref_type, mg_ref_id, mg_meta, mg_source_system
        ) values (
            'credit_transaction:' || p_ref, 'credit_transaction', p_pass_id, p_generation_id, p_delta, p_reason,
            p_source, p_ref_type, p_ref_id, jsonb_build_object('ref', p_ref), 'mma'
        )
        on conflict (mg_id) do nothing;
        if found then
            update mega_customers c set
                mg_credits = coalesce(c.mg_credits, 0) + p_delta,
                mg_expires_at = coalesce(p_expires_at, c.mg_expires_at),
                mg_last_topup_at = case when p_delta > 0 then now() else c.mg_last_topup_at end,
                mg_updated_at = now()
            where c.mg_pass_id = p_pass_id
            returning c.mg_credits, c.mg_expires_at into v_credits, v_expires;
            outcome := 'applied';
        else
            outcome := 'duplicate';
        end if;
    end if;

    credits := case when v_expires is not null and v_expires < now() then 0 else coalesce(v_credits, 0) end;
    expires_at := v_expires;
    return next;
end
$$;

create or replace function mega_credit_apply_many(
    p_refs text[], p_pass_ids text[], p_generation_ids text[], p_deltas integer[], p_reasons text[],
    p_sources text[], p_ref_types text[], p_ref_ids text[], p_expires_at timestamptz[]
) returns table (idx integer, outcome text, credits integer, expires_at timestamptz)
language plpgsql as $$
#variable_conflict use_column
declare
    i integer;
    r record;
begin
    for i in
        select s.i from generate_subscripts(p_refs, 1) as s(i) order by p_pass_ids[s.i], s.i
    loop
        select * into r from mega_credit_apply(
            p_refs[i], p_pass_ids[i], p_generation_ids[i], p_deltas[i], p_reasons[i], p_sources[i],
            p_ref_types[i], p_ref_ids[i], p_expires_at[i]
        );
        idx := i;
        outcome := r.outcome;
        credits := r.credits;
        expires_at := r.expires_at;
        return next;
    end loop;
end
$$;
