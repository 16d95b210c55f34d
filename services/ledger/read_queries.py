"""The SQL of the ledger's reads (customer-facing and ops plane) and of the config versions.

Every list takes its LIMIT as a parameter, clamped by `page`.
"""

from __future__ import annotations

MAX_PAGE = 500


def page(limit: int) -> int:
    """A list's LIMIT: at least 1, at most MAX_PAGE."""
    return max(1, min(int(limit), MAX_PAGE))

# --------------------------------------------------------------------------- customers

GET_CUSTOMER = "select * from mega_customers where mg_pass_id = $1"

LIST_CUSTOMERS = """
select * from mega_customers where mg_deleted_at is null
order by mg_created_at desc, mg_pass_id limit $1
"""

# --------------------------------------------------------------------------- generations, steps

GET_GENERATION = """
select * from mega_generations where mg_id = 'generation:' || $1 and mg_record_type = 'generation'
"""

RECENT_DURATIONS = """
select avg(extract(epoch from (t.mg_updated_at - t.mg_created_at)))::float8 as mean_s, count(*) as samples
from (
    select mg_updated_at, mg_created_at from mega_generations
    where mg_record_type = 'generation' and mg_mma_status = 'done' and mg_deleted_at is null
    order by mg_updated_at desc limit $1
) t
"""

LIST_GENERATIONS = """
select * from mega_generations
where mg_record_type = 'generation' and ($1::text is null or mg_pass_id = $1)
order by mg_created_at desc, mg_id desc limit $2
"""

LIST_STEPS = """
select * from mega_generations
where mg_generation_id = $1 and mg_record_type = 'mma_step'
order by mg_step_no
"""

# --------------------------------------------------------------------------- customer events

CUSTOMER_EVENTS = """
select * from mega_generations
where mg_pass_id = $1 and mg_record_type = 'mma_event' and mg_deleted_at is null
order by mg_created_at desc, mg_id desc limit $2
"""

# Distinct generations with a like or download, newest event first.
LIKE_WINDOW = """
select e.mg_generation_id, g.mg_output_url, g.mg_prompt, e.tags
from (
    select mg_generation_id,
           max(mg_created_at) as last_at,
           (array_agg(mg_meta->'payload'->'tags' order by mg_created_at desc))[1] as tags
    from mega_generations
    where mg_pass_id = $1 and mg_record_type = 'mma_event' and mg_deleted_at is null
      and mg_generation_id is not null and mg_meta->>'event_type' in ('like', 'download')
    group by mg_generation_id
) e
join mega_generations g on g.mg_id = 'generation:' || e.mg_generation_id and g.mg_deleted_at is null
order by e.last_at desc limit $2
"""

# --------------------------------------------------------------------------- history, credit rows

HISTORY_ROWS = """
select * from mega_generations
where mg_pass_id = $1 and mg_record_type = $2 and mg_deleted_at is null
  and ($3::timestamptz is null or mg_created_at < $3)
order by mg_created_at desc, mg_id desc limit $4
"""

SOFT_DELETE = """
update mega_generations set mg_deleted_at = now(), mg_updated_at = now()
where mg_pass_id = $1 and mg_deleted_at is null
  and (mg_id = $2 or mg_generation_id = $2 or ($3::text is not null and mg_generation_id = $3))
"""

CREDIT_TXNS_OF_GENERATION = """
select * from mega_generations
where mg_record_type = 'credit_transaction' and (mg_generation_id = $1 or mg_ref_id = $1)
order by mg_created_at, mg_id
"""

# --------------------------------------------------------------------------- ops plane

LIST_ERRORS = """
select * from mega_admin
where mg_record_type in ('error', 'warn') and mg_deleted_at is null
  and ($1::text is null or mg_detail->>'generation_id' = $1)
  and ($2::text is null or mg_detail->>'category' = $2)
order by mg_created_at desc, mg_id desc limit $3
"""

COUNT_CUSTOMERS = "select count(*) from mega_customers"

COUNT_GENERATIONS = "select count(*) from mega_generations where mg_record_type = 'generation'"

COUNTS_BY_DAY = """
select to_char(date_trunc('day', mg_created_at at time zone 'UTC'), 'YYYY-MM-DD') as day,
       mg_record_type as record_type, count(*) as count
from mega_generations
group by 1, 2 order by 1 desc, 2
"""

# Debited, not refunded, not terminal (or no generation row at all), and idle for its mode's
# window ($1 still, $4 video): the debit is older than it, and so is the last change of the
# generation row or of any of its step rows (a run showing progress is never swept).
CHARGED_UNFINISHED = """
with candidates as materialized (
    select d.gid, d.mg_pass_id, d.mg_delta, d.mg_created_at, g.mg_mma_status, g.mg_mma_mode, g.mg_updated_at,
           make_interval(secs => case when g.mg_mma_mode = 'video' then $4::float8 else $1::float8 end) as idle_window
    from (
        select substr(mg_id, length('credit_transaction:debit:generation:') + 1) as gid, mg_pass_id, mg_delta,
               mg_created_at
        from mega_generations
        where mg_record_type = 'credit_transaction'
          and starts_with(mg_id, 'credit_transaction:debit:generation:')
          and mg_created_at < now() - make_interval(secs => least($1::float8, $4::float8))
    ) d
    left join mega_generations g on g.mg_id = 'generation:' || d.gid
    where not exists (
            select 1 from mega_generations r where r.mg_id = 'credit_transaction:refund:generation:' || d.gid)
      and (g.mg_id is null or g.mg_mma_status is null or not (g.mg_mma_status = any($2::text[])))
)
select c.gid as generation_id, c.mg_pass_id as pass_id, -c.mg_delta as debit, c.mg_mma_status as status,
       c.mg_created_at as charged_at, c.mg_mma_mode as mode, p.progress_at
from candidates c
cross join lateral (
    select greatest(c.mg_updated_at, max(s.mg_updated_at)) as progress_at
    from mega_generations s
    where s.mg_generation_id = c.gid and s.mg_record_type = 'mma_step'
) p
where c.mg_created_at < now() - c.idle_window
  and coalesce(p.progress_at, c.mg_created_at) < now() - c.idle_window
order by c.mg_created_at limit $3
"""

# --------------------------------------------------------------------------- config

# An unversioned row (production's `app_config:runtime`) reads as version 0: below every version.
ACTIVE_CONFIG = """
select distinct on (mg_key) mg_key, mg_id, mg_value,
       coalesce(substring(mg_id from '\\.v([0-9]+)$')::int, 0) as version
from mega_admin
where mg_record_type = 'app_config' and mg_deleted_at is null and mg_key is not null
  and coalesce(mg_value->>'enabled', 'true') <> 'false'
  and (cardinality($1::text[]) = 0 or mg_key = any($1::text[]))
order by mg_key, coalesce(substring(mg_id from '\\.v([0-9]+)$')::int, 0) desc
"""

# a digest of every config row of the keys asked ($1; [] = all keys), enabled or not: each row's id and
# `xmin` (the transaction that wrote that version of the row), so an insert, an update (values, enabled,
# deleted) or a delete changes it, and a copy tagged with it is the active map of that moment. It reads
# no values: 0.04 ms of Postgres time against 0.21 for a digest of ACTIVE_CONFIG's rows (regular
# expressions, jsonb, a sort by key and version), on every run's start. A change to a row outside the
# active map changes it too: one more read of the map, no harm.
ACTIVE_CONFIG_TAG = """
select coalesce(md5(string_agg(mg_id || ':' || xmin::text, ',' order by mg_id)), '')
from mega_admin
where mg_record_type = 'app_config' and mg_key is not null
  and (cardinality($1::text[]) = 0 or mg_key = any($1::text[]))
"""

# a run's start read in one round trip: the customer's row (all nulls when there is none), its like window
# ($2 = 0 when not asked: LIMIT 0 reads nothing) and the config's tag (keys $3)
RUN_START = f"""
select c.*,
       (select coalesce(json_agg(json_build_object('mg_generation_id', l.mg_generation_id,
                                                   'mg_output_url', l.mg_output_url,
                                                   'mg_prompt', l.mg_prompt, 'tags', l.tags)), '[]'::json)
        from ({LIKE_WINDOW}) l) as run_likes,
       ({ACTIVE_CONFIG_TAG.replace("$1", "$3")}) as run_config_tag
from (select 1) one left join mega_customers c on c.mg_pass_id = $1
"""

INSERT_CONFIG = """
insert into mega_admin (mg_id, mg_record_type, mg_key, mg_value, mg_meta, mg_source_system)
values ('app_config:' || $1 || '.v' || $2::int, 'app_config', $1, $3, $4, 'mma')
on conflict (mg_id) do nothing
returning mg_id
"""

LOCK_CONFIG_KEY = "select pg_advisory_xact_lock(hashtext('app_config:' || $1))"

MAX_CONFIG_VERSION = """
select coalesce(max(substring(mg_id from '\\.v([0-9]+)$')::int), 0)
from mega_admin where mg_record_type = 'app_config' and mg_key = $1
"""
