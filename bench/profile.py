"""py-spy (sampling, from outside the process) on a running service, summarised as top frames.

`--nonblocking` never pauses the target, so the profile barely disturbs it. py-spy
drops idle frames (the event loop waiting in epoll), so the samples are busy time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

OUR_CODE = ("services/", "libs/")
IDLE = ("EpollSelector.select", "Condition.wait", "Event.wait", "_worker (concurrent/futures/thread.py)")
ROOTS = ("main (", "run_service (", "serve (libs/service.py)", "run (asyncio/", "<module>")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    name: str
    samples: int = 0
    self_top: list[tuple[str, float]] = field(default_factory=list)
    ours_top: list[tuple[str, float]] = field(default_factory=list)
    libs_top: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""

    def render(self, top: int = 8) -> str:
        if self.error:
            return f"  {self.name}: no profile ({self.error})"
        lines = [f"  {self.name}: {self.samples} busy samples"]
        lines.append("    self time by package: " + "; ".join(f"{f} {p:.0f}%" for f, p in self.libs_top))
        lines.append("    self time: " + "; ".join(f"{f} {p:.0f}%" for f, p in self.self_top[:top]))
        lines.append("    inclusive (our code): " + "; ".join(f"{f} {p:.0f}%" for f, p in self.ours_top[:top]))
        return "\n".join(lines)


def _short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def _package(frame: str) -> str:
    """`asyncio`, `pydantic`, `nats`, `services/gateway` ... of a shortened frame."""
    path = frame.rsplit("(", 1)[-1].rstrip(")")
    parts = path.split("/")
    if parts[0] in ("services", "libs") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else path.removesuffix(".py")


def summarise(name: str, raw: str) -> Profile:
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    libs: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f.strip()]
        if not frames or any(frames[-1].startswith(i) or i in frames[-1] for i in IDLE):
            continue
        total += count
        own[frames[-1]] += count
        libs[_package(frames[-1])] += count
        for frame in set(frames):
            if any(f"({p}" in frame for p in OUR_CODE) and not frame.startswith(ROOTS):
                ours[frame] += count
    profile = Profile(name, total)
    if total:
        profile.self_top = [(f, 100 * c / total) for f, c in own.most_common(12)]
        profile.ours_top = [(f, 100 * c / total) for f, c in ours.most_common(12)]
        profile.libs_top = [(f, 100 * c / total) for f, c in libs.most_common(8)]
    return profile


class Recorder:
    """Start py-spy on `pid` for `duration_s`; `result()` waits and summarises."""

    def __init__(self, name: str, pid: int, duration_s: float, out_dir: Path, rate: int = 97) -> None:
        self.name = name
        self.error = ""
        self.proc: subprocess.Popen[bytes] | None = None
        binary = py_spy()
        self.path = Path(tempfile.mkstemp(prefix=f"pyspy-{name}-", suffix=".txt", dir=out_dir)[1])
        if binary is None:
            self.error = "py-spy not installed"
            return
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--duration", str(int(duration_s)), "--rate", str(rate),
             "--format", "raw", "--nonblocking", "--output", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def result(self) -> Profile:
        if self.proc is None:
            return Profile(self.name, error=self.error)
        try:
            _, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return Profile(self.name, error="py-spy timed out")
        raw = self.path.read_text(errors="replace") if self.path.exists() else ""
        if not raw.strip():
            return Profile(self.name, error=(err or b"").decode(errors="replace").strip()[-200:] or "no samples")
        return summarise(self.name, raw)
