"""A stdlib HTTP handler around one function, for the small local servers (the offline shop, the tests'
wire servers): read the request body, hand method, path, lower-cased headers and raw body to that
function, write its `(status, headers, body)` answer with a Content-Length. A client gone before the
answer is written is not an error."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

Response = tuple[int, dict[str, str], bytes]
Dispatch = Callable[[str, str, dict[str, str], bytes], Response]  # method, path, lower-cased headers, raw body


def json_response(status: int, data: Any) -> Response:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def handler_for(dispatch: Dispatch) -> type[BaseHTTPRequestHandler]:
    """A quiet HTTP/1.1 handler class answering GET and POST with `dispatch`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, body = dispatch(method, self.path, headers, raw)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
