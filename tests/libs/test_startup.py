"""A service process's first steps (libs/startup.py): collector off while importing, no rich under JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, sys
from libs import startup
startup.begin()
import structlog
before = {"gc": gc.isenabled(), "rich": sys.modules.get("rich") is not None}
startup.imported()
print(json.dumps({**before, "gc_after": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def _probe(log_format: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update({"MMA_LOG_FORMAT": log_format, "PYTHONPATH": str(ROOT)})
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_json_logs_start_without_rich_and_the_collector_returns_after_the_imports() -> None:
    seen = _probe("json")
    assert seen["gc"] is False and seen["rich"] is False
    assert seen["gc_after"] is True and isinstance(seen["frozen"], int) and seen["frozen"] > 10_000


def test_console_logs_keep_rich_tracebacks() -> None:
    pytest.importorskip("rich")
    assert _probe("console")["rich"] is True
