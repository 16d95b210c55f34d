"""The projection's SQL: the statements that write EVENTS into MEGA, parameterised.

Statements are idempotent by `mg_id`: inserts are `on conflict do nothing` or upserts
that only move a row forward, so a redelivered event leaves the same rows. The credit
statements live in `credit_queries`, the reads in `read_queries`; nothing formats a value
into SQL.
"""

from __future__ import annotations

from libs.schemas import STATUS_ORDER

Rows = list[tuple[str, tuple[object, ...]]]  # (statement, args) pairs an event writes

STATUS_ORDER_VALUES: list[str] = [s.value for s in STATUS_ORDER]
TERMINAL_STATUSES: list[str] = ["suggested", "done", "error", "cancelled"]

# --------------------------------------------------------------------------- customers

ENSURE_CUSTOMER = """
insert into mega_customers (mg_pass_id, mg_credits, mg_source_system, mg_meta)
values ($1, 0, 'mma', '{}'::jsonb)
on conflict (mg_pass_id) do nothing
returning mg_pass_id
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
