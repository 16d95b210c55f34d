"""The E2 synchronous generation routes: the MMA bus path, waiting for the result.

Checks run in the documented order (400s first, then credits) and answers keep the
old shapes, so the Dec 15–23 client works unchanged.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from libs.errors import InvalidInputError
from libs.schemas import (
    Assets,
    Flow,
    GenerationDone,
    GenerationFailed,
    GenerationRequest,
    Inputs,
)
from services.gateway.adapters.idempotency import body_hash
from services.gateway.auth.identity import Identity, json_body
from services.gateway.bodies import PassFields, aspect_of, first, style_of
from services.gateway.deps import GatewayDeps
from services.gateway.errors import legacy_body
from services.gateway.generations.submit import CreateCommand, Outcome, submit
from services.gateway.generations.views import as_dict
from services.gateway.routes.common import ensure_customer_once, get_deps, identity, request_id

router = APIRouter(tags=["legacy generation"])


class LegacyCommon(PassFields):
    sessionId: str | None = None
    tone: str | None = None
    platform: str | None = None
    minaVisionEnabled: bool | None = None
    stylePresetKey: str | None = None
    stylePresetKeys: list[str] | None = None
    aspectRatio: str | None = None
    idempotency_key: str | None = None


class EditorialBody(LegacyCommon):
    brief: str | None = None
    productImageUrl: str | None = None
    logoImageUrl: str | None = None
    styleImageUrls: list[str] | None = None


class MotionBody(LegacyCommon):
    lastImageUrl: str | None = None
    referenceImageUrl: str | None = None
    inputStillUrl: str | None = None
    motionDescription: str | None = None
    text: str | None = None
    motionBrief: str | None = None
    userMotionBrief: str | None = None
    motionStyles: list[str] | None = None
    motionStyleKeys: list[str] | None = None
    movementStyle: str | None = None
    durationSeconds: float | None = None

    def brief(self) -> str:
        return first(self.motionDescription, self.text, self.motionBrief, self.userMotionBrief) or ""

    def movement(self) -> str:
        styles = self.motionStyles or self.motionStyleKeys or []
        return style_of(self.movementStyle, None, styles)


def _gpt(done: GenerationDone | None) -> dict[str, object]:
    vars_ = done.vars if done else {}
    messages = as_dict(vars_.get("userMessages"))
    texts = [str(x.get("text") if isinstance(x, dict) else x) for x in messages.get("scan_lines") or []]
    return {"usedFallback": False, "error": None, "styleProfile": None, "styleProfileMeta": None,
            "imageTexts": texts, "userMessage": messages.get("final_line")}


def insufficient(outcome: Outcome, request: Request, pass_id: str) -> JSONResponse:
    assert outcome.rejected is not None
    need, have = outcome.rejected.price, outcome.rejected.balance
    message = f"Not enough Mina credits. Need {need}, you have {have}."
    return JSONResponse({
        "ok": False, "error": "INSUFFICIENT_CREDITS", "message": message,
        "requiredCredits": need, "currentCredits": have, "requestId": request_id(request), "passId": pass_id,
    }, status_code=402)


def failure(outcome: Outcome, request: Request, code: str) -> JSONResponse | None:
    """The answer when the generation did not finish well (None when it did)."""
    rid = request_id(request)
    if outcome.rejected is not None:
        return JSONResponse(legacy_body(outcome.rejected.code, outcome.rejected.message, rid,
                                        generationId=outcome.generation_id), status_code=409)
    if isinstance(outcome.terminal, GenerationFailed):
        # the request itself could not be used (e.g. an image URL that is no asset): the client's fault, not ours
        client_fault = outcome.terminal.detail.get("category") == "VALIDATION_ERROR"
        return JSONResponse(legacy_body(code, outcome.terminal.message, rid, generationId=outcome.generation_id,
                                        detail={"code": outcome.terminal.code, "step": outcome.terminal.step_type}),
                            status_code=400 if client_fault else 500)
    if outcome.terminal is None:
        return JSONResponse(legacy_body(code, "The generation is still running; check its status later.", rid,
                                        generationId=outcome.generation_id,
                                        sseUrl=f"/mma/stream/{outcome.generation_id}"), status_code=500)
    return None


async def run_to_done(request: Request, deps: GatewayDeps, who: Identity, flow: Flow, req: GenerationRequest,
                      body: LegacyCommon, failure_code: str) -> tuple[Outcome, GenerationDone] | JSONResponse:
    """Submit and wait for the result; the legacy error answer (402, 409, 400, 500) when it is not done."""
    outcome = await run_legacy(request, deps, who, flow, req, body)
    if outcome.rejected is not None and outcome.rejected.code == "INSUFFICIENT_CREDITS":
        return insufficient(outcome, request, who.pass_id)
    failed = failure(outcome, request, failure_code)
    if failed is not None:
        return failed
    assert isinstance(outcome.terminal, GenerationDone)
    return outcome, outcome.terminal


async def run_legacy(request: Request, deps: GatewayDeps, who: Identity, flow: Flow, req: GenerationRequest,
                     body: LegacyCommon) -> Outcome:
    request.state.pass_id = who.pass_id
    await ensure_customer_once(deps, who)
    key = request.headers.get("idempotency-key") or first(body.idempotency_key)
    digest = body_hash(orjson.dumps({"flow": flow.value, "body": await json_body(request)},
                                    option=orjson.OPT_SORT_KEYS)) if key else ""
    cmd = CreateCommand(pass_id=who.pass_id, flow=flow, request=req, request_id=request_id(request),
                        session_id=first(body.sessionId), platform=first(body.platform) or "web", source="legacy",
                        idempotency_key=key, body_digest=digest)
    return await submit(deps, cmd, terminal_timeout_s=deps.settings.legacy_wait_timeout_s)


@router.post("/editorial/generate", response_model=None)
async def editorial_generate(request: Request, body: EditorialBody | None = None,
                             deps: GatewayDeps = Depends(get_deps), who: Identity = Depends(identity),
                             ) -> dict[str, object] | JSONResponse:
    """A still generation, answered when it is done (E2 shape)."""
    request.state.failure_code = "EDITORIAL_GENERATION_ERROR"
    body = body or EditorialBody()
    brief = first(body.brief) or ""
    if not first(body.productImageUrl) and not brief:
        raise InvalidInputError("Give a product image or a brief.", code="MISSING_INPUT")
    req = GenerationRequest(
        assets=Assets(product_image_url=first(body.productImageUrl), logo_image_url=first(body.logoImageUrl),
                      inspiration_image_urls=[u for u in body.styleImageUrls or [] if u][:4]),
        inputs=Inputs(user_brief=brief, style=style_of(body.tone, body.stylePresetKey, body.stylePresetKeys),
                      aspect_ratio=aspect_of(body.aspectRatio), platform=first(body.platform)),
        vision_intelligence=body.minaVisionEnabled is not False,
    )
    result = await run_to_done(request, deps, who, Flow.STILL_CREATE, req, body, "EDITORIAL_GENERATION_ERROR")
    if isinstance(result, JSONResponse):
        return result
    outcome, done = result
    balance = outcome.accepted.balance if outcome.accepted else None
    cost = outcome.accepted.price if outcome.accepted else (await deps.prices.get()).still_create
    return {"ok": True, "message": "Image generated.", "requestId": request_id(request), "prompt": done.prompt,
            "imageUrl": done.output_url, "imageUrls": [done.output_url] if done.output_url else [],
            "generationId": outcome.generation_id, "sessionId": first(body.sessionId), "passId": who.pass_id,
            "credits": {"balance": balance, "cost": cost}, "gpt": _gpt(done)}


@router.post("/motion/suggest", response_model=None)
@router.post("/mma/motion/suggest", response_model=None)  # the client of 2025-12-22..24 tried this path first
async def motion_suggest(request: Request, body: MotionBody | None = None, deps: GatewayDeps = Depends(get_deps),
                         who: Identity = Depends(identity)) -> dict[str, object] | JSONResponse:
    """A motion prompt suggestion for a still (type for me, suggest only): no charge."""
    request.state.failure_code = "MOTION_SUGGESTION_ERROR"
    body = body or MotionBody()
    image = first(body.referenceImageUrl, body.inputStillUrl, body.lastImageUrl)
    if not image:
        raise InvalidInputError("A reference image is required.", code="MISSING_REFERENCE_IMAGE")
    req = GenerationRequest(
        assets=Assets(input_still_image_url=image),
        inputs=Inputs(motion_user_brief=body.brief(), movement_style=body.movement(), type_for_me=True,
                      suggest_only=True, aspect_ratio=aspect_of(body.aspectRatio), platform=first(body.platform),
                      style=style_of(body.tone, body.stylePresetKey, body.stylePresetKeys)),
    )
    result = await run_to_done(request, deps, who, Flow.VIDEO_ANIMATE, req, body, "MOTION_SUGGESTION_ERROR")
    if isinstance(result, JSONResponse):
        return result
    outcome, done = result
    prompts = as_dict(done.vars.get("prompts"))
    suggestion = first(prompts.get("suggested_prompt"), prompts.get("motion_sugg_prompt"), done.prompt) or ""
    return {"ok": True, "requestId": request_id(request), "suggestion": suggestion, "motionPrompt": suggestion,
            "prompt": suggestion, "passId": who.pass_id, "generationId": outcome.generation_id,
            "gpt": {"usedFallback": False, "error": None}}


@router.post("/motion/generate", response_model=None)
async def motion_generate(request: Request, body: MotionBody | None = None, deps: GatewayDeps = Depends(get_deps),
                          who: Identity = Depends(identity)) -> dict[str, object] | JSONResponse:
    """A video from a still, answered when it is done (E2 shape)."""
    request.state.failure_code = "MOTION_GENERATION_ERROR"
    body = body or MotionBody()
    image = first(body.lastImageUrl, body.inputStillUrl, body.referenceImageUrl)
    if not image:
        raise InvalidInputError("The last image is required.", code="MISSING_LAST_IMAGE")
    if not body.brief():
        raise InvalidInputError("Describe the motion you want.", code="MISSING_MOTION_DESCRIPTION")
    duration = round(body.durationSeconds) if body.durationSeconds is not None else 5
    req = GenerationRequest(
        assets=Assets(input_still_image_url=image),
        inputs=Inputs(motion_user_brief=body.brief(), movement_style=body.movement(),
                      aspect_ratio=aspect_of(body.aspectRatio), platform=first(body.platform),
                      duration_s=max(1, min(10, duration)),
                      style=style_of(body.tone, body.stylePresetKey, body.stylePresetKeys)),
    )
    result = await run_to_done(request, deps, who, Flow.VIDEO_ANIMATE, req, body, "MOTION_GENERATION_ERROR")
    if isinstance(result, JSONResponse):
        return result
    outcome, done = result
    balance = outcome.accepted.balance if outcome.accepted else None
    cost = outcome.accepted.price if outcome.accepted else (await deps.prices.get()).video_animate
    return {"ok": True, "message": "Video generated.", "requestId": request_id(request), "prompt": done.prompt,
            "videoUrl": done.output_url, "generationId": outcome.generation_id, "sessionId": first(body.sessionId),
            "passId": who.pass_id, "credits": {"balance": balance, "cost": cost}, "gpt": _gpt(done)}
