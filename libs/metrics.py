"""Prometheus metrics, defined once; every service exposes them on `/metrics`.

Names are the alert vocabulary of docs/runbook.md: keep them stable.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("mina_http_requests_total", "HTTP requests by route and status", ["route", "method", "status"])
HTTP_LATENCY = Histogram("mina_http_request_seconds", "HTTP request latency", ["route"])
GENERATIONS = Counter("mina_generations_total", "generations reaching a status", ["flow", "status"])
STEP_LATENCY = Histogram(
    "mina_step_seconds", "MMA step duration", ["step_type"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PROVIDER_ERRORS = Counter("mina_provider_errors_total", "provider call failures", ["provider", "code"])
CREDITS = Counter("mina_credit_applies_total", "credit applies by kind and outcome", ["kind", "outcome"])
MESSAGES = Counter("mina_bus_messages_total", "bus messages handled", ["durable", "outcome"])
DEAD_LETTERS = Counter("mina_dead_letters_total", "messages sent to the dead-letter subject", ["stream"])
CONSUMER_LAG = Gauge("mina_consumer_pending", "messages waiting for a durable consumer", ["durable"])
SWEPT = Counter("mina_swept_total", "stuck generations the sweeper stopped, by how", ["outcome"])
TASK_RESTARTS = Counter("mina_task_restarts_total", "background tasks restarted after an unexpected error", ["task"])
