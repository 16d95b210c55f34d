"""The three provider contracts the pipeline depends on: scan, complete, predict.

Steps only see these Protocols, so the offline provider, OpenAI and Replicate are
interchangeable and a test can point the real SDK adapters at a local wire server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel

A = TypeVar("A", bound=BaseModel)

CONTEXT_KEY = "mina_context"
"""A prediction input key only in-process providers read: which reference image is the product,
the logo, an inspiration or the previous still, and the customer's words (brief, style, feedback,
motion brief). The generate step records it apart; remote providers never receive it."""


def for_remote(input: dict[str, Any]) -> dict[str, Any]:
    """A prediction's input as a remote provider gets it (without CONTEXT_KEY)."""
    return {key: value for key, value in input.items() if key != CONTEXT_KEY}


@dataclass(frozen=True)
class ScanResult:
    """What a scan learnt from one image: a caption (crt), tags and a friendly user line."""

    crt: str
    tags: list[str]
    user_line: str
    attempts: int = 1
    details: Mapping[str, object] = field(default_factory=dict)  # what else the provider saw, recorded as is


@dataclass(frozen=True)
class Completion:
    """A validated JSON answer of a prompt model, with what it cost."""

    answer: BaseModel
    attempts: int = 1
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class PredictionOutput:
    """A finished prediction: either a URL to download or the bytes themselves."""

    prediction_id: str
    url: str | None = None
    data: bytes | None = None
    content_type: str | None = None
    attempts: int = 1


class Scanner(Protocol):
    provider: str
    model: str

    async def scan(self, image: bytes, *, system: str, purpose: str) -> ScanResult:
        """Describe one image; `purpose` (product, logo, output_still, ...) shapes the line."""
        ...


class Completer(Protocol):
    provider: str
    model: str

    async def complete(
        self, *, system: str, user: str, schema: type[A], image_urls: list[str] | None = None
    ) -> Completion:
        """Answer JSON matching `schema`; anything else raises GptSchemaError."""
        ...


class Predictor(Protocol):
    provider: str

    async def create(self, *, model: str, input: dict[str, Any]) -> str:
        """Start a prediction and return its id (the caller records it before waiting)."""
        ...

    async def wait(
        self, prediction_id: str, *, model: str, input: dict[str, Any], timeout_s: float
    ) -> PredictionOutput:
        """Wait until the prediction ends; a timeout or failure raises ProviderError."""
        ...

    async def cancel(self, prediction_id: str) -> None: ...


EditPurpose = Literal["fill", "expand", "upscale"]


class EditWriter(Protocol):
    """The prompt helpers of the fingertips tools: one question to a named model, raw text back."""

    provider: str

    async def ask(self, *, purpose: EditPurpose, model: str, system: str, user: str, image: bytes | None,
                  temperature: float | None, max_tokens: int, detail: str | None = None) -> tuple[str, int]:
        """(answer text, attempts used); a failed call raises ProviderError."""
        ...


@dataclass(frozen=True)
class Providers:
    scanner: Scanner
    completer: Completer
    predictor: Predictor
    editor: Predictor  # the fingertips tools (Replicate, or the offline editor)
    edit_writer: EditWriter  # the fingertips prompt helpers
