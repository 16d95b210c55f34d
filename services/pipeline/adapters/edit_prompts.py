"""The prompt helpers of the fingertips tools through OpenAI: one short question, raw text back.

The fill rewrite (gpt-4o-mini), the expand scene description (gpt-4o-mini with vision) and the
upscale caption (gpt-4o with vision) each ask their own model with their own temperature and
token budget, so they do not go through the JSON `Completer`. The answer comes back as text:
the step decides what a good answer is and falls back when it is not (the original backend's
documented fallbacks). OpenAI's SDK errors become ProviderError here, retried when transient.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import openai
from openai import AsyncOpenAI
from PIL import Image, UnidentifiedImageError

from libs.errors import GptSchemaError, ProviderError
from services.pipeline.adapters.openai_gpt import translate
from services.pipeline.adapters.protocols import EditPurpose as Purpose
from services.pipeline.adapters.retry import with_retries

VISION_MAX_SIDE = 1024  # the image a vision question carries is at most this large


def vision_data_url(image: bytes) -> str:
    """The image as a PNG data URL, at most VISION_MAX_SIDE on its longer side."""
    try:
        opened = Image.open(io.BytesIO(image))
        opened.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ProviderError("the image could not be read", code="EDIT_FAILED") from exc
    picture = opened.convert("RGBA" if opened.mode in ("RGBA", "LA", "P") else "RGB")
    picture.thumbnail((VISION_MAX_SIDE, VISION_MAX_SIDE))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


class OpenAIEditWriter:
    provider = "openai"

    def __init__(self, *, api_key: str, base_url: str | None, timeout_s: float, attempts: int) -> None:
        self.attempts = attempts
        self.client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)

    async def _once(self, model: str, system: str, user: str, image_url: str | None, temperature: float | None,
                    max_tokens: int, detail: str | None) -> str:
        content: list[dict[str, Any]] = [{"type": "text", "text": user}]
        if image_url:
            part: dict[str, Any] = {"url": image_url}
            if detail:
                part["detail"] = detail
            content.append({"type": "image_url", "image_url": part})
        messages: Any = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        extra: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        try:
            response = await self.client.chat.completions.create(model=model, messages=messages,
                                                                 max_tokens=max_tokens, **extra)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        except ValueError as exc:
            raise ProviderError("the language model sent a malformed response", code="OPENAI_ERROR",
                                provider_http_status=200, is_retryable=True) from exc
        if not response.choices:
            raise GptSchemaError("the language model answered nothing", provider_http_status=200)
        return response.choices[0].message.content or ""

    async def ask(self, *, purpose: Purpose, model: str, system: str, user: str, image: bytes | None,
                  temperature: float | None, max_tokens: int, detail: str | None = None) -> tuple[str, int]:
        image_url = vision_data_url(image) if image is not None else None
        return await with_retries(lambda: self._once(model, system, user, image_url, temperature, max_tokens, detail),
                                  self.attempts, provider=self.provider)
