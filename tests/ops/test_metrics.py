"""The issue-9 metrics move when work happens: one generation through billing and the pipeline,
then each service's /metrics shows the step histograms, the generation and credit counters."""

from __future__ import annotations

import httpx

from libs.bus import Bus
from libs.devinfra import free_port
from libs.schemas import CustomerView, EnsureWelcome, GenerationDone, GenerationRejected
from tests.billing.support import command, new_pass, next_event
from tests.conftest import Services
from tests.helpers import wait_for

STILL_STEPS = ("seedream_generate",)


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        return response.text


def has(text: str, *lines: str) -> bool:
    present = set(text.splitlines())
    return all(line in present for line in lines)


async def test_one_generation_moves_the_pipeline_and_billing_metrics(services: Services, bus: Bus) -> None:
    await services.start("ledger")
    billing_port, pipeline_port = free_port(), free_port()
    await services.start("billing", health_port=billing_port, welcome_credits=5)
    await services.start("pipeline", health_port=pipeline_port)

    rich = new_pass()
    assert (await bus.request(EnsureWelcome(pass_id=rich), CustomerView)).credits == 5
    cmd = command(rich)
    await bus.publish(cmd)
    done = await next_event(bus, cmd.generation_id, {"done", "failed"}, timeout=60)
    assert isinstance(done, GenerationDone), done

    broke = command(rich, "video_animate")  # 4 credits left, an animate costs 5: refused, never charged
    await bus.publish(broke)
    assert isinstance(await next_event(bus, broke.generation_id, {"rejected", "accepted"}), GenerationRejected)

    pipeline_lines = (
        'mina_step_seconds_count{step_type="seedream_generate"} 1.0',
        'mina_generations_total{flow="still_create",status="done"} 1.0',
    )
    billing_lines = (
        'mina_credit_applies_total{kind="welcome",outcome="applied"} 1.0',
        'mina_credit_applies_total{kind="debit",outcome="applied"} 1.0',
        'mina_credit_applies_total{kind="debit",outcome="insufficient"} 1.0',
        'mina_generations_total{flow="video_animate",status="rejected"} 1.0',
    )
    pipeline = await wait_for(lambda: _scraped_with(pipeline_port, pipeline_lines), 15, what="pipeline metrics")
    await wait_for(lambda: _scraped_with(billing_port, billing_lines), 15, what="billing metrics")

    steps = [line for line in pipeline.splitlines() if line.startswith("mina_step_seconds_count{")]
    assert len(steps) >= 4, steps  # every step of a still create is timed, each once
    assert all(line.endswith(" 1.0") for line in steps), steps
    assert 'mina_step_seconds_bucket{le="+Inf",step_type="seedream_generate"} 1.0' in pipeline
    assert "mina_provider_errors_total{" not in pipeline  # the offline provider never failed


async def _scraped_with(port: int, lines: tuple[str, ...]) -> str | None:
    text = await scrape(port)
    return text if has(text, *lines) else None
