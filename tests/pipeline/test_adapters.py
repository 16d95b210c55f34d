"""The real SDK adapters against the wire servers (no bus): error translation, retries, offline eyes."""

from __future__ import annotations

import pytest

from libs.errors import GptSchemaError, ProviderError
from services.pipeline.adapters.offline import OfflineScanner, analyse_image
from services.pipeline.adapters.openai_gpt import OpenAIWriter
from services.pipeline.adapters.replicate_predict import ReplicatePredictor
from services.pipeline.answers import ReaderAnswer
from services.pipeline.taste import constraints_for, with_constraints
from tests.pipeline.conftest import png_bytes


def writer(server, timeout_s: float = 5.0, attempts: int = 2) -> OpenAIWriter:
    return OpenAIWriter(api_key="sk-test", base_url=server.base_url, model="gpt-4o-mini", timeout_s=timeout_s,
                        attempts=attempts)


async def test_openai_missing_keys_is_a_schema_error(openai_server):
    """Valid JSON without clean_prompt is GPT_SCHEMA_ERROR naming the missing key."""
    openai_server.answer_with('{"userMessage_final": "hi"}')
    with pytest.raises(GptSchemaError) as caught:
        await writer(openai_server).complete(system="s", user="u", schema=ReaderAnswer)
    assert "clean_prompt" in caught.value.message


async def test_openai_malformed_body_is_a_provider_error(openai_server):
    """A 200 whose body is not JSON never escapes the adapter as a raw SDK/JSON exception."""
    openai_server.malformed("chat_completion", 2)
    with pytest.raises(ProviderError):
        await writer(openai_server).complete(system="s", user="u", schema=ReaderAnswer)


async def test_openai_hang_beyond_timeout_is_retried_then_times_out(openai_server):
    """Every call hangs past the client timeout: OPENAI_TIMEOUT after all attempts, recorded."""
    openai_server.hang("chat_completion", times=2, seconds=2.0)
    with pytest.raises(ProviderError) as caught:
        await writer(openai_server, timeout_s=0.3, attempts=2).complete(system="s", user="u", schema=ReaderAnswer)
    assert caught.value.instance_code == "OPENAI_TIMEOUT"
    assert caught.value.details["retry"] == {"attempt": 2, "max": 2}
    assert openai_server.count("chat_completion") == 2


async def test_replicate_4xx_is_not_retryable(replicate_server):
    replicate_server.fail("create_prediction", 422)
    predictor = ReplicatePredictor(api_token="r8", base_url=replicate_server.url, timeout_s=5, poll_interval_s=0.05)
    with pytest.raises(ProviderError) as caught:
        await predictor.create(model="bytedance/seedream-4", input={"prompt": "x"})
    assert caught.value.provider_http_status == 422 and not caught.value.is_retryable


async def test_replicate_prediction_round_trip(replicate_server):
    """create -> wait gives a URL served by the wire server; cancel is counted."""
    predictor = ReplicatePredictor(api_token="r8", base_url=replicate_server.url, timeout_s=5, poll_interval_s=0.05)
    prediction_id = await predictor.create(model="bytedance/seedream-4", input={"prompt": "red"})
    out = await predictor.wait(prediction_id, model="bytedance/seedream-4", input={}, timeout_s=5)
    assert out.url and out.url.startswith(replicate_server.url + "/files/")
    await predictor.cancel(prediction_id)
    assert replicate_server.count("cancel_prediction") == 1


async def test_offline_scanner_reads_real_pixels():
    result = await OfflineScanner().scan(png_bytes((20, 40, 200), (120, 60)), system="", purpose="product")
    facts = analyse_image(png_bytes((20, 40, 200), (120, 60)))
    assert facts["orientation"] == "landscape" and facts["colours"][0] == "blue"
    assert "blue" in result.crt and "120x60" in result.crt


def test_hard_blocks_map_to_constraints_idempotently():
    constraints = constraints_for(["motion.light_flicker", "style.glitter_dust"])
    assert "no flicker, no strobing, no flare, stable lighting" in constraints
    assert "avoid glitter dust" in constraints
    once = with_constraints("a candle", constraints)
    assert with_constraints(once, constraints) == once


async def test_every_failed_provider_attempt_is_counted_once(openai_server):
    """mina_provider_errors_total counts each failed attempt at the retry edge, retried ones included."""
    from prometheus_client import REGISTRY

    labels = {"provider": "openai", "code": "OPENAI_ERROR"}
    before = REGISTRY.get_sample_value("mina_provider_errors_total", labels) or 0.0
    openai_server.malformed("chat_completion", 2)
    with pytest.raises(ProviderError) as caught:
        await writer(openai_server, attempts=2).complete(system="s", user="u", schema=ReaderAnswer)
    assert caught.value.details["retry"] == {"attempt": 2, "max": 2}
    assert REGISTRY.get_sample_value("mina_provider_errors_total", labels) == before + 2

    from services.pipeline.adapters.retry import count_provider_error

    count_provider_error("openai", caught.value)  # the runner's fallback: already counted, no double count
    assert REGISTRY.get_sample_value("mina_provider_errors_total", labels) == before + 2
