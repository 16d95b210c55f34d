"""The six fingertips tools: labels, Replicate models, prices and input schemas (UPSTREAM.md section 1.4).

One catalogue for every service: the gateway validates a request against it and lists it,
billing prices an edit from it (never from the request), the pipeline shapes the provider
input from it. Validation keeps only schema keys (an unknown key is dropped silently), fills
defaults, and names the required keys still missing, as the original backend did.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from libs.settings import Settings

FieldType = Literal["uri", "string", "number", "integer", "boolean", "array"]


@dataclass(frozen=True)
class InputField:
    type: FieldType
    required: bool = False
    default: Any = None
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "required": self.required, "description": self.description}
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Tool:
    key: str
    label: str
    description: str
    replicate_model: str  # "owner/name" (the latest version) or "owner/name:<version>" (pinned)
    cost: float  # credits (matcha) per edit, drawn from the fingertips pool
    usd_estimate: float  # what one run costs us at the provider (upstream's cost calculator)
    schema: dict[str, InputField]
    variant: str | None = None
    default_negative: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> schema key, copied when the key is missing

    @property
    def generations_per_credit(self) -> int:
        return math.floor(1 / self.cost + 1e-9) if self.cost > 0 else 0  # 1 // 0.1 is 9.0 in floats

    @property
    def uri_keys(self) -> list[str]:
        return [k for k, f in self.schema.items() if f.type == "uri"]

    def to_json(self) -> dict[str, Any]:
        """The entry of GET /fingertips/models."""
        return {"key": self.key, "label": self.label, "description": self.description,
                "replicateModel": self.replicate_model, "costPerGeneration": self.cost,
                "generationsPerMatcha": self.generations_per_credit,
                "inputSchema": {k: f.to_json() for k, f in self.schema.items()}}


def _image(description: str = "Source image URL (JPEG, PNG, WEBP)") -> InputField:
    return InputField("uri", required=True, description=description)


UPSCALE_NEGATIVE = ("teeth, tooth, open mouth, longbody, lowres, bad anatomy, bad hands, missing fingers, "
                    "extra digit, fewer digits, cropped, worst quality, low quality, mutant")

_TOOLS: dict[str, Tool] = {
    "eraser": Tool(
        "eraser", "Object Eraser", "Remove unwanted objects from an image and fill the place naturally",
        "bria/eraser", 0.5, 0.015,
        {"image": _image(), "mask_image": InputField("uri", True, description="White = erase, black = keep")},
        aliases={"image_url": "image", "mask_url": "mask_image"},
    ),
    "flux_fill": Tool(
        "flux_fill", "AI Fill (Inpaint)", "Generate what the prompt describes inside the masked area",
        "bria/genfill", 0.5, 0.015,
        {"image": _image(), "prompt": InputField("string", True, description="What to generate in the mask"),
         "mask": InputField("uri", description="White = fill, black = keep"),
         "negative_prompt": InputField("string"), "seed": InputField("integer"),
         "sync": InputField("boolean", default=True), "content_moderation": InputField("boolean", default=False),
         "mask_type": InputField("string", default="manual"),
         "preserve_alpha": InputField("boolean", default=True)},
    ),
    "expand": Tool(
        "expand", "Image Expand", "Extend an image beyond its borders to a new aspect ratio",
        "bria/expand-image", 0.5, 0.015,
        {"image": _image(), "image_url": InputField("uri", description="Alias of image"),
         "aspect_ratio": InputField("string", description="e.g. 16:9, 9:16, 1:1, 4:5"),
         "canvas_size": InputField("array", description="[width, height] of the output"),
         "original_image_size": InputField("array"), "original_image_location": InputField("array"),
         "prompt": InputField("string"), "negative_prompt": InputField("string"), "seed": InputField("integer"),
         "preserve_alpha": InputField("boolean", default=True), "sync": InputField("boolean", default=True),
         "content_moderation": InputField("boolean")},
        aliases={"image_url": "image"},
    ),
    "remove_bg": Tool(
        "remove_bg", "Remove Background", "Cut the subject out of its background",
        "men1scus/birefnet:f74986db0355b58403ed20963af156525e2891ea3c2d499bfbfb2a28cd87c5d7", 0.2, 0.0075,
        {"image": _image()},
    ),
    "vectorize": Tool(
        "vectorize", "Vectorize", "Trace a raster image into a scalable SVG",
        "recraft-ai/recraft-vectorize", 0.5, 0.01,
        {"image": _image()},
    ),
}

_MAGIC_UPSCALE = Tool(
    "upscale", "Magic Image Refiner", "Refine and enhance an image, described first by a vision model",
    "fermatresearch/magic-image-refiner:507ddf6f977a7e30e46c0daefd30de7d563c72322f9e4cf7cbac52ef0f667b13", 0.1, 0.03,
    {"image": _image(), "prompt": InputField("string"), "negative_prompt": InputField("string"),
     "hdr": InputField("number", default=0), "creativity": InputField("number", default=0.25),
     "resemblance": InputField("number", default=0.75), "guidance_scale": InputField("number", default=7),
     "steps": InputField("integer", default=20), "seed": InputField("integer"),
     "resolution": InputField("string", default="original"), "scheduler": InputField("string", default="DDIM")},
    variant="magic", default_negative=UPSCALE_NEGATIVE,
)
_CRYSTAL_UPSCALE = Tool(
    "upscale", "Crystal Upscaler", "Upscale an image with AI-enhanced detail",
    "philz1337x/crystal-upscaler:5d917b1444c89ed91055f3052d27e1ad433a1218599a36544510e1dfa9ac26c8", 0.1, 0.03,
    {"image": _image(), "scale_factor": InputField("number", default=2)},
    variant="crystal",
)

ORDER = ("eraser", "flux_fill", "expand", "remove_bg", "upscale", "vectorize")

# A known ratio becomes a "4K" canvas (and aspect_ratio is dropped); an unknown one is passed through.
CANVAS_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (3840, 3840), "16:9": (3840, 2160), "9:16": (2160, 3840), "4:3": (3840, 2880), "3:4": (2880, 3840),
    "3:2": (3840, 2560), "2:3": (2560, 3840), "4:5": (3072, 3840), "5:4": (3840, 3072),
}


def catalogue(settings: Settings) -> dict[str, Tool]:
    """The six tools in the upstream order; the upscaler is the crystal one when the setting says so."""
    tools = {**_TOOLS, "upscale": _CRYSTAL_UPSCALE if settings.fingertips_upscale_crystal else _MAGIC_UPSCALE}
    return {key: tools[key] for key in ORDER}


def tool_for(settings: Settings, model_key: str | None) -> Tool | None:
    return catalogue(settings).get(model_key or "")


@dataclass(frozen=True)
class Checked:
    """A request's inputs as the tool's schema keeps them, and the required keys still missing."""

    inputs: dict[str, Any]
    missing: list[str]


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def check_inputs(tool: Tool, raw: dict[str, Any]) -> Checked:
    """Aliases copied, unknown keys dropped, defaults filled, missing required keys named (in schema order)."""
    given = dict(raw)
    for alias, key in tool.aliases.items():
        if not _present(given.get(key)) and _present(given.get(alias)):
            given[key] = given[alias]
    inputs: dict[str, Any] = {}
    for key, spec in tool.schema.items():
        if _present(given.get(key)):
            inputs[key] = given[key]
        elif spec.default is not None:
            inputs[key] = copy.deepcopy(spec.default)
    missing = [key for key, spec in tool.schema.items() if spec.required and not _present(inputs.get(key))]
    return Checked(inputs=inputs, missing=missing)
