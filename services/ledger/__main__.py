"""`python -m services.ledger [serve|migrate [--plan]|reconcile]`: the service, or one of its tools."""

from __future__ import annotations

import argparse
import asyncio
import sys

from libs.logging import configure_logging
from libs.schemas import Reconcile
from libs.service import resolve_urls, run_service
from libs.settings import Settings
from services.ledger.adapters.pg import connect
from services.ledger.app import setup
from services.ledger.migrate import apply_migrations
from services.ledger.plan import format_plan, plan_migrations
from services.ledger.reconcile import format_report, run_checks


def _database_url(settings: Settings) -> str:
    url = settings.database_url
    if not url:
        try:
            url = resolve_urls(settings)[1]
        except SystemExit:
            url = None
    if not url:
        raise SystemExit("No database URL: set MMA_DATABASE_URL or start the embedded stack with `make up`.")
    return url


async def _migrate(settings: Settings, plan_only: bool) -> int:
    if plan_only:
        plan = await plan_migrations(_database_url(settings))
        sys.stdout.write(format_plan(plan) + "\n")
        return 0 if plan.ok else 1
    applied = await apply_migrations(_database_url(settings))
    sys.stdout.write("".join(f"applied {name}\n" for name in applied) or "migrations: up to date\n")
    return 0


async def _reconcile(settings: Settings, public_base: str | None, stuck_after_s: float) -> int:
    conn = await connect(_database_url(settings))
    try:
        report = await run_checks(conn, Reconcile(public_base=public_base, stuck_after_s=stuck_after_s))
    finally:
        await conn.close()
    sys.stdout.write(format_report(report) + "\n")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.ledger")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the ledger service (default)")
    mig = sub.add_parser("migrate", help="apply the MEGA migrations not applied yet")
    mig.add_argument("--plan", action="store_true",
                     help="print what the pending migrations would change, in a rolled-back transaction")
    rec = sub.add_parser("reconcile", help="check the MEGA invariants; exit 1 on any breach")
    rec.add_argument("--public-base", default=None, help="URL prefix every done output must start with")
    rec.add_argument("--stuck-after-s", type=float, default=None, help="age after which a running generation is stuck")
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        run_service("ledger", setup)
        return 0
    settings = Settings()
    configure_logging(settings, "ledger")
    if args.command == "migrate":
        return asyncio.run(_migrate(settings, args.plan))
    stuck = args.stuck_after_s if args.stuck_after_s is not None else settings.stuck_after_s
    return asyncio.run(_reconcile(settings, args.public_base, stuck))


if __name__ == "__main__":
    sys.exit(main())
