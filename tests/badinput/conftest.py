"""Bad-input fixtures: the ledger's pool and deps on the test's database."""

from tests.ledger.conftest import deps, pool

__all__ = ["deps", "pool"]
