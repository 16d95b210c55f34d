"""The offline fingertips editor behind the Predictor contract, and its prompt writer.

It satisfies the same `Predictor` contract as Replicate (create, wait, cancel), keyed by the
tool's Replicate model, so the fingertips step cannot tell the two apart; the pixels are
`offline_pixels.py`, imported at the first edit. The prediction id is a hash of the input, so
a resumed run finds the same one. `OfflineEditWriter` answers the tools' prompt helpers from
the prompt text and the image's colours.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from typing import Any

from PIL import Image, UnidentifiedImageError

from libs.assets import AssetStore
from libs.errors import InvalidInputError, ProviderError
from services.pipeline.adapters.protocols import EditPurpose, PredictionOutput

# Replicate models (owner/name) the offline editor answers; checked against offline_pixels.EDITS by a test
OFFLINE_EDIT_MODELS = frozenset({
    "bria/eraser", "bria/genfill", "bria/expand-image", "men1scus/birefnet",
    "fermatresearch/magic-image-refiner", "philz1337x/crystal-upscaler", "recraft-ai/recraft-vectorize",
})


class OfflineEditor:
    """Fingertips edits rendered in-process, behind the Predictor contract."""

    provider = "offline"

    def __init__(self, store: AssetStore, latency_ms: int = 0) -> None:
        self.store = store
        self.latency_ms = latency_ms

    async def create(self, *, model: str, input: dict[str, Any]) -> str:
        if model.split(":", 1)[0] not in OFFLINE_EDIT_MODELS:
            raise ProviderError(f"no offline edit for {model}", code="EDIT_FAILED")
        digest = hashlib.sha256(json.dumps([model, input], sort_keys=True, default=str).encode()).hexdigest()
        return f"offline-edit-{digest[:20]}"

    async def _files(self, input: dict[str, Any], sources: dict[str, tuple[str, ...]]) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for name, keys in sources.items():
            url = next((str(input[k]) for k in keys if input.get(k)), None)
            if url is None:
                continue
            try:
                files[name] = await self.store.get_bytes(url)
            except InvalidInputError as exc:
                raise ProviderError(f"the {name} could not be read ({exc.instance_code})", code="EDIT_FAILED") from exc
        if "image" not in files:
            raise ProviderError("an edit needs an image", code="EDIT_FAILED")
        return files

    async def wait(
        self, prediction_id: str, *, model: str, input: dict[str, Any], timeout_s: float
    ) -> PredictionOutput:
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        from services.pipeline.adapters.offline_pixels import EDITS  # OpenCV/NumPy at the first edit

        edit, sources = EDITS[model.split(":", 1)[0]]
        files = await self._files(input, sources)
        data, content_type = await asyncio.to_thread(edit, input, files)
        return PredictionOutput(prediction_id=prediction_id, data=data, content_type=content_type)

    async def cancel(self, prediction_id: str) -> None:
        return None


def _looks(image: bytes) -> tuple[str, str]:
    """(colour words, light) of an image, from its pixels: the offline writer's eyes."""
    try:
        picture = Image.open(io.BytesIO(image)).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ProviderError("the image could not be read", code="EDIT_FAILED") from exc
    picture.thumbnail((48, 48))
    quantised = picture.quantize(colors=3)
    palette = quantised.getpalette() or []
    words = []
    for _count, index in sorted(quantised.getcolors() or [], reverse=True):
        base = int(index) * 3 if isinstance(index, int) else 0
        r, g, b = palette[base : base + 3]
        tone = "warm" if r > b + 20 else "cool" if b > r + 20 else "neutral"
        depth = "light" if (r + g + b) / 3 > 170 else "deep" if (r + g + b) / 3 < 85 else "mid"
        word = f"{depth} {tone}"
        if word not in words:
            words.append(word)
    grey = sum(picture.convert("L").getdata()) / (picture.width * picture.height * 255)
    light = "bright, airy" if grey > 0.65 else "dark, moody" if grey < 0.3 else "soft, balanced"
    return ", ".join(words) or "neutral", light


class OfflineEditWriter:
    """Deterministic answers from the prompt text and the image's pixels, shaped as a model would answer."""

    provider = "offline"

    async def ask(self, *, purpose: EditPurpose, model: str, system: str, user: str, image: bytes | None,
                  temperature: float | None, max_tokens: int, detail: str | None = None) -> tuple[str, int]:
        if purpose == "fill":
            prompt = f"{user.strip()}, blended into the surrounding scene with matching light, grain and perspective"
            return json.dumps({"prompt": prompt, "negative_prompt": "seams, visible edges, mismatched lighting"}), 1
        colours, light = _looks(image) if image is not None else ("neutral", "soft, balanced")
        if purpose == "expand":
            prompt = (f"Continue the scene beyond its borders in the same {colours} tones and {light} light, "
                      "same surfaces, perspective and depth of field, nothing new in the margins")
            return json.dumps({"prompt": prompt, "negative_prompt": "text, frames, borders, duplicated subject"}), 1
        return f"A detailed photograph in {colours} tones with {light} light, crisp textures and clean edges", 1
