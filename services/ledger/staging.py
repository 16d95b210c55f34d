"""Set-based forms of the batchable ledger statements: a batch's rows staged as column arrays.

`executemany` runs a statement once per row, and a backlog projection spent most of its
Postgres time there. Here the rows of one statement go as one array per column (`unnest`)
into ONE `insert .. select`: about a third less time per batch of 500 steps, still one round
trip (docs/bench.md). COPY into a temp staging table measured the same, but needs a table
per connection and a round trip more; arrays need nothing on the connection.

Each form is derived from its statement in `services.ledger.queries`: the same target,
columns and `on conflict` rule, only the `values ($1, ..)` row becomes
`select .. from unnest($1::text[], ..)`. So the idempotency rules live in one place.

One statement may not touch a row twice (Postgres refuses a second `do update` of a row), and
a row's later events must see its earlier ones: the caller sends only the first row of each
key here and runs the rest, in stream order, with the statement itself (`SetForm.key`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson

from services.ledger import queries as q

_PARAM = re.compile(r"\$(\d+)")

Key = Callable[[Sequence[object]], Hashable]


def _first(args: Sequence[object]) -> Hashable:
    """The conflict target of most statements is made of the first parameter alone."""
    key: Hashable = args[0]
    return key


def _values_clause(statement: str) -> tuple[str, str, str]:
    """(head, the expressions of `values (..)`, tail) of a one-row insert."""
    head, found, rest = statement.partition("values (")
    if not found:
        raise ValueError("not a one-row insert: no `values (`")
    depth = 1
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return head, rest[:i], rest[i + 1:]
    raise ValueError("unbalanced `values (`")


@dataclass(frozen=True)
class SetForm:
    """`statement` for many rows at once.

    `types` gives each parameter's Postgres type, in order; None marks a parameter that is the
    same for every row (a module constant such as the status order) and is passed once: only
    those may appear outside the `values` row, since a conflict rule sees no `select` column.
    jsonb goes as text and is cast back, as the pool's jsonb codec sends it.
    `key` is what the statement's conflict target is made of: equal keys, same row.
    """

    statement: str
    types: tuple[str | None, ...]
    key: Key = _first
    sql: str = field(init=False)

    def __post_init__(self) -> None:
        head, values, tail = _values_clause(self.statement)
        used = {int(n) for n in _PARAM.findall(self.statement)}
        if used != set(range(1, len(self.types) + 1)):
            raise ValueError(f"{len(self.types)} types for parameters {sorted(used)}")
        per_row = [n for n, t in enumerate(self.types, 1) if t is not None]
        outside = {int(n) for n in _PARAM.findall(head + tail)} & set(per_row)
        if outside:
            raise ValueError(f"per-row parameters {sorted(outside)} used outside the values row")

        def column(m: re.Match[str]) -> str:
            n = int(m.group(1))
            kind = self.types[n - 1]
            if kind is None:
                return m.group(0)
            return f"s.c{n}::jsonb" if kind == "jsonb" else f"s.c{n}"

        arrays = ", ".join(f"${n}::{'text' if self.types[n - 1] == 'jsonb' else self.types[n - 1]}[]"
                           for n in per_row)
        names = ", ".join(f"c{n}" for n in per_row)
        sql = f"{head}select {_PARAM.sub(column, values).strip()}\nfrom unnest({arrays}) as s({names}){tail}"
        object.__setattr__(self, "sql", sql)

    def params(self, rows: Sequence[Sequence[object]]) -> list[object]:
        """The parameters of `sql` for `rows` (at most one per key): a list per column, constants once."""
        columns = list(zip(*rows, strict=True))
        params: list[object] = []
        for i, kind in enumerate(self.types):
            if kind is None:
                params.append(rows[0][i])
            elif kind == "jsonb":
                params.append(_json_texts(i + 1, columns[i]))
            else:
                params.append(list(columns[i]))
        return params


def _json_texts(n: int, values: Sequence[object]) -> list[str | None]:
    """As the pool's jsonb codec encodes, and refused as it is (DataError: bad data, never retried)."""
    try:
        return [None if v is None else orjson.dumps(v).decode() for v in values]
    except orjson.JSONEncodeError as exc:  # a lone surrogate, an int beyond 64 bits
        raise asyncpg.DataError(f"invalid input for query argument ${n}: {exc}") from exc


def _step_key(args: Sequence[object]) -> Hashable:
    """mg_id is 'mma_step:' || generation || ':' || step number."""
    return f"{args[0]}:{args[2]}"


SET_FORMS: dict[str, SetForm] = {
    form.statement: form
    for form in (
        SetForm(q.ENSURE_CUSTOMER, ("text",)),
        SetForm(q.INSERT_SESSION, ("text", "text", "text", "text", "jsonb", "timestamptz")),
        SetForm(q.UPSERT_ACCEPTED, ("text", "text", "text", "text", "text", "text", "text", "text", "jsonb", "jsonb",
                                    "timestamptz")),
        SetForm(q.MOVE_STATUS, ("text", "text", "text", "text", "timestamptz", None)),
        SetForm(q.ENSURE_GENERATION, ("text", "text", "timestamptz")),
        SetForm(q.UPSERT_STEP, ("text", "text", "int", "text", "text", "text", "int", "jsonb", "text", "timestamptz"),
                key=_step_key),
        SetForm(q.INSERT_FEEDBACK, ("text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
                                    "jsonb", "timestamptz")),
        SetForm(q.INSERT_ADMIN_LOG, ("text", "text", "text", "text", "text", "int", "jsonb", "timestamptz")),
    )
}
