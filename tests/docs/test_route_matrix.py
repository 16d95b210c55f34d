"""docs/routes.md cannot drift from the gateway: one row per served route, with its handler.

The app is built with `create_app` and stand-in deps: building it only stores them on
`app.state` (no bus, store or server is touched until a request arrives), so no NATS,
Postgres or uvicorn is needed to read the route table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import fastapi.routing
import pytest
from fastapi import FastAPI

from libs.settings import Settings
from services.gateway.app import create_app
from services.gateway.deps import GatewayDeps
from services.gateway.ratelimit import RateLimiter

MATRIX = Path(__file__).resolve().parents[2] / "docs" / "routes.md"
FASTAPI_OWN = {"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
SKIPPED_METHODS = {"HEAD", "OPTIONS"}
ROUTES_MODULE = "services.gateway.routes."
ROW = re.compile(r"^\|\s*`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`\s*\|")
PARAM = re.compile(r"\{[^}]*\}")

Key = tuple[str, str]


def normalize(path: str) -> str:
    """Path parameters compared by position, not name: `/a/{id}` and `/a/{generation_id}` are one route."""
    return PARAM.sub("{}", path)


def build_app() -> FastAPI:
    none = cast(Any, None)
    deps = GatewayDeps.build(Settings(), bus=none, store=none, idempotency=none, limiter=RateLimiter(0))
    return create_app(deps)


def flat_routes(app: FastAPI) -> Iterable[Any]:
    """Every route with its full path: FastAPI >= 0.16x keeps included routers lazy."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(contexts(app.routes)) if contexts is not None else list(app.routes)


def served_routes() -> dict[Key, str]:
    """(method, normalized path) -> `module:function` of the handler, for every route the app serves."""
    served: dict[Key, str] = {}
    for route in flat_routes(build_app()):
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None) or set()
        if not path or path in FASTAPI_OWN:
            continue
        endpoint = getattr(route, "endpoint", None)
        module = getattr(endpoint, "__module__", "") or ""
        handler = f"{module.removeprefix(ROUTES_MODULE)}:{getattr(endpoint, '__name__', '?')}"
        for method in set(methods) - SKIPPED_METHODS:
            served[(method, normalize(path))] = handler
    return served


def cells(line: str) -> list[str]:
    """The cells of a markdown table row (escaped `\\|` stays inside its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def documented_rows() -> dict[Key, list[list[str]]]:
    rows: dict[Key, list[list[str]]] = {}
    for line in MATRIX.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.setdefault((match.group(1), normalize(match.group(2))), []).append(cells(line))
    return rows


@pytest.fixture(scope="module")
def served() -> dict[Key, str]:
    routes = served_routes()
    assert len(routes) > 50, f"the gateway app should serve its whole surface, got {sorted(routes)}"
    return routes


@pytest.fixture(scope="module")
def documented() -> dict[Key, list[list[str]]]:
    assert MATRIX.is_file(), f"{MATRIX} is missing"
    return documented_rows()


def test_every_served_route_has_a_row(served: dict[Key, str], documented: dict[Key, list[list[str]]]) -> None:
    missing = sorted(f"{m} {p}" for m, p in served if (m, p) not in documented)
    assert not missing, f"routes served by the gateway but missing from docs/routes.md: {missing}"


def test_every_row_is_a_served_route_once(served: dict[Key, str],
                                          documented: dict[Key, list[list[str]]]) -> None:
    stale = sorted(f"{m} {p}" for m, p in documented if (m, p) not in served)
    assert not stale, f"docs/routes.md documents routes the gateway no longer serves: {stale}"
    repeated = sorted(f"{m} {p}" for (m, p), rows in documented.items() if len(rows) > 1)
    assert not repeated, f"routes with more than one row in docs/routes.md: {repeated}"


def test_rows_name_the_handler_and_fill_every_column(served: dict[Key, str],
                                                     documented: dict[Key, list[list[str]]]) -> None:
    """Columns: route, era, handler, bus path, MEGA, response; the handler is the real endpoint."""
    wrong = []
    for key, rows in documented.items():
        row = rows[0]
        assert len(row) == 6 and all(row), f"{key}: a row needs six non-empty cells, got {row}"
        assert row[1] in {"E2", "N", "E2+N", "MMA", "ours"}, f"{key}: unknown era {row[1]!r}"
        if key in served and row[2] != f"`{served[key]}`" and not row[2].startswith(f"`{served[key]}` "):
            wrong.append(f"{key[0]} {key[1]}: documented {row[2]}, served by {served[key]}")
    assert not wrong, "handler column out of date:\n" + "\n".join(wrong)
