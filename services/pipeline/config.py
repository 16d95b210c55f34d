"""Versioned configuration: prompt contexts and provider presets as data.

Code holds only the safe v1 fallbacks below, seeded into the ledger at start-up.
Every run reads the ACTIVE map (highest enabled version of each key) through the
ledger at its start, so a version inserted between two runs is used by the second
without a restart, and each step records the key/version/id it used. The start read
(`RunStartRead`) sends the tag of the copy this process holds and gets the rows again
only when the active rows no longer hash to it.

Runs that read the same map share one snapshot (`ActiveConfig.to_json` / `from_json` return
the same objects for the same content): thousands of runs in flight hold one copy, not one
each. The snapshots are never changed in place.
"""

from __future__ import annotations

import asyncio
import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from libs.bus import Bus
from libs.errors import ConfigError
from libs.schemas import ConfigEntry, ConfigMap, GetActiveConfig, RunStartFacts

CTX_KEYS = {
    "gpt_scanner": "mma.ctx.gpt_scanner",
    "gpt_reader": "mma.ctx.gpt_reader",
    "gpt_feedback_still": "mma.ctx.gpt_feedback_still",
    "motion_suggestion": "mma.ctx.motion_suggestion",
    "gpt_reader_motion": "mma.ctx.gpt_reader_motion",
    "gpt_feedback_motion": "mma.ctx.gpt_feedback_motion",
    "fingertips_fill": "mma.ctx.fingertips_fill",
    "fingertips_expand": "mma.ctx.fingertips_expand",
    "fingertips_upscale": "mma.ctx.fingertips_upscale",
}
PROVIDER_KEYS = {
    "seedream": "mma.provider.seedream.defaults",
    "kling": "mma.provider.kling.defaults",
}
REGISTRY_KEY = "mma.provider.registry"
ALL_KEYS = [*CTX_KEYS.values(), *PROVIDER_KEYS.values(), REGISTRY_KEY]
META_FIELDS = ("version", "enabled")

_JSON_RULE = "Answer with one JSON object only, no prose."

FALLBACKS: dict[str, dict[str, Any]] = {
    "mma.ctx.gpt_scanner": {
        "system": "You are Mina's eye. Caption the image for a prompt writer (crt: subject, materials, colours, "
                  "light) and write one warm, short line for the customer (userMessage_line). Return tags too. "
                  + _JSON_RULE,
    },
    "mma.ctx.gpt_reader": {
        "system": "You are Mina, an editorial art director. From the scans, brief, style and taste history write "
                  "one precise image prompt (clean_prompt) and one short friendly line (userMessage_final). "
                  "Respect every constraint. " + _JSON_RULE,
    },
    "mma.ctx.gpt_feedback_still": {
        "system": "Rewrite the previous image prompt so it follows the customer's feedback while keeping what "
                  "they liked. Return prompt and userMessage_final. Respect every constraint. " + _JSON_RULE,
    },
    "mma.ctx.motion_suggestion": {
        "system": "Suggest one tasteful camera/subject motion for this still (motion_sugg_prompt). "
                  "Respect every constraint. " + _JSON_RULE,
    },
    "mma.ctx.gpt_reader_motion": {
        "system": "Turn the still caption and the customer's motion brief into one video prompt (motion_prompt). "
                  "Respect every constraint. " + _JSON_RULE,
    },
    "mma.ctx.gpt_feedback_motion": {
        "system": "Rewrite the previous motion prompt following the feedback (motion_prompt). "
                  "Respect every constraint. " + _JSON_RULE,
    },
    "mma.ctx.fingertips_fill": {
        "system": "You turn a customer's words into an inpainting prompt for the area they selected in a photo. "
                  "Describe only what appears inside the selection; keep the photo's composition, light and the "
                  "identity of everything else unless the customer asks otherwise. Answer JSON with prompt and "
                  "negative_prompt. " + _JSON_RULE,
    },
    "mma.ctx.fingertips_expand": {
        "system": "Look at the photo and say, in at most 80 words, how the scene continues beyond its borders so "
                  "an outpainting model can extend it seamlessly: surfaces, light, colours, depth. Answer JSON with "
                  "prompt and negative_prompt. " + _JSON_RULE,
    },
    "mma.ctx.fingertips_upscale": {
        "system": "Describe the photo in at most 60 words for an image refiner: subject, materials, textures, "
                  "colours and light. Plain text, no preamble.",
    },
    "mma.provider.seedream.defaults": {"size": "2K", "aspect_ratio": "1:1", "max_images": 1,
                                        "sequential_image_generation": "disabled"},
    "mma.provider.kling.defaults": {"duration": 5, "aspect_ratio": "16:9", "negative_prompt": ""},
    "mma.provider.registry": {
        "providers": {
            "seedream": {"kind": "image", "step": "seedream_generate", "content_type": "image"},
            "kling": {"kind": "video", "step": "kling_generate", "content_type": "motion"},
        }
    },
}


def seed_entries() -> dict[str, dict[str, Any]]:
    """The v1 rows to seed (the ledger never overwrites an existing version)."""
    return {key: {"version": 1, "enabled": True, **value} for key, value in FALLBACKS.items()}


def fallback_entry(key: str) -> ConfigEntry:
    return ConfigEntry(key=key, version=1, id=f"app_config:{key}.v1",
                       value={"version": 1, "enabled": True, **FALLBACKS[key]})


@dataclass(frozen=True)
class ActiveConfig:
    """The config snapshot of one run (kept in its checkpoint so a resume uses the same)."""

    entries: dict[str, ConfigEntry]

    def entry(self, key: str) -> ConfigEntry:
        found = self.entries.get(key)
        return found if found is not None else fallback_entry(key)

    def ctx(self, name: str) -> tuple[ConfigEntry, str]:
        """(entry, system text) of a context; a template without text is a CONFIG_ERROR."""
        entry = self.entry(CTX_KEYS[name])
        system = entry.value.get("system")
        if not isinstance(system, str) or not system.strip():
            raise ConfigError(f"context {entry.id} has no system text", key=entry.key, version=entry.version,
                              id=entry.id)
        return entry, system

    def provider_defaults(self, provider: str) -> tuple[ConfigEntry, dict[str, Any]]:
        entry = self.entry(PROVIDER_KEYS[provider])
        return entry, {k: copy.deepcopy(v) for k, v in entry.value.items() if k not in META_FIELDS}

    def to_json(self) -> dict[str, Any]:
        """The snapshot as JSON, shared with every run that read the same map (read-only)."""
        return _shared({key: entry.model_dump() for key, entry in self.entries.items()})[0]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActiveConfig:
        return _shared(data)[1]


SHARED_SNAPSHOTS = 16
_snapshots: OrderedDict[bytes, tuple[dict[str, Any], ActiveConfig]] = OrderedDict()


def _shared(data: dict[str, Any]) -> tuple[dict[str, Any], ActiveConfig]:
    """(JSON, config) of a snapshot, the same objects for the same content (the last few kept)."""
    fingerprint = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    found = _snapshots.get(fingerprint)
    if found is None:
        config = ActiveConfig({key: ConfigEntry.model_validate(value) for key, value in data.items()})
        found = _snapshots[fingerprint] = (data, config)
        while len(_snapshots) > SHARED_SNAPSHOTS:
            _snapshots.popitem(last=False)
    else:
        _snapshots.move_to_end(fingerprint)
    return found


KNOWN_TAGS = 4
_known: OrderedDict[str, ActiveConfig] = OrderedDict()  # config read at a run's start, by its ledger tag


def latest_tag() -> str:
    """The tag of the config the last run start read ('' before any): sent with the next, which gets
    the rows again only if the active rows no longer hash to it."""
    return next(reversed(_known), "")


def config_of(facts: RunStartFacts) -> ActiveConfig | None:
    """The run's config from its start read: the rows it carries, or the copy held under its tag (None
    in the rare case that copy was dropped meanwhile: the caller reads the config itself)."""
    if facts.config is not None:
        config = ActiveConfig(dict(facts.config))
        _known[facts.config_tag] = config
        while len(_known) > KNOWN_TAGS:
            _known.popitem(last=False)
        return config
    found = _known.get(facts.config_tag)
    if found is not None:
        _known.move_to_end(facts.config_tag)
    return found


_reading: dict[int, asyncio.Future[ActiveConfig]] = {}  # per bus: the read in flight


async def load_active(bus: Bus) -> ActiveConfig:
    """Highest enabled version of every key, read now (never cached across runs). Runs starting while a
    read is in flight share its answer (one read, not one per run, when a burst of jobs starts)."""
    found = _reading.get(id(bus))
    if found is None:
        found = _reading[id(bus)] = asyncio.ensure_future(_read_active(bus))
        found.add_done_callback(lambda _: _reading.pop(id(bus), None))
    return await asyncio.shield(found)


async def _read_active(bus: Bus) -> ActiveConfig:
    reply = await bus.request(GetActiveConfig(keys=ALL_KEYS), ConfigMap)
    return ActiveConfig(dict(reply.entries))


def deep_merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Later layers win; nested dicts merge key by key (defaults < customer < request)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = deep_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged
