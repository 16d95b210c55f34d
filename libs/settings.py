"""The one settings model: every `MMA_*` variable, read from the environment or `.env`.

Built once in each service's `__main__` and passed down; no other module reads
`os.environ` for configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

InfraMode = Literal["embedded", "external", "containers"]
LogFormat = Literal["auto", "json", "console"]
AssetStoreKind = Literal["local", "s3"]
ProviderChoice = Literal["auto", "offline", "openai", "replicate"]
EventLoop = Literal["uvloop", "asyncio"]
TokenVerification = Literal["local", "auth_api"]


class Settings(BaseSettings):
    """Configuration of every service; names are the `MMA_` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="MMA_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # infrastructure
    infra: InfraMode = Field("embedded", description="embedded (default) / external / containers")
    state_dir: Path = Field(Path(".mina"), description="data of the embedded NATS and Postgres, logs, assets")
    nats_url: str | None = Field(None, description="NATS URL; required in external mode")
    database_url: str | None = Field(None, description="Postgres DSN; required in external mode")
    nats_image: str = Field(
        "nats:2.11", description="NATS image of the containers mode; scripts/docker-engine.sh env gives the local build"
        " (mina-local/nats:latest) for engines without a registry")
    postgres_image: str = Field(
        "postgres:16", description="Postgres image of the containers mode; scripts/docker-engine.sh env gives the local"
        " build (mina-local/postgres:latest)")
    db_pool_min: int = Field(1, description="ledger asyncpg pool minimum size")
    db_pool_max: int = Field(10, description="ledger asyncpg pool maximum size")

    # bus
    max_deliveries: int = Field(
        5, description="deliveries of a message that keeps failing (a bug, bad data) before it is dead-lettered,"
        " in every consumer; a dependency that is away (NATS, the ledger, Postgres) is waited for instead")
    dead_letter_max_age_days: int = Field(30, description="how long the dead-letter stream keeps a message")
    dead_letter_max_bytes: int = Field(
        1024 * 1024 * 1024, description="bytes the dead-letter stream keeps; when full it refuses new dead letters"
        " (they stay unacked where they were) rather than drop old ones")
    ack_wait_s: float = Field(30.0, description="JetStream ack wait; in-progress acks are sent at a third of it")
    dedupe_window_s: float = Field(120.0, description="JetStream duplicate window for Nats-Msg-Id")
    events_max_age_days: int = Field(7, description="how long the EVENTS stream keeps messages")
    events_max_bytes: int = Field(
        2 * 1024**3, description="bytes the EVENTS stream keeps at most (the oldest go first); size it from "
        "docs/runbook.md (Storage): about 16 KB per generation")
    work_queue_max_bytes: int = Field(
        256 * 1024**2, description="bytes each work queue (COMMANDS, JOBS) holds at most; when full, new work is "
        "refused (never dropped once accepted)")
    work_queue_max_age_s: float = Field(86400.0, description="how long a command or job may wait in its queue")
    checkpoints_max_bytes: int = Field(256 * 1024**2, description="bytes of the run checkpoints KV bucket (MMA_RUNS)")
    checkpoints_max_age_s: float = Field(
        86400.0, description="a checkpoint never removed (a crash right at the end) expires after this")
    checkpoint_final_ttl_s: float = Field(
        600.0, description="a finished run leaves only a small `terminal` marker, gone after this (it stops a late"
        " redelivery of the job from running it again)")
    idempotency_max_bytes: int = Field(
        512 * 1024**2, description="bytes of the Idempotency-Key KV bucket (a key lives a day, about 260 bytes)")
    slots_max_bytes: int = Field(16 * 1024**2, description="bytes of the customer slots KV bucket (MMA_SLOTS)")
    rpc_timeout_s: float = Field(10.0, description="timeout of a request/reply call")
    rpc_responder_wait_s: float = Field(
        3.0, description="how long a request keeps asking while no process serves its subject (a service"
        " restarting) before it answers 503")
    rpc_concurrency: int = Field(
        64, description="requests one process handles at once per served subject (the ledger: its pool size)")
    stream_replicas: int = Field(1, description="replicas of the streams (3 on a production cluster)")
    events_max_consumers: int = Field(
        100_000, description="consumers the EVENTS stream allows (each SSE stream and create waits on one; the "
        "server's default of 1,000 would refuse the 1,001st)")
    chaos_duplicate_publish: bool = Field(
        False, description="test mode: publish every bus message twice under different msg ids (fault suite)")

    # HTTP
    gateway_host: str = Field("127.0.0.1", description="gateway listen address")
    gateway_port: int = Field(8080, description="gateway listen port")
    public_url: str | None = Field(None, description="public base URL of the gateway (default http://host:port)")
    cors_origins: list[str] = Field(
        default_factory=lambda: ["https://mina.faltastudio.com", "https://mina-app-bvpn.onrender.com"],
        description="allowed frontend origins (JSON list)",
    )
    health_port: int = Field(0, description="health/metrics HTTP port of a non-gateway service (0 = none)")
    max_body_bytes: int = Field(25 * 1024 * 1024, description="largest accepted request body")
    upload_max_bytes: int = Field(15 * 1024 * 1024, description="largest accepted image upload")
    remote_fetch_allow_private: bool = Field(
        False, description="let every server-side fetch reach loopback/private hosts (local experiments only)")
    fetch_allow_hosts: list[str] = Field(
        default_factory=list, description='JSON list of hosts or host:port a server-side fetch may reach although '
        'they are not public (set by the test fixtures for their loopback wire servers; empty in production)')
    fetch_max_bytes: int = Field(50 * 1024 * 1024, description="largest file a server-side fetch reads")
    fetch_timeout_s: float = Field(60.0, description="time limit of one server-side fetch, redirects included")
    fetch_max_redirects: int = Field(5, description="redirect hops a server-side fetch follows (each one checked)")
    fetch_probe_timeout_s: float = Field(
        5.0, description="how long a create follows a customer's asset URL to check where it leads")
    decision_timeout_s: float = Field(5.0, description="how long a create waits for the billing decision")
    legacy_wait_timeout_s: float = Field(600.0, description="how long /editorial/generate waits for the result")
    rate_limit_per_minute: int = Field(60, description="creates per pass id per minute (0 = unlimited)")

    # logging
    log_format: LogFormat = Field("auto", description="auto: console on a TTY, JSON otherwise")
    env: str = Field("development", description="the deployment's name, reported as `env` by GET /health")
    log_level: str = Field("INFO", description="minimum log level")
    event_loop: EventLoop = Field("uvloop", description="the services' event loop: uvloop (libuv, C) or the stdlib's")

    # assets
    asset_store: AssetStoreKind = Field("local", description="local filesystem or an S3-compatible bucket")
    assets_dir: Path | None = Field(None, description="local store directory (default <state_dir>/assets)")
    assets_public_base: str | None = Field(None, description="public base of stored assets")
    upload_signing_secret: SecretStr = Field(
        SecretStr("dev-upload-signing-secret"),
        description="HMAC key of the local store's presigned PUT URLs and of the SSE grants in `sse_url`; "
                    "set one real value shared by every gateway in production"
    )
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "auto"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    # providers
    provider: ProviderChoice = Field(
        "auto", description="auto: OpenAI/Replicate when their keys are set, else the offline provider"
    )
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    replicate_api_token: SecretStr | None = None
    replicate_base_url: str | None = None
    seedream_model: str = "bytedance/seedream-4"
    kling_model: str = "kwaivgi/kling-v2.1"
    offline_latency_ms: int = Field(0, description="simulated latency of each offline provider call")
    provider_timeout_s: float = Field(180.0, description="timeout of one provider call")
    provider_max_attempts: int = Field(3, description="attempts of a provider call on transient errors")
    provider_poll_interval_s: float = Field(1.0, description="Replicate prediction poll interval")
    pipeline_concurrency: int = Field(2000, description="jobs one pipeline process runs at once")
    max_running_per_customer: int = Field(
        2, description="generations of one pass id running at once across all pipelines; more wait in order"
        " (0 = unlimited)")
    slot_poll_interval_s: float = Field(0.25, description="how often a job waiting for a customer slot looks again")
    slot_ttl_s: float = Field(
        30.0, description="a customer slot not refreshed for this long is free again (a crashed run's slot)")
    queue_estimate_window: int = Field(
        20, description="recent finished generations whose mean duration estimates a queued one's wait")

    # fingertips (image-editing tools)
    fingertips_upscale_crystal: bool = Field(
        False, description="upscale with the crystal upscaler instead of the magic image refiner (upstream's"
        " UPSCALE_CRYSTAL=1)")
    fingertips_wait_s: float = Field(
        170.0, description="how long POST /fingertips/generate waits for the edit before it answers `processing`"
        " (the edit goes on and is read later at GET /fingertips/generations/<id>)")

    # credits and billing
    price_still_create: int = 1
    price_still_tweak: int = 1
    price_video_animate: int = 5
    price_video_tweak: int = 5
    welcome_credits: int = Field(20, description="credits a new pass id gets, once (0 allowed)")
    shopify_webhook_secret: SecretStr | None = None
    credit_product_map: dict[str, int] = Field(
        default_factory=lambda: {"MINA-50": 50}, description='JSON SKU -> credits, e.g. {"MINA-50": 50}'
    )
    credit_expiry_days: int | None = Field(
        None, description="days top-up and claimed welcome credits stay valid, rolling (none = forever)")
    welcome_claim_credits: int = Field(
        5, description="credits POST /api/welcome-matcha/claim grants a signed-in pass id that had no welcome yet"
        " (the same once-per-pass-id grant as `welcome_credits`: a pass id gets one or the other)")

    # checkout (Shopify Admin REST draft orders; billing holds the token)
    shopify_store_domain: str | None = Field(
        None, description="the shop's Admin API host (e.g. mina.myshopify.com, reached over https); a full URL"
        " (http://127.0.0.1:port) is used as it is. Unset: checkout answers 503 CHECKOUT_NOT_CONFIGURED")
    shopify_admin_token: SecretStr | None = Field(None, description="the Admin API access token of the shop")
    shopify_api_version: str = Field("2025-10", description="the Admin REST API version of draft orders")
    matcha_variant_id: int = Field(43328351928403, description="variant of the MINA-50 pack (qty 1..99)")
    matcha_5000_variant_id: int = Field(44184397283411, description="variant of the 5000-matcha pack (qty 100)")
    shopify_timeout_s: float = Field(
        8.0, description="time limit of one Admin API call (below rpc_timeout_s, so the gateway hears why)")
    frontend_url: str = Field(
        "https://mina.faltastudio.com", description="where GET /checkout/return sends the buyer back to")
    supabase_jwt_secret: SecretStr | None = Field(
        None, description="HS256 secret of the Supabase project's (legacy) tokens")
    supabase_url: str | None = Field(
        None, description="Supabase project URL: JWKS at /auth/v1/.well-known/jwks.json, Auth API at /auth/v1/user")
    supabase_jwks_url: str | None = Field(
        None, description="JWKS of the project's signing keys (default from supabase_url)")
    supabase_anon_key: SecretStr | None = Field(
        None, description="the project's anon key, the Auth API's `apikey` header")
    token_verification: TokenVerification = Field(
        "local", description="local: HS256 secret and/or JWKS (ES256/RS256); auth_api: ask GET /auth/v1/user")
    jwt_audience: str = Field("authenticated", description="the `aud` a customer's token must carry")
    jwks_cache_s: float = Field(600.0, description="how long fetched JWKS keys are used before a refetch")
    auth_api_cache_s: float = Field(30.0, description="how long an Auth API answer for one token is reused")
    identity_relaxed: bool = Field(
        False, description="migration window only: let a pass:user/email/shopify id through without its token"
        " (logged at start, counted in mina_identity_relaxed_total)")
    admin_token: SecretStr | None = Field(None, description="Bearer token of the admin routes")
    cancel_refund_after_provider_start: bool = Field(
        False, description="refund a generation cancelled after its generator call started (the provider"
        " already charged us); before that a cancel is always refunded")
    cancel_wait_s: float = Field(3.0, description="how long POST .../cancel waits for the run to stop")
    stuck_after_s: float = Field(
        900.0, description="a charged still generation with no progress for this long is swept (cancelled, failed,"
        " refunded)")
    stuck_after_video_s: float = Field(3600.0, description="the same window for a video generation (Kling is slow)")
    sweep_cancel_wait_s: float = Field(
        5.0, description="how long the sweeper waits for a stuck run to stop after cancelling it, before it fails"
        " the generation itself")
    sweep_interval_s: float = Field(60.0, description="how often billing sweeps stuck generations")

    # convenience ------------------------------------------------------------
    @property
    def gateway_public_url(self) -> str:
        return (self.public_url or f"http://{self.gateway_host}:{self.gateway_port}").rstrip("/")

    @property
    def assets_path(self) -> Path:
        return self.assets_dir or (self.state_dir / "assets")

    @property
    def assets_base_url(self) -> str:
        return (self.assets_public_base or f"{self.gateway_public_url}/assets").rstrip("/")

    def price_of(self, flow: str) -> int:
        """Credits charged for one generation of `flow` (still_create, video_tweak, ...)."""
        return int(getattr(self, f"price_{flow}"))


def settings_reference() -> str:
    """The settings reference (docs/settings.md), generated from the model so it never drifts."""
    lines = [
        "# Settings reference",
        "",
        "Generated from `libs/settings.py` by `python -m libs.settings`; do not edit by hand.",
        "Every setting is an environment variable (or a line in `.env`) with the `MMA_` prefix.",
        "",
        "| variable | type | default | what |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        annotation = str(field.annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
        annotation = annotation.replace("<class '", "").replace("'>", "").replace("|", "\\|")
        default: object = field.default
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        if isinstance(default, SecretStr):
            default = "(secret)"
        shown = "" if default is None else f"`{default}`"
        lines.append(f"| `MMA_{name.upper()}` | {annotation} | {shown} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_reference(), end="")
