"""`python -m services.ledger [serve|migrate [--plan]|reconcile|replay-dead]`: the service, or one of its tools."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from libs import startup

if TYPE_CHECKING:  # the rest is imported by the command that needs it: `migrate` starts in a fraction
    from libs.bus import Bus
    from libs.settings import Settings


def _database_url(settings: Settings) -> str:
    url = settings.database_url
    if not url:
        try:
            url = startup.resolve_urls(settings)[1]
        except SystemExit:
            url = None
    if not url:
        raise SystemExit("No database URL: set MMA_DATABASE_URL or start the embedded stack with `make up`.")
    return url


async def _migrate(settings: Settings, plan_only: bool) -> int:
    from services.ledger.migrate import apply_migrations
    from services.ledger.plan import format_plan, plan_migrations

    if plan_only:
        plan = await plan_migrations(_database_url(settings))
        sys.stdout.write(format_plan(plan) + "\n")
        return 0 if plan.ok else 1
    applied = await apply_migrations(_database_url(settings))
    sys.stdout.write("".join(f"applied {name}\n" for name in applied) or "migrations: up to date\n")
    return 0


@asynccontextmanager
async def _bus(settings: Settings, required: bool) -> AsyncIterator[Bus | None]:
    """The bus, to read the dead-letter stream; None (reconcile without it) when there is no NATS."""
    from libs.bus import Bus
    from libs.errors import ServiceUnavailableError

    try:
        url = startup.resolve_urls(settings)[0]
        bus = await Bus.connect(settings, url, name="ledger-tool", connect_timeout_s=10.0)
    except (SystemExit, ServiceUnavailableError):
        if required:
            raise
        sys.stdout.write("dead letters: not counted (no NATS reachable: set MMA_NATS_URL)\n")
        yield None
        return
    try:
        await bus.ensure_streams()
        yield bus
    finally:
        await bus.close()


async def _reconcile(settings: Settings, public_base: str | None, stuck_after_s: float) -> int:
    from libs.schemas import Reconcile
    from services.ledger.adapters.pg import connect
    from services.ledger.deadletters import with_dead_letters
    from services.ledger.reconcile import format_report, run_checks

    conn = await connect(_database_url(settings))
    try:
        report = await run_checks(conn, Reconcile(public_base=public_base, stuck_after_s=stuck_after_s))
    finally:
        await conn.close()
    async with _bus(settings, required=False) as bus:
        report = await with_dead_letters(report, bus.js if bus else None)
    sys.stdout.write(format_report(report) + "\n")
    return 0 if report.ok else 1


async def _replay_dead(settings: Settings, args: argparse.Namespace) -> int:
    from services.ledger.adapters.pg import create_pool
    from services.ledger.deadletters import LEDGER
    from services.ledger.deps import LedgerDeps
    from services.ledger.replay import replay_dead

    pool = await create_pool(_database_url(settings), 1, 2)
    try:
        async with _bus(settings, required=True) as bus:
            assert bus is not None
            report = await replay_dead(bus.js, LedgerDeps(pool=pool, settings=settings, js=bus.js),
                                       subject=args.subject, consumer=args.consumer or LEDGER, dry_run=args.dry_run,
                                       discard=args.discard)
    finally:
        await pool.close()
    sys.stdout.write("\n".join(report.lines()) + "\n")
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
    dead = sub.add_parser("replay-dead", help="re-project the events waiting in the dead-letter stream")
    dead.add_argument("--dry-run", action="store_true", help="list what waits; change nothing")
    dead.add_argument("--subject", default=None, help="only dead letters of this original subject (NATS wildcards)")
    dead.add_argument("--consumer", default=None, help="whose dead letters (default: ledger)")
    dead.add_argument("--discard", action="store_true", help="remove them without projecting (after a manual fix)")
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        from libs.service import run_service
        from services.ledger.app import setup

        run_service("ledger", setup)
        return 0
    from libs.logging import configure_logging
    from libs.settings import Settings

    settings = Settings()
    configure_logging(settings, "ledger")
    startup.imported()
    if args.command == "migrate":
        return asyncio.run(_migrate(settings, args.plan))
    if args.command == "replay-dead":
        return asyncio.run(_replay_dead(settings, args))
    stuck = args.stuck_after_s if args.stuck_after_s is not None else settings.stuck_after_s
    return asyncio.run(_reconcile(settings, args.public_base, stuck))


if __name__ == "__main__":
    startup.begin()  # before anything heavy is imported: see libs/startup.py
    sys.exit(main())
