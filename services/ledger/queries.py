"""Every SQL statement of the ledger, parameterised; nothing here formats a value into SQL.

Statements are idempotent by `mg_id`: inserts are `on conflict do nothing` or upserts
that only move a row forward, so a redelivered event leaves the same rows.
"""

from __future__ import annotations

from typing import Any

from libs.schemas import STATUS_ORDER

Conn = Any  # an asyncpg Connection or pool connection proxy (asyncpg ships no types)

STATUS_ORDER_VALUES: list[str] = [s.value for s in STATUS_ORDER]
TERMINAL_STATUSES: list[str] = ["suggested", "done", "error", "cancelled"]

# --------------------------------------------------------------------------- customers

ENSURE_CUSTOMER = """
insert into mega_customers (mg_pass_id, mg_credits, mg_source_system, mg_meta)
values ($1, 0, 'mma', '{}'::jsonb)
on conflict (mg_pass_id) do nothing
returning mg_pass_id
"""

# A Shopify id or user id another customer already holds is not copied: production has partial
# unique indexes on both, and a refused ensure would fail the customer's request.
FILL_CUSTOMER = """
update mega_customers set
    mg_shopify_customer_id = coalesce(
        case when not exists (select 1 from mega_customers o
                              where o.mg_shopify_customer_id = $2 and o.mg_pass_id <> $1) then $2 end,
        mg_shopify_customer_id),
    mg_user_id = coalesce(
        case when not exists (select 1 from mega_customers o
                              where o.mg_user_id = $3::uuid and o.mg_pass_id <> $1) then $3::uuid end,
        mg_user_id),
    mg_email = coalesce($4, mg_email),
    mg_last_active = now(),
    mg_updated_at = now()
where mg_pass_id = $1
returning *
"""

GET_CUSTOMER = "select * from mega_customers where mg_pass_id = $1"

LIST_CUSTOMERS = """
select * from mega_customers where mg_deleted_at is null
order by mg_created_at desc, mg_pass_id limit $1
"""

# --------------------------------------------------------------------------- credits

# The credit apply is a database function (supabase/migrations/20261124000000_mega_credit_apply.sql):
# one round trip, the customer row locked, the ref row at most once, never below zero.
CREDIT_APPLY = """
select outcome, credits, expires_at
from mega_credit_apply($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

# Welcome credits once, only for a pass id this product created (no opening-balance row):
# `mega_welcome` in supabase/migrations/20261126000100_opening_balance.sql.
WELCOME = "select outcome, credits, expires_at from mega_welcome($1, $2)"

CREDIT_APPLY_MANY = """
select idx, outcome, credits, expires_at
from mega_credit_apply_many($1::text[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[],
                            $7::text[], $8::text[], $9::timestamptz[])
"""

# The actor of an audit row is the admin token or the ops console, never a customer: it is named in
# mg_meta (and the caller's mg_detail), never in mg_actor_pass_id (a foreign key to customers).
INSERT_AUDIT = """
insert into mega_admin (mg_id, mg_record_type, mg_action, mg_detail, mg_meta, mg_source_system)
values ('admin_audit:' || $1, 'admin_audit', $3, $4, jsonb_build_object('actor', $2::text), 'mma')
on conflict (mg_id) do nothing
"""

AUDIT_DETAIL = """
select mg_detail from mega_admin where mg_id = 'admin_audit:' || $1
"""

CREDIT_TXNS_OF_GENERATION = """
select * from mega_generations
where mg_record_type = 'credit_transaction' and (mg_generation_id = $1 or mg_ref_id = $1)
order by mg_created_at, mg_id
"""

# --------------------------------------------------------------------------- generations

UPSERT_ACCEPTED = """
insert into mega_generations (
    mg_id, mg_record_type, mg_pass_id, mg_session_id, mg_generation_id, mg_parent_id, mg_platform,
    mg_type, mg_content_type, mg_mma_mode, mg_mma_status, mg_status, mg_mma_vars, mg_meta,
    mg_source_system, mg_created_at
) values (
    'generation:' || $1, 'generation', $2, $3, $1, $4, $5, $6, $7, $8, 'queued', 'pending', $9, $10, 'mma', $11
)
on conflict (mg_id) do update set
    mg_pass_id = excluded.mg_pass_id,
    mg_session_id = coalesce(mega_generations.mg_session_id, excluded.mg_session_id),
    mg_parent_id = coalesce(mega_generations.mg_parent_id, excluded.mg_parent_id),
    mg_platform = coalesce(mega_generations.mg_platform, excluded.mg_platform),
    mg_type = coalesce(mega_generations.mg_type, excluded.mg_type),
    mg_content_type = coalesce(mega_generations.mg_content_type, excluded.mg_content_type),
    mg_mma_mode = coalesce(mega_generations.mg_mma_mode, excluded.mg_mma_mode),
    mg_mma_status = coalesce(mega_generations.mg_mma_status, excluded.mg_mma_status),
    mg_status = coalesce(mega_generations.mg_status, excluded.mg_status),
    mg_mma_vars = excluded.mg_mma_vars || mega_generations.mg_mma_vars,
    mg_meta = coalesce(mega_generations.mg_meta, '{}'::jsonb) || excluded.mg_meta,
    mg_created_at = least(mega_generations.mg_created_at, excluded.mg_created_at),
    mg_updated_at = now()
"""

# A row to hang later events on when they arrive before `accepted` (any order after redeliveries).
ENSURE_GENERATION = """
insert into mega_generations (
    mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_mma_status, mg_status, mg_source_system,
    mg_created_at
) values ('generation:' || $1, 'generation', $2, $1, 'queued', 'pending', 'mma', $3)
on conflict (mg_id) do nothing
"""

LOCK_GENERATION = "select * from mega_generations where mg_id = 'generation:' || $1 for update"

# Forward only: the new status must rank later than the stored one (libs.schemas.status_can_move).
MOVE_STATUS = """
insert into mega_generations (
    mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_mma_status, mg_status, mg_source_system,
    mg_created_at
) values ('generation:' || $1, 'generation', $2, $1, $3, $4, 'mma', $5)
on conflict (mg_id) do update set
    mg_mma_status = excluded.mg_mma_status,
    mg_status = excluded.mg_status,
    mg_updated_at = now()
where mega_generations.mg_mma_status is null
   or array_position($6::text[], excluded.mg_mma_status)
      > array_position($6::text[], mega_generations.mg_mma_status)
"""

SET_VARS = """
update mega_generations set mg_mma_vars = $2, mg_updated_at = now()
where mg_id = 'generation:' || $1
"""

FINISH_GENERATION = """
update mega_generations set
    mg_mma_status = $2,
    mg_status = $3,
    mg_mma_vars = $4,
    mg_output_url = coalesce($5, mg_output_url),
    mg_output_key = coalesce($6, mg_output_key),
    mg_prompt = coalesce($7, mg_prompt),
    mg_provider = coalesce($8, mg_provider),
    mg_model = coalesce($9, mg_model),
    mg_image_url = coalesce($10, mg_image_url),
    mg_video_url = coalesce($11, mg_video_url),
    mg_content_type = coalesce($12, mg_content_type),
    mg_error = null,
    mg_updated_at = now()
where mg_id = 'generation:' || $1
"""

FAIL_GENERATION = """
update mega_generations set
    mg_mma_status = $2,
    mg_status = $3,
    mg_mma_vars = $4,
    mg_error = coalesce($5, mg_error),
    mg_updated_at = now()
where mg_id = 'generation:' || $1
"""

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

# --------------------------------------------------------------------------- steps

# Step status ranks pending < failed < succeeded: `started` never overwrites a finished step.
UPSERT_STEP = """
insert into mega_generations (
    mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_parent_id, mg_step_no, mg_step_type,
    mg_provider, mg_model, mg_latency_ms, mg_payload, mg_status, mg_source_system, mg_created_at
) values (
    'mma_step:' || $1 || ':' || $3::int, 'mma_step', $2, $1, 'generation:' || $1, $3, $4,
    $5, $6, $7, $8, $9, 'mma', $10
)
on conflict (mg_id) do update set
    mg_step_type = excluded.mg_step_type,
    mg_provider = coalesce(excluded.mg_provider, mega_generations.mg_provider),
    mg_model = coalesce(excluded.mg_model, mega_generations.mg_model),
    mg_latency_ms = coalesce(excluded.mg_latency_ms, mega_generations.mg_latency_ms),
    mg_payload = excluded.mg_payload,
    mg_status = excluded.mg_status,
    mg_updated_at = now()
where array_position(array['pending', 'failed', 'succeeded'], excluded.mg_status)
      >= coalesce(array_position(array['pending', 'failed', 'succeeded'], mega_generations.mg_status), 0)
"""

# The run plane of a failure: the failing step carries the error even if its own record was lost.
SET_STEP_ERROR = """
update mega_generations set
    mg_payload = jsonb_set(coalesce(mg_payload, '{}'::jsonb), '{error}', $3),
    mg_status = case when mg_status = 'succeeded' then mg_status else 'failed' end,
    mg_updated_at = now()
where mg_id = 'mma_step:' || $1 || ':' || $2::int
  and (mg_payload is null or mg_payload->'error' is null or mg_payload->'error' = 'null'::jsonb)
"""

SET_STEP_ERROR_BY_TYPE = """
update mega_generations set
    mg_payload = jsonb_set(coalesce(mg_payload, '{}'::jsonb), '{error}', $3),
    mg_status = 'failed',
    mg_updated_at = now()
where mg_id = (
    select mg_id from mega_generations
    where mg_generation_id = $1 and mg_record_type = 'mma_step' and mg_step_type = $2
    order by mg_step_no desc limit 1
)
  and mg_status <> 'succeeded'
  and (mg_payload is null or mg_payload->'error' is null or mg_payload->'error' = 'null'::jsonb)
"""

LIST_STEPS = """
select * from mega_generations
where mg_generation_id = $1 and mg_record_type = 'mma_step'
order by mg_step_no
"""

# --------------------------------------------------------------------------- customer events

INSERT_EVENT = """
insert into mega_generations (
    mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_meta, mg_source_system, mg_created_at
) values ('mma_event:' || $1, 'mma_event', $2, $3, $4, 'mma', $5)
on conflict (mg_id) do nothing
returning mg_id
"""

# Adds hard blocks (no duplicates) and tag weight deltas to the taste snapshot, in one statement.
APPLY_PREFERENCE_DELTA = """
update mega_customers c set
    mg_mma_preferences = coalesce(c.mg_mma_preferences, '{}'::jsonb) || jsonb_build_object(
        'hard_blocks', (
            select coalesce(jsonb_agg(b order by b), '[]'::jsonb) from (
                select jsonb_array_elements_text(
                    case when jsonb_typeof(c.mg_mma_preferences->'hard_blocks') = 'array'
                         then c.mg_mma_preferences->'hard_blocks' else '[]'::jsonb end) as b
                union
                select unnest($2::text[])
            ) blocks
        ),
        'tag_weights', (
            select coalesce(jsonb_object_agg(k, w), '{}'::jsonb) from (
                select k, sum(w) as w from (
                    select key as k, value::float8 as w
                    from jsonb_each_text(
                        case when jsonb_typeof(c.mg_mma_preferences->'tag_weights') = 'object'
                             then c.mg_mma_preferences->'tag_weights' else '{}'::jsonb end)
                    union all
                    select key, value::float8 from jsonb_each_text($3::jsonb)
                ) parts group by k
            ) weights
        ),
        'updated_at', to_jsonb(now()),
        'source', 'mma'
    ),
    mg_mma_preferences_updated_at = now(),
    mg_updated_at = now()
where c.mg_pass_id = $1
"""

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

# --------------------------------------------------------------------------- sessions, feedback

INSERT_SESSION = """
insert into mega_generations (
    mg_id, mg_record_type, mg_pass_id, mg_session_id, mg_platform, mg_title, mg_meta, mg_source_system,
    mg_created_at
) values ('session:' || $1, 'session', $2, $1, $3, $4, $5, 'mma', $6)
on conflict (mg_id) do nothing
"""

INSERT_FEEDBACK = """
insert into mega_generations (
    mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_session_id, mg_result_type, mg_platform,
    mg_prompt, mg_comment, mg_image_url, mg_video_url, mg_meta, mg_source_system, mg_created_at
) values ('feedback:' || $1, 'feedback', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'mma', $12)
on conflict (mg_id) do nothing
"""

# --------------------------------------------------------------------------- history

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

# --------------------------------------------------------------------------- ops plane

# mg_actor_pass_id only when the actor is a stored customer (a foreign key in production); the
# handler always names the actor in mg_detail too.
INSERT_ADMIN_LOG = """
insert into mega_admin (
    mg_id, mg_record_type, mg_actor_pass_id, mg_route, mg_method, mg_status, mg_detail, mg_source_system,
    mg_created_at
) values ($1, $2, (select c.mg_pass_id from mega_customers c where c.mg_pass_id = $3), $4, $5, $6, $7, 'mma', $8)
on conflict (mg_id) do nothing
"""

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
