"""The first thing a service process does, before it imports anything heavy (`services/*/__main__.py`).

Two things make a restart cheaper without changing what the service does once ready:

- The cyclic garbage collector is off while the service's modules are imported (`run_service`
  freezes what they built, then turns it back on, before connecting to anything). Importing creates
  about a hundred thousand objects that live as long as the process (modules, classes, pydantic
  validators, routes) and about a thousand that are garbage; with the collector on, it runs every
  700 allocations and walks the whole heap each time the survivors grew by a quarter: about 15% of
  the import time, to find that garbage.
- When the logs will be JSON, `rich` is not imported. structlog's package imports its console
  renderer, which imports rich (when installed, as in a development venv: schemathesis brings it)
  for pretty tracebacks that only the console renderer uses; JSON lines format tracebacks with the
  stdlib. The choice follows the environment the way `Settings` does (MMA_LOG_FORMAT, else `auto`:
  JSON off a TTY); a `console` format set only in a `.env` file then prints plain tracebacks.

And one thing that makes it answer sooner: the interpreter's GIL switch interval is 0.5 ms instead of
5 ms (`SWITCH_INTERVAL_S`). Work handed to a thread (an output written to disk, an image read) waits
for the event loop to let go of the GIL, and the loop, busy, gave it up only every 5 ms; a pipeline
step that stores an output waited for that twice (bench: 0.28 ms less per step, 3.49 vs 3.77 ms,
pairwise in four rounds). Processes without such threads never switch, whatever the interval.

Also here, for the same reason (cheap to import: the stdlib only), where a process finds NATS and
Postgres: its settings, or the `infra.json` the embedded stack (`make up`) writes.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libs.settings import Settings


def logs_are_json() -> bool:
    fmt = os.environ.get("MMA_LOG_FORMAT", "auto").strip().lower()
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


SWITCH_INTERVAL_S = 0.0005


def begin() -> None:
    """Collector off until `imported`; no rich when the logs are JSON; a short GIL switch interval (see
    the module docstring)."""
    gc.disable()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if logs_are_json() and "structlog" not in sys.modules:
        sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # `import rich` raises ImportError


def imported() -> None:
    """The modules are in: keep what they built out of the collector's full passes (it lives as long
    as the process), and the collector on again for what comes next (waits for NATS or Postgres
    may be long, and their retries leave cyclic garbage)."""
    gc.freeze()
    gc.enable()


def infra_file(settings: Settings) -> Path:
    return settings.state_dir / "infra.json"


def resolve_urls(settings: Settings) -> tuple[str, str | None]:
    """(NATS URL, database URL) for this process, from settings or the running embedded stack."""
    nats_url, database_url = settings.nats_url, settings.database_url
    if nats_url:
        return nats_url, database_url
    path = infra_file(settings)
    if settings.infra == "embedded" and path.exists():
        data = json.loads(path.read_text())
        return str(data["nats_url"]), database_url or data.get("database_url")
    raise SystemExit(
        f"No NATS URL: set MMA_NATS_URL (infra={settings.infra}) or start the embedded stack with `make up` "
        f"(it writes {path})."
    )
