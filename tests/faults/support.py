"""The fault driver: N generations through HTTP while something breaks, then the money and outcome checks.

Each chain is one customer (its own pass id, welcome credits): a still create, then, once
it is done, a still tweak or a video animate (alternating). Every request carries an
Idempotency-Key and is retried with the same key on a transport error or a 5xx, so a
gateway that dies mid-request never turns one intent into two generations. Outcomes are
read from MEGA with asyncpg (not through the gateway, which may be down), then
`python -m services.ledger reconcile` must exit 0.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import nats

from libs.bus.connection import server_list
from libs.schemas import Stream
from libs.settings import Settings
from tests.conftest import ROOT
from tests.helpers import wait_for

WELCOME = 50
TERMINAL = ("done", "error", "cancelled")
FLOW_PRICE = {"still_create": 1, "still_tweak": 1, "video_animate": 5}


@dataclass
class Tally:
    """What the suite saw, for the figure line."""

    kinds: list[str] = field(default_factory=list)
    generations: int = 0
    lost: int = 0
    double_charges: int = 0
    missing_refunds: int = 0
    done: int = 0
    errors: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(self.errors_by_kind.items()) if n)
        return (f"faults: {len(set(self.kinds))} kinds, {self.generations} generations "
                f"({self.done} done, {self.errors} error-refunded{f': {by_kind}' if by_kind else ''}), "
                f"{self.lost} lost, {self.double_charges} double charges, {self.missing_refunds} missing refunds")


TALLY = Tally()


@dataclass
class Generation:
    gid: str
    flow: str
    pass_id: str


@dataclass
class Driver:
    """Runs chains of generations against `base_url`; `generations` fills in as the gateway answers."""

    base_url: str
    database_url: str
    kind: str
    chains: int = 6
    request_deadline_s: float = 90.0
    generations: list[Generation] = field(default_factory=list)
    retried_requests: int = 0

    def pass_id(self, chain: int) -> str:
        return f"pass:anon:fault-{self.kind}-{chain}"

    async def post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any], pass_id: str,
                   key: str | None) -> dict[str, Any]:
        """POST until a 200, retrying transport errors and 5xx with the same Idempotency-Key."""
        headers = {"X-Mina-Pass-Id": pass_id}
        if key is not None:
            headers["Idempotency-Key"] = key
        deadline = time.monotonic() + self.request_deadline_s
        delay = 0.1
        while True:
            try:
                r = await client.post(path, json=body, headers=headers)
                if r.status_code == 200:
                    data: dict[str, Any] = r.json()
                    return data
                if r.status_code < 500:
                    raise AssertionError(f"{path} answered {r.status_code}: {r.text}")
                failure = f"{r.status_code} {r.text[:200]}"
            except httpx.TransportError as exc:
                failure = repr(exc)
            self.retried_requests += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never answered 200 in {self.request_deadline_s}s: {failure}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def status_of(self, db: DbReader, gid: str, timeout: float) -> str:
        async def terminal() -> str | None:
            status = (await db.statuses([gid])).get(gid)
            return status if status in TERMINAL else None

        return str(await wait_for(terminal, timeout, interval=0.1, what=f"{self.kind}: generation {gid} terminal"))

    async def chain(self, client: httpx.AsyncClient, db: DbReader, i: int) -> None:
        pass_id = self.pass_id(i)
        first = await self.post(client, "/mma/still/create", {
            "passId": pass_id, "inputs": {"brief": f"bottle {i} on marble", "aspect_ratio": "1:1"}},
            pass_id, f"{self.kind}-{i}-create")
        gid = first["generation_id"]
        self.generations.append(Generation(gid, "still_create", pass_id))
        if await self.status_of(db, gid, 120) != "done":
            return
        if i % 2:
            second = await self.post(client, "/mma/video/animate", {
                "passId": pass_id, "assets": {"input_still_generation_id": gid},
                "inputs": {"motion_user_brief": "slow orbit", "aspect_ratio": "9:16"}},
                pass_id, f"{self.kind}-{i}-animate")
            flow = "video_animate"
        else:
            second = await self.post(client, f"/mma/still/{gid}/tweak", {
                "passId": pass_id, "feedback": {"still_feedback": "warmer light"}}, pass_id, f"{self.kind}-{i}-tweak")
            flow = "still_tweak"
        self.generations.append(Generation(second["generation_id"], flow, pass_id))

    async def run(self) -> None:
        """Every chain at once; returns when every request was answered (not when all are terminal)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=20.0) as client, \
                DbReader(self.database_url) as db:
            await asyncio.gather(*(self.chain(client, db, i) for i in range(self.chains)))

    async def submitted(self, count: int, timeout: float = 60.0) -> None:
        """Wait until at least `count` generations were accepted by the gateway."""
        await wait_for(lambda: len(self.generations) >= count, timeout,
                       what=f"{self.kind}: {count} generations submitted")


class DbReader:
    """asyncpg reads that survive a Postgres restart (reconnect on every failure).

    One connection, shared by concurrent checks: a lock keeps them one at a time (asyncpg
    refuses a second query on a busy connection: "another operation is in progress")."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()

    async def __aenter__(self) -> DbReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async def attempt() -> tuple[list[Any]] | None:
            try:
                async with self.lock:
                    if self.conn is None or self.conn.is_closed():
                        self.conn = await asyncpg.connect(self.url, timeout=2)
                    return (list(await self.conn.fetch(sql, *args)),)
            # InternalClientError: a connection the restarted server dropped mid-query can be left
            # "busy" (seen once with 30 customers polling through it); a fresh one is the cure
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                    TimeoutError):
                if self.conn is not None and not self.conn.is_closed():
                    self.conn.terminate()
                self.conn = None
                return None

        rows = await wait_for(attempt, timeout=60, interval=0.1, what="the database to answer")
        return list(rows[0])

    async def statuses(self, gids: list[str]) -> dict[str, str | None]:
        rows = await self.fetch("select mg_generation_id, mg_mma_status from mega_generations "
                                "where mg_record_type = 'generation' and mg_generation_id = any($1)", gids)
        return {r["mg_generation_id"]: r["mg_mma_status"] for r in rows}

    async def credits(self, pass_ids: list[str]) -> list[Any]:
        return await self.fetch("select mg_pass_id, mg_generation_id, mg_delta from mega_generations "
                                "where mg_record_type = 'credit_transaction' and mg_pass_id = any($1)", pass_ids)


def reconcile(settings: Settings) -> str:
    """`python -m services.ledger reconcile` on the test's database; its report (asserted clean)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update(MMA_DATABASE_URL=settings.database_url or "", MMA_INFRA="external", MMA_LOG_FORMAT="json",
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "services.ledger", "reconcile", "--public-base",
                           settings.assets_base_url], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, f"reconcile found breaches:\n{done.stdout}\n{done.stderr[-2000:]}"
    return done.stdout


async def settle_and_check(driver: Driver, settings: Settings, *, timeout: float = 150.0,
                           extra: list[Generation] | None = None, expect_errors: bool | None = None) -> Counter[str]:
    """Wait until every generation is terminal (errors refunded), then check money and reconcile.

    `extra` are generations made outside the driver (retries without a key). Returns the
    outcome counts. Adds the run to the suite's figure line.
    """
    gens = driver.generations + list(extra or [])
    gids = [g.gid for g in gens]
    pass_ids = sorted({g.pass_id for g in gens})
    assert len(set(gids)) == len(gids), "one generation id answered to two intents"
    async with DbReader(driver.database_url) as db:
        statuses: dict[str, str | None] = {}
        debits: Counter[str] = Counter()
        refunds: Counter[str] = Counter()
        pending: list[str] = []

        async def settled() -> bool:
            nonlocal statuses, debits, refunds, pending
            statuses = await db.statuses(gids)
            rows = await db.credits(pass_ids)
            debits = Counter(r["mg_generation_id"] for r in rows if r["mg_delta"] < 0)
            refunds = Counter(r["mg_generation_id"] for r in rows if r["mg_delta"] > 0
                              and r["mg_generation_id"] is not None)
            pending = [g for g in gids if statuses.get(g) not in TERMINAL
                       or (statuses.get(g) != "done" and refunds[g] < debits[g])]
            return not pending

        try:
            await wait_for(settled, timeout, interval=0.2, what=f"{driver.kind}: every generation settled")
        except AssertionError:
            TALLY.lost += len(pending)
            raise AssertionError(f"{driver.kind}: {len(pending)} generations not settled after {timeout}s: "
                                 f"{[(g, statuses.get(g), debits[g], refunds[g]) for g in pending[:10]]}") from None
        generation_rows = await db.fetch("select mg_generation_id from mega_generations "
                                         "where mg_record_type = 'generation' and mg_pass_id = any($1)", pass_ids)
        balances = {r["mg_pass_id"]: r["mg_credits"] for r in await db.fetch(
            "select mg_pass_id, mg_credits from mega_customers where mg_pass_id = any($1)", pass_ids)}

    outcomes: Counter[str] = Counter()
    double = [g for g in gids if debits[g] > 1 or refunds[g] > 1]
    missing = [g for g in gids if statuses[g] != "done" and refunds[g] != 1]
    TALLY.kinds.append(driver.kind)
    TALLY.generations += len(gids)
    TALLY.double_charges += len(double)
    TALLY.missing_refunds += len(missing)
    for g in gens:
        status = statuses[g.gid]
        outcomes[status or "none"] += 1
        assert debits[g.gid] == 1, f"{driver.kind}: {g.gid} ({status}) has {debits[g.gid]} debits"
        assert status in ("done", "error"), f"{driver.kind}: {g.gid} ended {status}"
        assert refunds[g.gid] == (0 if status == "done" else 1), f"{driver.kind}: {g.gid} {status} refunds"
    TALLY.done += outcomes["done"]
    TALLY.errors += outcomes["error"]
    TALLY.errors_by_kind[driver.kind] += outcomes["error"]
    # nothing was made twice: every generation row of these customers is one the client asked for
    assert sorted(r["mg_generation_id"] for r in generation_rows) == sorted(gids)
    # the ledger matches exactly: welcome credits minus what was delivered
    for pass_id in pass_ids:
        spent = sum(FLOW_PRICE[g.flow] for g in gens if g.pass_id == pass_id and statuses[g.gid] == "done")
        assert balances[pass_id] == WELCOME - spent, (pass_id, balances[pass_id], spent)
    if expect_errors is True:
        assert outcomes["error"] > 0, f"{driver.kind}: the fault caused no failure at all"
    if expect_errors is False:
        assert outcomes["error"] == 0, f"{driver.kind}: {outcomes}"
    await ledger_caught_up(settings)
    report = reconcile(settings)
    assert "MEGA reconcile: OK" in report
    return outcomes


async def ledger_caught_up(settings: Settings, timeout: float = 90.0) -> None:
    """Wait until the ledger's EVENTS consumer has nothing pending or unacked: every event is in MEGA.

    After a crash a batch the dead process had fetched (or one a fetch lost in the client)
    comes back only after the ack wait, so the rows of an early step can land after the
    generation's `done`; reconcile is run on the finished projection, not on one in flight."""
    nc = await nats.connect(server_list(settings.nats_url or ""))
    try:
        js = nc.jetstream()

        async def idle() -> bool:
            info = await js.consumer_info(Stream.EVENTS.value, "ledger")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_for(idle, timeout, interval=0.2, what="the ledger to project every event")
    finally:
        await nc.close()
