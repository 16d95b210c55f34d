"""`GetCustomerAccess`: what a verified Supabase user may act as, read from mega_customers.

Admin: `mg_admin_allowlist` on the rows of the user id, or (when the user id has no row) on
the rows of the verified email, as the old backend's `requireAdmin` matched. A Shopify
customer id is the user's when a row carrying it (as `mg_shopify_customer_id` or as its
`pass:shopify:` pass id) is linked to the user id or the verified email.
"""

from __future__ import annotations

from libs.schemas import CustomerAccess, GetCustomerAccess
from services.ledger.deps import LedgerDeps

# the column is boolean here; `::text` also reads a production column kept as text or int
ADMIN = """
with by_user as (
    select mg_admin_allowlist::text as flag from mega_customers where mg_user_id::text = $1
), by_email as (
    select mg_admin_allowlist::text as flag from mega_customers
    where $2::text is not null and lower(mg_email) = $2 and not exists (select 1 from by_user)
)
select coalesce(bool_or(flag in ('true', 't', '1')), false)
from (select flag from by_user union all select flag from by_email) flags
"""

SHOPIFY_LINKED = """
select exists (
    select 1 from mega_customers
    where (mg_shopify_customer_id = $3 or mg_pass_id = 'pass:shopify:' || $3)
      and (mg_user_id::text = $1 or ($2::text is not null and lower(mg_email) = $2))
)
"""


async def on_get_customer_access(req: GetCustomerAccess, deps: LedgerDeps) -> CustomerAccess:
    email = req.email.lower() if req.email else None
    async with deps.pool.acquire() as conn:
        is_admin = bool(await conn.fetchval(ADMIN, req.user_id, email))
        linked = False
        if req.shopify_customer_id:
            linked = bool(await conn.fetchval(SHOPIFY_LINKED, req.user_id, email, req.shopify_customer_id))
    return CustomerAccess(is_admin=is_admin, shopify_linked=linked)
