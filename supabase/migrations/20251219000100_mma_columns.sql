-- MMA columns, indexes and the mma_step CHECK, over the base (or an existing pre-MMA) schema.
-- Every statement is guarded, so the file can run again without changing anything.

alter table mega_customers add column if not exists mg_mma_preferences jsonb not null default '{}'::jsonb;
alter table mega_customers add column if not exists mg_mma_preferences_updated_at timestamptz;

alter table mega_generations add column if not exists mg_parent_id text;
alter table mega_generations add column if not exists mg_step_no integer;
alter table mega_generations add column if not exists mg_step_type text;
alter table mega_generations add column if not exists mg_mma_mode text;
alter table mega_generations add column if not exists mg_mma_status text;
alter table mega_generations add column if not exists mg_mma_vars jsonb not null default '{}'::jsonb;

-- customers
create index if not exists mega_customers_mma_preferences_gin
    on mega_customers using gin (mg_mma_preferences);

-- generations
create index if not exists mega_generations_gen_type_step_idx
    on mega_generations (mg_generation_id, mg_record_type, mg_step_no);
create index if not exists mega_generations_pass_type_created_idx
    on mega_generations (mg_pass_id, mg_record_type, mg_created_at desc);
create index if not exists mega_generations_mma_vars_gin
    on mega_generations using gin (mg_mma_vars);
create index if not exists mega_generations_gen_step_type_idx
    on mega_generations (mg_generation_id, mg_step_type);
create index if not exists mega_generations_type_created_idx
    on mega_generations (mg_record_type, mg_created_at desc);

-- A credit ref takes effect at most once (mg_id is already derived from it; this also
-- covers rows written with the ref in mg_meta by any other writer).
create unique index if not exists mega_generations_credit_ref_uq
    on mega_generations ((mg_meta->>'ref'))
    where mg_record_type = 'credit_transaction' and mg_meta ? 'ref';

-- admin
create index if not exists mega_admin_type_created_idx
    on mega_admin (mg_record_type, mg_created_at desc);
create index if not exists mega_admin_detail_generation_idx
    on mega_admin ((mg_detail->>'generation_id'));
create index if not exists mega_admin_detail_step_type_idx
    on mega_admin ((mg_detail->>'step_type'));
create index if not exists mega_admin_key_idx
    on mega_admin (mg_key) where mg_record_type = 'app_config';

-- An mma_step row names its step and hangs off its generation.
do $$
begin
    if not exists (select 1 from pg_constraint where conname = 'mega_generations_mma_step_check') then
        alter table mega_generations add constraint mega_generations_mma_step_check check (
            mg_record_type <> 'mma_step'
            or (mg_step_no is not null
                and mg_step_type is not null
                and mg_generation_id is not null
                and mg_parent_id like 'generation:%')
        );
    end if;
end
$$;

-- Rows name an existing customer. NOT VALID: enforced for every new row, while rows a
-- pre-MMA database already holds are kept as they are. A production database already has its
-- own foreign key on mg_pass_id (mega_generations_mg_pass_id_fkey): then nothing is added.
do $$
begin
    if not exists (select 1 from pg_constraint where conname = 'mega_generations_pass_id_fkey')
       and not exists (
           select 1 from pg_constraint c
           join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
           where c.conrelid = 'mega_generations'::regclass and c.contype = 'f'
             and cardinality(c.conkey) = 1 and a.attname = 'mg_pass_id') then
        alter table mega_generations add constraint mega_generations_pass_id_fkey
            foreign key (mg_pass_id) references mega_customers (mg_pass_id) not valid;
    end if;
end
$$;
