"""docs/routes.md "Who may call what" cannot drift from the edge's `ROUTE_ACCESS`, nor that from the app."""

from __future__ import annotations

import re

from services.gateway.auth.access import ROUTE_ACCESS, Access
from tests.docs.test_route_matrix import MATRIX, normalize, served_routes

SECTION = "## Who may call what"
ROUTE = re.compile(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`\s]*)`")


def documented_access() -> dict[str, str]:
    text = MATRIX.read_text(encoding="utf-8")
    assert SECTION in text, f"{MATRIX} has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] not in {a.value for a in Access}:
            continue
        for route in ROUTE.findall(cells[2]):
            assert route not in found, f"{route} is listed twice in '{SECTION}'"
            found[route] = cells[0]
    return found


def test_the_doc_states_the_access_of_every_route_as_the_code_does() -> None:
    documented = documented_access()
    code = {route: access.value for route, access in ROUTE_ACCESS.items()}
    assert documented == code, {
        "in code, not in the doc": sorted(set(code) - set(documented)),
        "in the doc, not in code": sorted(set(documented) - set(code)),
        "different": sorted(r for r in set(code) & set(documented) if code[r] != documented[r]),
    }


def test_every_served_route_has_an_access_rule() -> None:
    """A new route cannot fall through to the default: it gets a deliberate entry in `ROUTE_ACCESS`."""
    table = {(r.split(" ", 1)[0], normalize(r.split(" ", 1)[1])) for r in ROUTE_ACCESS}
    missing = sorted(f"{m} {p}" for m, p in served_routes() if (m, p) not in table)
    assert not missing, f"routes with no entry in services/gateway/auth/access.py ROUTE_ACCESS: {missing}"
    stale = sorted(f"{m} {p}" for m, p in table if (m, p) not in served_routes())
    assert not stale, f"ROUTE_ACCESS names routes the gateway no longer serves: {stale}"
