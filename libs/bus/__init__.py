"""The bus: NATS connection, JetStream streams, typed publish, consumers, request/reply, replay.

Services import from here (`from libs.bus import Bus, decode`); the work is split by job:

    client.py      Bus, the facade a service holds
    connection.py  connect (retried while NATS comes up), connection callbacks
    streams.py     stream configs, ensure_streams, streams_present
    codec.py       encode/decode between models and bytes plus headers
    publish.py     publish, publish_all, publish_raw
    rpc.py         request and serve (request/reply, both sides)
    consumer.py    Consumer, a running durable consumer
    pull.py        durable pull consumers: fetch loops, one by one or in batches
    delivery.py    ack / nak with delay / dead letter of what a consumer fetched
    follow.py      follow and last_seq on EVENTS, live broadcasts (listen)
    retry.py       stamina retries after a plain first try
    chaos.py       the fault suite's duplicating publisher
    types.py       handler shapes and type variables
"""

from libs.bus.client import Bus
from libs.bus.codec import decode
from libs.bus.consumer import Consumer
from libs.bus.rpc import RESPONDER_POLL_S
from libs.bus.types import BatchHandler, ExhaustedHook, Handler, RpcHandler

__all__ = [
    "RESPONDER_POLL_S",
    "BatchHandler",
    "Bus",
    "Consumer",
    "ExhaustedHook",
    "Handler",
    "RpcHandler",
    "decode",
]
