-- No planner statistics for mega_generations' whole-document JSON columns.
--
-- ANALYZE samples up to 30,000 rows and, for every column, reads the whole value of each: for
-- mg_mma_vars (the run's variable map, kilobytes per generation row), mg_payload and mg_meta that is
-- most of its work (measured on 22,000 rows: 350 ms, 100 ms without these three). No query of ours
-- asks the planner to estimate these columns: rows are found by id, pass id, generation id and record
-- type, and a JSON field is only filtered after such a lookup (`mg_meta->>'event_type'`, which column
-- statistics do not describe anyway). Autovacuum analyzes the table after every 10% of new rows, on
-- the same cores as the ledger; on a young table that is every few seconds of steady creates.
-- Expression indexes (mg_meta->>'ref') keep their own statistics. Guarded: a column missing on some
-- database is skipped; the setting is a catalog change (no rewrite, a brief lock).
do $$
declare
    col text;
begin
    foreach col in array array['mg_mma_vars', 'mg_payload', 'mg_meta'] loop
        if exists (select 1 from information_schema.columns
                   where table_schema = 'public' and table_name = 'mega_generations' and column_name = col) then
            execute format('alter table public.mega_generations alter column %I set statistics 0', col);
        end if;
    end loop;
end $$;
