-- Both record-type CHECKs allow every record type this product writes.
--
-- A production database made by the original backend has narrower CHECKs
-- (mega_generations: generation, session, feedback, credit_transaction; mega_admin: admin_session,
-- admin_audit, profile, runtime_config, app_config), which refuse every mma_step, mma_event, error
-- and warn row. A database made by our base migration has none. Either way each table ends with
-- the same named CHECK listing every type.
--
-- mega_allow_record_types(table, constraint, types): a CHECK that already allows every type is
-- left alone (so the call can run again without changing anything); otherwise the old one is
-- dropped and the wider one added in the caller's transaction, so no moment goes unguarded. It is
-- added NOT VALID (it holds for every new row at once) and validated right away when no stored row
-- falls outside it; a row of an unknown type is kept, never rewritten, and the constraint then
-- stays NOT VALID with a notice (`migrate --plan` shows it). A later record type is one more
-- migration calling this function with the longer list.

create or replace function mega_allow_record_types(p_table text, p_constraint text, p_types text[])
returns void
language plpgsql as $$
declare
    current_def text;
    type_list text;
    outside boolean;
begin
    select pg_get_constraintdef(c.oid) into current_def
    from pg_constraint c
    where c.conrelid = p_table::regclass and c.conname = p_constraint;
    if current_def is not null and not exists (
        select 1 from unnest(p_types) as t(name) where position(quote_literal(t.name) in current_def) = 0
    ) then
        return;  -- already allows every type
    end if;
    select string_agg(quote_literal(t.name), ', ') into type_list from unnest(p_types) as t(name);
    if current_def is not null then
        execute format('alter table %I drop constraint %I', p_table, p_constraint);
    end if;
    execute format('alter table %I add constraint %I check (mg_record_type in (%s)) not valid',
                   p_table, p_constraint, type_list);
    execute format('select exists (select 1 from %I where mg_record_type not in (%s))', p_table, type_list)
        into outside;
    if outside then
        raise notice '% keeps rows of other record types: % stays NOT VALID', p_table, p_constraint;
    else
        execute format('alter table %I validate constraint %I', p_table, p_constraint);
    end if;
end
$$;

select mega_allow_record_types('mega_generations', 'mega_generations_mg_record_type_check',
    array['generation', 'session', 'feedback', 'credit_transaction', 'mma_step', 'mma_event']);
select mega_allow_record_types('mega_admin', 'mega_admin_mg_record_type_check',
    array['admin_session', 'admin_audit', 'profile', 'runtime_config', 'app_config', 'error', 'warn']);
