"""A threaded local HTTP server with injectable faults, counted per route.

Start it on a free 127.0.0.1 port in a background thread (`with Server() as s:` or
`s.start()`), then script faults per route name:
- `s.fail(route, 500, 500)`: the next two calls answer those HTTP statuses;
- `s.malformed(route, n)`: the next n calls answer 200 with a body that is not JSON;
- `s.hang(route, n, seconds)`: the next n calls sleep `seconds` before answering
  (beyond the client's timeout);
- `s.latency(route, seconds)`: every call of the route waits that long first.
`s.count(route)` and `s.bodies(route)` tell what the server saw.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from http.server import ThreadingHTTPServer
from typing import Any

from libs.httpreply import Response, handler_for, json_response


class WireServer:
    """Subclasses implement `route(method, path)` -> route name and `handle(route, method, path, body)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._bodies: defaultdict[str, list[Any]] = defaultdict(list)
        self._faults: defaultdict[str, deque[tuple[str, Any]]] = defaultdict(deque)
        self._latency: dict[str, float] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()  # injected latency and hangs end when the server stops
        self._request = threading.local()  # the headers of the request this thread is serving

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def host_port(self) -> str:
        """`127.0.0.1:<port>`: the entry that lets a server-side fetch reach this loopback server
        (`MMA_FETCH_ALLOW_HOSTS`; without it the fetch guard refuses loopback)."""
        return self.url.split("://", 1)[1]

    def start(self) -> WireServer:
        self._stopped.clear()
        server = self

        def dispatch(method: str, path: str, headers: dict[str, str], raw: bytes) -> Response:
            server._request.headers = headers
            return server._dispatch(method, path, raw)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(dispatch))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults and counters

    def fail(self, route: str, *statuses: int) -> None:
        with self._lock:
            self._faults[route].extend(("status", s) for s in statuses)

    def malformed(self, route: str, times: int = 1) -> None:
        with self._lock:
            self._faults[route].extend(("malformed", None) for _ in range(times))

    def hang(self, route: str, times: int = 1, seconds: float = 30.0) -> None:
        with self._lock:
            self._faults[route].extend(("hang", seconds) for _ in range(times))

    def latency(self, route: str, seconds: float) -> None:
        with self._lock:
            self._latency[route] = seconds

    def count(self, route: str) -> int:
        with self._lock:
            return self._counts[route]

    def bodies(self, route: str) -> list[Any]:
        with self._lock:
            return list(self._bodies[route])

    def request_headers(self) -> dict[str, str]:
        """The (lower-cased) headers of the request being handled, for `handle` to read."""
        return dict(getattr(self._request, "headers", {}))

    # ------------------------------------------------------------------ dispatch

    def route(self, method: str, path: str) -> str | None:
        raise NotImplementedError

    def handle(self, route: str, method: str, path: str, body: Any) -> Response:
        raise NotImplementedError

    def _dispatch(self, method: str, path: str, raw: bytes) -> Response:
        name = self.route(method, path.split("?", 1)[0])
        if name is None:
            return json_response(404, {"detail": "not found", "status": 404})
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with self._lock:
            self._counts[name] += 1
            self._bodies[name].append(body)
            fault = self._faults[name].popleft() if self._faults[name] else None
            delay = self._latency.get(name, 0.0)
        if delay:
            self._stopped.wait(delay)
        if fault is not None:
            kind, value = fault
            if kind == "status":
                return json_response(int(value), {"detail": f"injected HTTP {value}", "status": int(value),
                                                  "error": {"message": f"injected HTTP {value}"}})
            if kind == "malformed":
                return 200, {"Content-Type": "application/json"}, b'{"this is": not json'
            if kind == "hang":
                self._stopped.wait(float(value))
        return self.handle(name, method, path.split("?", 1)[0], body)
