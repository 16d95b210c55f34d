"""The OpenAI chat-completions wire protocol (`POST /v1/chat/completions`), route `chat_completion`.

By default every answer is one JSON object carrying the keys of every pipeline task
(caption, prompts, lines), with the user text quoted in the prompts so tests can see
what was fed. `answer_with(content, ...)` queues raw message contents (e.g. prose).
Point the SDK at `server.base_url` (it ends in /v1).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

from tests.wire.base import Response, WireServer, json_response


def _user_text(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def default_answer(body: dict[str, Any]) -> str:
    text = " ".join(_user_text(body).split())[:600]
    return json.dumps({
        "crt": "wire caption: a glass bottle on a stone plinth, warm side light",
        "tags": ["material.glass", "light.warm"],
        "userMessage_line": "Lovely glass and warm light here.",
        "clean_prompt": f"wire prompt from: {text}",
        "userMessage_final": "Composing it now.",
        "prompt": f"wire feedback prompt from: {text}",
        "motion_prompt": f"wire motion from: {text}",
        "motion_sugg_prompt": f"wire suggestion from: {text}",
    })


class OpenAIServer(WireServer):
    def __init__(self) -> None:
        super().__init__()
        self._answers: deque[str] = deque()
        self._answer_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def answer_with(self, *contents: str) -> None:
        """The next completions answer these message contents (then the default again)."""
        with self._answer_lock:
            self._answers.extend(contents)

    def user_texts(self) -> list[str]:
        return [_user_text(b) for b in self.bodies("chat_completion") if isinstance(b, dict)]

    def route(self, method: str, path: str) -> str | None:
        if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
            return "chat_completion"
        return None

    def handle(self, route: str, method: str, path: str, body: Any) -> Response:
        with self._answer_lock:
            content = self._answers.popleft() if self._answers else default_answer(body or {})
        return json_response(200, {
            "id": f"chatcmpl-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (body or {}).get("model", "gpt-4o-mini"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59},
        })
