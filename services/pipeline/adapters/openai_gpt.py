"""OpenAI through the official SDK: JSON-mode chat completions, with images as vision parts.

SDK exceptions are translated here into ProviderError (retryable for 5xx, 429,
timeouts and connection errors); an answer that is not JSON or misses keys is a
GptSchemaError. The SDK's own retries are off: ours are counted and recorded.
"""

from __future__ import annotations

import base64
import json
from typing import TypeVar

import openai
from openai import AsyncOpenAI
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam
from pydantic import BaseModel, ValidationError

from libs.errors import GptSchemaError, ProviderError
from services.pipeline.adapters.protocols import Completion, ScanResult
from services.pipeline.adapters.retry import with_retries
from services.pipeline.answers import ScanAnswer

A = TypeVar("A", bound=BaseModel)


def translate(exc: Exception) -> ProviderError:
    """One ProviderError per SDK failure, carrying the provider's HTTP status when there is one."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("the language model did not answer in time", code="OPENAI_TIMEOUT", is_retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("the language model could not be reached", code="OPENAI_ERROR", is_retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return ProviderError(
            f"the language model answered HTTP {status}", code="OPENAI_ERROR", provider_http_status=status,
            is_retryable=status >= 500 or status == 429,
        )
    return ProviderError(f"the language model failed ({type(exc).__name__})", code="OPENAI_ERROR")


class OpenAIWriter:
    """Completer and Scanner over one AsyncOpenAI client."""

    provider = "openai"

    def __init__(self, *, api_key: str, base_url: str | None, model: str, timeout_s: float, attempts: int) -> None:
        self.model = model
        self.attempts = attempts
        self.client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)

    async def _ask(self, system: str, user: str, image_urls: list[str]) -> tuple[str, CompletionUsage | None]:
        content: list[ChatCompletionContentPartParam] = [{"type": "text", "text": user}]
        content += [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
        try:
            messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": system},
                                                          {"role": "user", "content": content}]
            response = await self.client.chat.completions.create(
                model=self.model, messages=messages, response_format={"type": "json_object"},
            )
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        except ValueError as exc:  # the HTTP body itself was not JSON: a broken answer, worth another try
            raise ProviderError("the language model sent a malformed response", code="OPENAI_ERROR",
                                provider_http_status=200, is_retryable=True) from exc
        if not response.choices:
            raise GptSchemaError("the language model answered nothing", provider_http_status=200)
        return response.choices[0].message.content or "", response.usage

    async def complete(
        self, *, system: str, user: str, schema: type[A], image_urls: list[str] | None = None
    ) -> Completion:
        (text, usage), attempts = await with_retries(lambda: self._ask(system, user, image_urls or []), self.attempts,
                                                     provider=self.provider)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise GptSchemaError("the language model did not answer JSON", provider_http_status=200) from exc
        if not isinstance(data, dict):
            raise GptSchemaError("the language model answered JSON that is not an object", provider_http_status=200)
        try:
            answer = schema.model_validate(data)
        except ValidationError as exc:
            missing = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
            raise GptSchemaError(f"the language model answer misses {', '.join(missing) or 'fields'}",
                                 provider_http_status=200) from exc
        return Completion(
            answer=answer, attempts=attempts,
            input_tokens=getattr(usage, "prompt_tokens", None), output_tokens=getattr(usage, "completion_tokens", None),
        )

    async def scan(self, image: bytes, *, system: str, purpose: str) -> ScanResult:
        data_url = "data:image/png;base64," + base64.b64encode(image).decode()
        user = f"Describe this {purpose.replace('_', ' ')} image. Answer JSON with crt, tags, userMessage_line."
        completion = await self.complete(system=system, user=user, schema=ScanAnswer, image_urls=[data_url])
        answer = completion.answer
        assert isinstance(answer, ScanAnswer)
        return ScanResult(crt=answer.crt, tags=answer.tags, user_line=answer.userMessage_line,
                          attempts=completion.attempts)
