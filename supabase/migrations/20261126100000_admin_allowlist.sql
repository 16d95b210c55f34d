-- Admins upstream are customers with mega_customers.mg_admin_allowlist (UPSTREAM.md section 3.3),
-- matched by mg_user_id, then by mg_email. Guarded: the production table already has the column.
alter table mega_customers add column if not exists mg_admin_allowlist boolean not null default false;
