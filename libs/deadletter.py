"""The retained dead-letter stream, and what a consumer retries before it gives a message up.

A consumer that gives up on a message (undecodable, refused by Postgres, or still failing after
`max_deliveries`) first copies it to the `MMA_DEAD_LETTERS` stream: the original bytes and
headers, plus why, which consumer, after how many deliveries and where it came from. Only once
JetStream has acknowledged that copy is the original termed, so a crash in between redelivers
instead of losing it. Nothing consumes this stream: its messages wait for an operator (`/ops`,
`python -m services.ledger replay-dead`) and leave only when replayed or discarded, or past
`dead_letter_max_age_days`. A stream at `dead_letter_max_bytes` refuses new dead letters rather
than dropping old ones: the refused message stays unacked in its own stream, redelivered every
ack wait (loudly logged), until room is made.

Subjects are `mma.dlq.<consumer>.<original subject>`, so `mma.dlq.ledger.>` is everything the
ledger could not project and `mma.dlq.*.mma.evt.<generation>.>` everything about one generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext, api
from pydantic import JsonValue

from libs.errors import MmaError, ServiceUnavailableError, is_retryable
from libs.schemas import DEAD_LETTER_SUBJECT, TYPE_HEADER, BusMessage, DeadLettered
from libs.settings import Settings
from libs.transient import NATS_AWAY

log = structlog.get_logger("bus")

DEAD_STREAM = "MMA_DEAD_LETTERS"
DEAD_SUBJECTS = "mma.dlq.>"
PREFIX = "mma.dlq."

H_CONSUMER = "Mma-Dlq-Consumer"
H_REASON = "Mma-Dlq-Reason"
H_DELIVERIES = "Mma-Dlq-Deliveries"
H_SUBJECT = "Mma-Dlq-Subject"
H_STREAM = "Mma-Dlq-Stream"
H_SEQ = "Mma-Dlq-Seq"
H_MSG_ID = "Mma-Dlq-Msg-Id"
H_AT = "Mma-Dlq-At"
REASON_MAX = 1000
NO_MESSAGE = 10057  # JetStream's error code: no message at that sequence

# A dependency that is away: says nothing about the message, so never a reason to give it up.
UNAVAILABLE: tuple[type[BaseException], ...] = (ServiceUnavailableError, *NATS_AWAY, ConnectionError)


# --------------------------------------------------------------------------- what is retried


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)


def should_retry(exc: BaseException, deliveries: int, max_deliver: int, retry_unavailable: bool) -> bool:
    """Nak (True) or give the message up (False).

    A dependency that is away is waited for without bound by a consumer that asks so
    (`retry_unavailable`: the ledger and billing, whose messages must outlive an outage).
    Anything else retryable, including an unknown exception (a bug), is retried only while
    `deliveries < max_deliver`; a non-retryable MmaError (bad data) is given up at once.
    """
    if retry_unavailable and is_unavailable(exc):
        return True
    if not is_retryable(exc):
        return False
    return max_deliver <= 0 or deliveries < max_deliver


def rpc_error(exc: Exception, subject: str) -> MmaError:
    """What a request/reply caller gets for an exception that is not an MmaError.

    Only a dependency that is away is worth a retry; a handler bug answers INTERNAL_ERROR,
    which is not retryable, so a consumer calling it dead-letters instead of looping for ever.
    """
    if is_unavailable(exc):
        return ServiceUnavailableError(f"{type(exc).__name__} while serving {subject}")
    return MmaError(f"{type(exc).__name__} while serving {subject}", code="INTERNAL_ERROR")


def reason_of(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


def code_of(exc: BaseException) -> str:
    """The dead letter's error code: the MmaError's, or POISON_MESSAGE for a bug."""
    return exc.instance_code if isinstance(exc, MmaError) else "POISON_MESSAGE"


# --------------------------------------------------------------------------- the stream


def stream_config(settings: Settings) -> api.StreamConfig:
    return api.StreamConfig(
        name=DEAD_STREAM,
        subjects=[DEAD_SUBJECTS],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.NEW,  # full: refuse the newest, which then stays unacked where it was
        max_age=float(settings.dead_letter_max_age_days * 86400),
        max_bytes=settings.dead_letter_max_bytes,
        duplicate_window=settings.dedupe_window_s,
        num_replicas=settings.stream_replicas,
        allow_direct=True,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the stream, or bring its limits up to date (idempotent, every service at start-up)."""
    config = stream_config(settings)
    try:
        await js.stream_info(DEAD_STREAM)
    except nats.js.errors.NotFoundError:
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await js.add_stream(config)
        return
    await js.update_stream(config)


def dead_subject(consumer: str, original_subject: str) -> str:
    return f"{PREFIX}{consumer}.{original_subject}"


def _header_text(value: str) -> str:
    """Header values are one line of printable text."""
    return " ".join(value.split())[:REASON_MAX]


async def keep(js: JetStreamContext, *, consumer: str, subject: str, data: bytes,
               headers: Mapping[str, str] | None, stream: str, stream_seq: int, deliveries: int,
               reason: str) -> int:
    """Store the message in the dead-letter stream; its sequence there once JetStream has it.

    The copy's msg id is deterministic (consumer, stream, sequence), so the same message
    dead-lettered again after a crash is stored once. Raises when NATS does not take it:
    the caller must then leave the original unacked, to be redelivered.
    """
    kept = {k: v for k, v in (headers or {}).items() if not k.lower().startswith("nats-")}
    kept.update({
        "Nats-Msg-Id": f"dlq:{consumer}:{stream}:{stream_seq}",
        H_CONSUMER: consumer,
        H_REASON: _header_text(reason) or "unknown",
        H_DELIVERIES: str(deliveries),
        H_SUBJECT: subject,
        H_STREAM: stream,
        H_SEQ: str(stream_seq),
        H_AT: datetime.now(UTC).isoformat(),
    })
    original_id = (headers or {}).get("Nats-Msg-Id")
    if original_id:
        kept[H_MSG_ID] = original_id
    ack = await js.publish(dead_subject(consumer, subject), data, headers=kept, timeout=5,
                           stream=DEAD_STREAM)
    return int(ack.seq)


async def give_up(js: JetStreamContext, publish: Callable[[BusMessage], Awaitable[object]], *, consumer: str,
                  subject: str, data: bytes, headers: Mapping[str, str] | None, stream: str, stream_seq: int,
                  deliveries: int, reason: str, code: str) -> int:
    """Keep the message (`keep`), log it, then report it: a DeadLettered event the ledger makes
    an ops-plane row. A refused report (the ledger could not write that row) is kept the same way
    and logged, but not reported again: that would loop. Returns the dead letter's sequence.
    """
    kept = await keep(js, consumer=consumer, subject=subject, data=data, headers=headers, stream=stream,
                      stream_seq=stream_seq, deliveries=deliveries, reason=reason)
    log.error("bus.dead_lettered", durable=consumer, original_subject=subject, stream_seq=stream_seq,
              deliveries=deliveries, reason=reason[:500], code=code, dead_letter_seq=kept)
    if subject == DEAD_LETTER_SUBJECT:
        log.error("bus.dead_letter_record_refused", reason=reason[:500], stream_seq=stream_seq, dead_letter_seq=kept)
        return kept
    await publish(DeadLettered(
        original_subject=subject, original_stream=stream, stream_seq=stream_seq, deliveries=deliveries,
        reason=reason[:2000], data=data.decode("utf-8", errors="replace")[:64_000], consumer=consumer,
        dead_letter_seq=kept, code=code,
    ))
    return kept


# --------------------------------------------------------------------------- reading it


@dataclass(frozen=True)
class DeadLetter:
    """One waiting dead letter: `seq` is its place in the dead-letter stream."""

    seq: int
    consumer: str
    subject: str
    stream: str
    stream_seq: int
    deliveries: int
    reason: str
    at: str
    type_name: str | None
    headers: dict[str, str]
    data: bytes

    @classmethod
    def from_raw(cls, raw: api.RawStreamMsg) -> DeadLetter:
        headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
        dead_subject_ = str(raw.subject or "")
        rest = dead_subject_.removeprefix(PREFIX)
        consumer, _, subject = rest.partition(".")
        return cls(
            seq=int(raw.seq or 0),
            consumer=headers.get(H_CONSUMER, consumer),
            subject=headers.get(H_SUBJECT, subject),
            stream=headers.get(H_STREAM, ""),
            stream_seq=_int(headers.get(H_SEQ)),
            deliveries=_int(headers.get(H_DELIVERIES)),
            reason=headers.get(H_REASON, ""),
            at=headers.get(H_AT, ""),
            type_name=headers.get(TYPE_HEADER),
            headers={k: v for k, v in headers.items() if not k.startswith(("Mma-Dlq-", "Nats-"))},
            data=raw.data or b"",
        )

    @property
    def record_id(self) -> str:
        """The ops-plane row (`mega_admin`) that reports this dead letter."""
        return f"error:dlq:{self.consumer}:{self.stream}:{self.stream_seq}"

    def summary(self, data_max: int = 2000) -> dict[str, JsonValue]:
        text = self.data.decode("utf-8", errors="replace")
        return {
            "seq": self.seq, "consumer": self.consumer, "subject": self.subject, "stream": self.stream,
            "stream_seq": self.stream_seq, "deliveries": self.deliveries, "reason": self.reason, "at": self.at,
            "type": self.type_name, "record_id": self.record_id, "data": text[:data_max],
            "data_truncated": len(text) > data_max,
        }


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def filter_for(consumer: str | None = None, subject: str | None = None) -> str:
    """The dead-letter subject filter of one consumer and/or one original subject pattern."""
    return f"{PREFIX}{consumer or '*'}.{subject or '>'}" if consumer or subject else DEAD_SUBJECTS


async def waiting(js: JetStreamContext, subject_filter: str = DEAD_SUBJECTS,
                  limit: int = 200, after: int = 0) -> list[DeadLetter]:
    """The oldest `limit` waiting dead letters matching `subject_filter` past sequence `after`."""
    found: list[DeadLetter] = []
    seq = after + 1
    while len(found) < limit:
        try:
            raw = await js.get_msg(DEAD_STREAM, seq=seq, subject=subject_filter, next=True)
        except nats.js.errors.NotFoundError:
            break
        found.append(DeadLetter.from_raw(raw))
        seq = int(raw.seq or seq) + 1
    return found


async def counts(js: JetStreamContext) -> dict[str, int]:
    """Waiting dead letters per consumer ({} when there are none, or no stream yet)."""
    try:
        info = await js.stream_info(DEAD_STREAM, subjects_filter=DEAD_SUBJECTS)
    except nats.js.errors.NotFoundError:
        return {}
    per: dict[str, int] = {}
    for subject, n in (info.state.subjects or {}).items():
        consumer = subject.removeprefix(PREFIX).partition(".")[0]
        per[consumer] = per.get(consumer, 0) + int(n)
    return per


async def remove(js: JetStreamContext, seq: int) -> None:
    """A replayed or discarded dead letter leaves the stream (a second removal is a no-op)."""
    try:
        await js.delete_msg(DEAD_STREAM, seq)
    except nats.js.errors.APIError as exc:
        if exc.err_code != NO_MESSAGE:
            raise
