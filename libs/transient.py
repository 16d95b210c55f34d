"""What NATS raises while it (or a responder behind it) is away for a moment.

One list for every place that must tell "try again shortly" from a real failure: the bus's
retries and suppressions, the dead-letter rule (never give a message up for this), the read of a
generation's end, and the gateway's 503 with Retry-After.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors

NATS_AWAY: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,  # asyncio.TimeoutError is this builtin since Python 3.11
)
