"""The Replicate predictions wire protocol, serving the output files itself.

Routes: `create_prediction` (POST /v1/models/<owner>/<name>/predictions and POST
/v1/predictions), `get_prediction` (GET /v1/predictions/<id>), `cancel_prediction`
(POST /v1/predictions/<id>/cancel), `download` (GET /files/<name>).
A prediction succeeds `processing_s` after its creation (`never_finish` keeps it
processing; `fail_predictions` makes every one fail, `failures_left = n` the next n, with
`failure_error` as the model's error text); its output is a PNG, or an MP4 when the input
has a `start_image`, downloaded from this server. The fingertips models answer in their own
kind: an SVG for recraft-vectorize, a PNG with transparency for birefnet (by its version).
"""

from __future__ import annotations

import io
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from services.pipeline.adapters.offline import render_still, render_video
from tests.wire.base import Response, WireServer, json_response

BIREFNET_VERSION = "f74986db0355b58403ed20963af156525e2891ea3c2d499bfbfb2a28cd87c5d7"
SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
       b'<path d="M8 8h48v48H8z" fill="#c0392b"/></svg>\n')


def cutout_png() -> bytes:
    """A transparent PNG with an opaque square in the middle: what a background remover answers."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((200, 40, 40, 255), (16, 16, 48, 48))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class ReplicateServer(WireServer):
    def __init__(self, processing_s: float = 0.2) -> None:
        super().__init__()
        self.processing_s = processing_s
        self.never_finish = False
        self.fail_predictions = False
        self.failures_left = 0
        self.failure_error = "injected model failure"
        self.svg = SVG  # what recraft-vectorize answers
        self.predictions: dict[str, dict[str, Any]] = {}
        self._created: dict[str, float] = {}
        self._files: dict[str, tuple[str, bytes]] = {}
        self._plock = threading.Lock()

    def route(self, method: str, path: str) -> str | None:
        is_create = re.fullmatch(r"/v1/models/[^/]+/[^/]+/predictions", path) or path == "/v1/predictions"
        if method == "POST" and is_create:
            return "create_prediction"
        if method == "GET" and re.fullmatch(r"/v1/predictions/[^/]+", path):
            return "get_prediction"
        if method == "POST" and re.fullmatch(r"/v1/predictions/[^/]+/cancel", path):
            return "cancel_prediction"
        if method == "GET" and path.startswith("/files/"):
            return "download"
        return None

    def _public(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in prediction.items() if not k.startswith("_")}

    def _advance(self, prediction: dict[str, Any]) -> None:
        if prediction["status"] in ("succeeded", "failed", "canceled") or self.never_finish:
            if prediction["status"] == "starting":
                prediction["status"] = "processing"
            return
        if time.monotonic() - self._created[prediction["id"]] < self.processing_s:
            prediction["status"] = "processing"
            return
        if self.fail_predictions or self.failures_left > 0:
            self.failures_left = max(0, self.failures_left - 1)
            prediction.update(status="failed", error=self.failure_error)
            return
        name, content_type, data = self._render(prediction)
        self._files[name] = (content_type, data)
        prediction.update(status="succeeded", output=[f"{self.url}/files/{name}"],
                          completed_at=datetime.now(UTC).isoformat())

    def _render(self, prediction: dict[str, Any]) -> tuple[str, str, bytes]:
        payload = prediction["input"] or {}
        prompt = str(payload.get("prompt", ""))
        if prediction["model"] == "recraft-ai/recraft-vectorize":
            return f"{prediction['id']}.svg", "image/svg+xml", self.svg
        if prediction["version"] == BIREFNET_VERSION:
            return f"{prediction['id']}.png", "image/png", cutout_png()
        if payload.get("start_image"):
            return f"{prediction['id']}.mp4", "video/mp4", render_video(None, prompt, seconds=0.5)
        return f"{prediction['id']}.png", "image/png", render_still(prompt, (256, 256))

    def handle(self, route: str, method: str, path: str, body: Any) -> Response:
        with self._plock:
            if route == "create_prediction":
                pid = uuid.uuid4().hex[:20]
                model = path.split("/v1/models/", 1)[1].rsplit("/predictions", 1)[0] if "/models/" in path else ""
                prediction = {
                    "id": pid, "model": model, "version": (body or {}).get("version", "hash"),
                    "status": "starting", "input": (body or {}).get("input", {}), "output": None, "logs": "",
                    "error": None, "metrics": {}, "created_at": datetime.now(UTC).isoformat(),
                    "urls": {"get": f"{self.url}/v1/predictions/{pid}",
                             "cancel": f"{self.url}/v1/predictions/{pid}/cancel"},
                }
                self.predictions[pid] = prediction
                self._created[pid] = time.monotonic()
                return json_response(201, self._public(prediction))
            if route in ("get_prediction", "cancel_prediction"):
                pid = path.split("/v1/predictions/", 1)[1].split("/", 1)[0]
                found_prediction = self.predictions.get(pid)
                if found_prediction is None:
                    return json_response(404, {"detail": "prediction not found", "status": 404})
                prediction = found_prediction
                if route == "cancel_prediction":
                    if prediction["status"] not in ("succeeded", "failed"):
                        prediction["status"] = "canceled"
                else:
                    self._advance(prediction)
                return json_response(200, self._public(prediction))
            name = path.split("/files/", 1)[1]
            found = self._files.get(name)
            if found is None:
                return json_response(404, {"detail": "file not found"})
            content_type, data = found
            return 200, {"Content-Type": content_type}, data
