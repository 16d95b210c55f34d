"""Wiring: providers per settings, config fallbacks seeded, checkpoints bound, the job consumer."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import stamina
import structlog

from libs.assets import AssetStore, build_asset_store
from libs.errors import ServiceUnavailableError
from libs.heap import ANY, YOUNG, HeapKeeper
from libs.schemas import CANCEL_REQUESTS, GENERATION_JOBS, ConfigMap, GenerationJob, SeedConfig, Stream
from libs.service import ServiceContext
from libs.settings import Settings
from services.pipeline.adapters.offline import OfflineCompleter, OfflinePredictor, OfflineScanner
from services.pipeline.adapters.offline_edits import OfflineEditor, OfflineEditWriter
from services.pipeline.adapters.protocols import Completer, EditWriter, Predictor, Providers, Scanner
from services.pipeline.checkpoint import CheckpointStore
from services.pipeline.config import seed_entries
from services.pipeline.control import StartGate
from services.pipeline.deps import PipelineDeps
from services.pipeline.handlers import on_job, on_job_exhausted
from services.pipeline.slots import CustomerSlots

log = structlog.get_logger("pipeline")

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
BIG_BUFFER = 64 * 1024
SEED_DEADLINE_S = 60.0
SEED_RETRY_S = 0.5


def build_providers(settings: Settings, store: AssetStore) -> Providers:
    """offline by default; `auto` uses OpenAI / Replicate when their keys are set; the names force them."""
    use_openai = settings.provider == "openai" or (settings.provider != "offline" and settings.openai_api_key)
    use_replicate = settings.provider == "replicate" or (
        settings.provider != "offline" and settings.replicate_api_token)
    writer: Scanner | None = None
    edit_writer: EditWriter = OfflineEditWriter()
    editor: Predictor = OfflineEditor(store, settings.offline_latency_ms)
    completer: Completer
    scanner: Scanner
    predictor: Predictor
    if use_openai:
        from services.pipeline.adapters.edit_prompts import OpenAIEditWriter
        from services.pipeline.adapters.openai_gpt import OpenAIWriter

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        openai_writer = OpenAIWriter(api_key=key, base_url=settings.openai_base_url, model=settings.openai_model,
                                     timeout_s=settings.provider_timeout_s, attempts=settings.provider_max_attempts)
        writer, completer = openai_writer, openai_writer
        edit_writer = OpenAIEditWriter(api_key=key, base_url=settings.openai_base_url,
                                       timeout_s=min(settings.provider_timeout_s, 60.0),
                                       attempts=settings.provider_max_attempts)
    else:
        completer = OfflineCompleter(settings.offline_latency_ms)
    scanner = writer or OfflineScanner(settings.offline_latency_ms)
    if use_replicate:
        from services.pipeline.adapters.replicate_predict import ReplicatePredictor

        token = settings.replicate_api_token.get_secret_value() if settings.replicate_api_token else ""
        predictor = ReplicatePredictor(api_token=token, base_url=settings.replicate_base_url,
                                       timeout_s=settings.provider_timeout_s,
                                       poll_interval_s=settings.provider_poll_interval_s)
        editor = predictor
    else:
        predictor = OfflinePredictor(store, settings.offline_latency_ms, settings.offline_predict_latency_ms)
    return Providers(scanner=scanner, completer=completer, predictor=predictor, editor=editor,
                     edit_writer=edit_writer)


async def seed_config(ctx: ServiceContext) -> None:
    """Insert the v1 fallbacks through the ledger, asking every half second until it answers; after
    `SEED_DEADLINE_S` the pipeline starts without (the fallbacks also serve a key missing in the ledger)."""
    try:
        async for attempt in stamina.retry_context(on=ServiceUnavailableError, attempts=None, timeout=SEED_DEADLINE_S,
                                                   wait_initial=SEED_RETRY_S, wait_max=SEED_RETRY_S, wait_jitter=0.0,
                                                   wait_exp_base=1.0):
            with attempt:
                await ctx.bus.request(SeedConfig(entries=seed_entries()), ConfigMap, timeout=5.0)
    except ServiceUnavailableError:
        log.warning("pipeline.config_seed_skipped", reason="ledger not answering")


def return_big_buffers() -> None:
    """Allocations of 64 KB and more (images read and written, encoded renders) get their own mapping,
    returned to the system when freed. By default glibc serves them up to 32 MB from its arenas (one per
    worker thread), where a burst of them (thousands of stills read back at once) stays resident."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_MMAP_THRESHOLD, BIG_BUFFER)


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    return_big_buffers()
    keeper = HeapKeeper("pipeline", ANY, young=YOUNG)  # each run in flight walked once (libs/heap.py)
    keeper.start()
    ctx.stack.push_async_callback(keeper.stop)
    store = build_asset_store(settings)
    providers = build_providers(settings, store)
    await seed_config(ctx)
    checkpoints = await CheckpointStore.open(ctx.bus.js, settings)
    slots = await CustomerSlots.open(ctx.bus.js, settings)
    deps = PipelineDeps(settings=settings, bus=ctx.bus, store=store, providers=providers, checkpoints=checkpoints,
                        slots=slots, start_gate=StartGate(settings.pipeline_start_concurrency))
    # every pipeline process hears every cancel request; the one running that generation acts
    await ctx.bus.listen(CANCEL_REQUESTS, deps.runs.on_cancel_requested)
    log.info("pipeline.providers", scanner=providers.scanner.provider, completer=providers.completer.provider,
             predictor=providers.predictor.provider)
    await ctx.bus.consume(
        stream=Stream.JOBS, durable="pipeline", filter_subject=GENERATION_JOBS,
        handlers={GenerationJob: on_job}, deps=deps, concurrency=settings.pipeline_concurrency,
        on_exhausted=on_job_exhausted,
    )
