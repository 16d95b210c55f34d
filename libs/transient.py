"""What NATS raises while it (or a responder behind it) is away for a moment.

One list for every place that must tell "try again shortly" from a real failure: the bus's
retries and suppressions, the dead-letter rule (never give a message up for this), the read of a
generation's end, and the gateway's 503 with Retry-After.

On a cluster a stream or consumer is away for a moment while its replicas elect a new leader (the
node that led it died): a publish then meets no responder (nats-py raises NoStreamResponseError),
and API calls answer 503 (ServiceUnavailableError) or time out.
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
    nats.js.errors.NoStreamResponseError,
    TimeoutError,  # asyncio.TimeoutError is this builtin since Python 3.11
)
