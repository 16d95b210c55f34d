"""The SQL of the money path and of a customer's row: credit applies, the welcome, audit rows.

Parameterised like every ledger statement; the balance rules themselves are database
functions (supabase/migrations), so each apply is one round trip.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- customers

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
