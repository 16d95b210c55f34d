-- Both record-type CHECKs allow every record type this product writes.
--
-- A production database made by the original backend has narrower CHECKs
-- (mega_generations: generation, session, feedback, credit_transaction; mega_admin: admin_session,
-- admin_audit, profile, runtime_config, app_config), which refuse every mma_step, mma_event, error
-- and warn row. A database made by our base migration has none. Either way each table ends with
-- the same named CHECK listing every type; the old one is dropped and the wider one added in this
-- one transaction, so no moment goes unguarded.
--
-- The new CHECK is added NOT VALID (it holds for every new row at once) and validated right away
-- when no stored row falls outside it; a row of an unknown type is kept, never rewritten, and the
-- constraint then stays NOT VALID (`migrate --plan` shows it). A CHECK that already allows every
-- type is left alone, so the file can run again without changing anything.

do $$
declare
    spec record;
    current_def text;
    type_list text;
    outside boolean;
begin
    for spec in
        select * from (values
            ('mega_generations', 'mega_generations_mg_record_type_check',
             array['generation', 'session', 'feedback', 'credit_transaction', 'mma_step', 'mma_event']),
            ('mega_admin', 'mega_admin_mg_record_type_check',
             array['admin_session', 'admin_audit', 'profile', 'runtime_config', 'app_config', 'error', 'warn'])
        ) as s(tbl, con, types)
    loop
        select pg_get_constraintdef(c.oid) into current_def
        from pg_constraint c
        where c.conrelid = spec.tbl::regclass and c.conname = spec.con;
        if current_def is not null and not exists (
            select 1 from unnest(spec.types) as t(name) where position(quote_literal(t.name) in current_def) = 0
        ) then
            continue;  -- already allows every type
        end if;
        select string_agg(quote_literal(t.name), ', ') into type_list from unnest(spec.types) as t(name);
        if current_def is not null then
            execute format('alter table %I drop constraint %I', spec.tbl, spec.con);
        end if;
        execute format('alter table %I add constraint %I check (mg_record_type in (%s)) not valid',
                       spec.tbl, spec.con, type_list);
        execute format('select exists (select 1 from %I where mg_record_type not in (%s))', spec.tbl, type_list)
            into outside;
        if outside then
            raise notice '% keeps rows of other record types: % stays NOT VALID', spec.tbl, spec.con;
        else
            execute format('alter table %I validate constraint %I', spec.tbl, spec.con);
        end if;
    end loop;
end
$$;
