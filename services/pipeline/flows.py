"""The flows: what a run reads before its first step, its step plan and its first vars.

`prepare` runs once per generation (its result is checkpointed), so a resumed run
follows the same plan with the same config snapshot, taste and parent, even if a
new config version was inserted meanwhile. Its reads (config, customer, like window,
parent) are one ledger call (`RunStartRead`, services/ledger/runstart.py).
"""

from __future__ import annotations

from typing import NamedTuple

from libs.bus import Bus
from libs.errors import InvalidInputError, ServiceUnavailableError
from libs.schemas import (
    MMA_VARS_VERSION,
    Flow,
    GenerationJob,
    GenerationView,
    LikeList,
    MmaStatus,
    RunStartFacts,
    RunStartRead,
)
from services.pipeline import fingertips
from services.pipeline.config import ALL_KEYS, config_of, latest_tag, load_active
from services.pipeline.state import MmaVars, ParentFacts, PlanEntry, Prep
from services.pipeline.steps.history import window_for
from services.pipeline.taste import constraints_for


def initial_vars(job: GenerationJob) -> MmaVars:
    """The canonical variable map (MMA.md), filled as the steps run."""
    command = job.command
    request = command.request
    assets, inputs, feedback = request.assets, request.inputs, request.feedback
    return {
        "version": MMA_VARS_VERSION,
        "mode": command.flow.mode,
        "flow": command.flow.value,
        "assets": {
            "product_image_id": assets.product_image_url,
            "logo_image_id": assets.logo_image_url,
            "inspiration_image_ids": list(assets.inspiration_image_urls[:4]),
            "style_hero_image_id": assets.style_hero_image_url,
            "input_still_image_id": assets.input_still_image_url,
        },
        "scans": {"product_crt": None, "logo_crt": None, "inspiration_crt": [], "still_crt": None,
                  "output_still_crt": None},
        "history": {"vision_intelligence": request.vision_intelligence, "like_window": None,
                    "style_history_csv": ""},
        "inputs": {"userBrief": inputs.user_brief, "style": inputs.style,
                   "motion_user_brief": inputs.motion_user_brief, "movement_style": inputs.movement_style,
                   "type_for_me": inputs.type_for_me},
        "prompts": {"clean_prompt": None, "motion_prompt": None, "motion_sugg_prompt": None},
        "feedback": {"still_feedback": feedback.still_feedback, "motion_feedback": feedback.motion_feedback},
        "userMessages": {"scan_lines": [], "final_line": None},
        "settings": {},
        "outputs": {},
        "meta": {"ctx_versions": {}, "settings_versions": {}, "parent_generation_id": command.parent_generation_id,
                 "hard_blocks": []},
    }


def _checked_parent(generation_id: str, view: GenerationView | None) -> GenerationView:
    """The parent generation, finished; one the ledger has not projected as done yet is retried later."""
    if view is None:
        raise ServiceUnavailableError(f"generation {generation_id} not visible yet", code="PARENT_NOT_READY")
    if view.status in (MmaStatus.ERROR.value, MmaStatus.CANCELLED.value):
        raise InvalidInputError(f"generation {generation_id} failed", code="PARENT_FAILED")
    if view.status not in (MmaStatus.DONE.value, MmaStatus.SUGGESTED.value):
        raise ServiceUnavailableError(f"generation {generation_id} is still {view.status}", code="PARENT_NOT_READY")
    return view


def _parent_facts(view: GenerationView) -> ParentFacts:
    v = view.vars or {}
    scans, prompts, assets = v.get("scans") or {}, v.get("prompts") or {}, v.get("assets") or {}
    return ParentFacts(
        generation_id=view.generation_id,
        output_url=view.output_url,
        prompt=view.prompt or prompts.get("clean_prompt"),
        caption=scans.get("output_still_crt") or scans.get("still_crt"),
        still_crt=scans.get("still_crt") or scans.get("output_still_crt"),
        motion_prompt=prompts.get("motion_prompt") or prompts.get("motion_sugg_prompt") or view.prompt,
        input_still_image_id=assets.get("input_still_image_id"),
        settings=v.get("settings") or {},
    )


def plan_for(job: GenerationJob, prep: Prep, vars: MmaVars, postscan_video: bool) -> list[PlanEntry]:
    flow = job.command.flow
    assets = job.command.request.assets
    inputs = job.command.request.inputs
    plan: list[PlanEntry] = []
    if flow is Flow.STILL_CREATE:
        if assets.product_image_url:
            plan.append(("scan_product", {"url": assets.product_image_url}))
        if assets.logo_image_url:
            plan.append(("scan_logo", {"url": assets.logo_image_url}))
        for index, url in enumerate(assets.inspiration_image_urls[:4]):
            plan.append(("scan_inspiration", {"url": url, "index": index}))
        plan += [("like_history", {}), ("gpt_reader", {}), ("seedream_generate", {"provider": "seedream"}),
                 ("postscan_output_still", {})]
    elif flow is Flow.STILL_TWEAK:
        plan += [("gpt_feedback_still", {}), ("seedream_generate_feedback", {"provider": "seedream"}),
                 ("postscan_output_still_feedback", {})]
    elif flow is Flow.VIDEO_ANIMATE:
        if not vars["scans"]["still_crt"]:
            plan.append(("scan_input_still", {"url": vars["assets"]["input_still_image_id"]}))
        plan.append(("motion_suggestion", {}) if inputs.type_for_me else ("gpt_reader_motion", {}))
        if not inputs.suggest_only:
            plan.append(("kling_generate", {"provider": "kling"}))
            if postscan_video:
                plan.append(("postscan_output_video", {}))
    else:
        plan.append(("gpt_feedback_motion", {}))
        plan.append(("kling_generate_feedback", {"provider": "kling"}))
        if postscan_video:
            plan.append(("postscan_output_video_feedback", {}))
    return plan


def _parent_id(job: GenerationJob) -> str | None:
    """The finished generation a flow starts from: the one a tweak tweaks, the still an animation moves."""
    command = job.command
    if command.flow.is_tweak:
        if not command.parent_generation_id:
            raise InvalidInputError("a tweak needs the generation it tweaks", code="PARENT_NOT_FOUND")
        return command.parent_generation_id
    if command.flow is Flow.VIDEO_ANIMATE:
        assets = command.request.assets
        return assets.input_still_generation_id or (
            command.parent_generation_id if not assets.input_still_image_url else None)
    return None


class Prepared(NamedTuple):
    prep: Prep
    vars: MmaVars
    likes: LikeList | None = None  # the taste window, read along (a still create's like_history step)


async def prepare(job: GenerationJob, bus: Bus, postscan_video: bool) -> Prepared:
    """Config snapshot, taste, parent facts and the plan, read at the start of the run in one ledger call
    (`RunStartRead`), with the like window of a flow that has a like_history step."""
    command = job.command
    if command.flow is Flow.FINGERTIPS:  # an edit: its own plan and vars (services/pipeline/fingertips.py)
        return Prepared(*await fingertips.prepare(job, bus))
    parent_id = _parent_id(job)
    like_limit = window_for(command.request.vision_intelligence) if command.flow is Flow.STILL_CREATE else None
    facts = await bus.request(RunStartRead(pass_id=command.pass_id, like_limit=like_limit,
                                           parent_generation_id=parent_id, config_keys=ALL_KEYS,
                                           config_tag=latest_tag()), RunStartFacts)
    config = config_of(facts) or await load_active(bus)
    parent = _parent_facts(_checked_parent(parent_id, facts.parent)) if parent_id else ParentFacts()
    preferences = facts.customer.preferences
    hard_blocks = sorted({str(b) for b in preferences.get("hard_blocks") or []})
    vars = initial_vars(job)
    vars["meta"]["hard_blocks"] = hard_blocks
    prep = Prep(config=config.to_json(), hard_blocks=hard_blocks, constraints=constraints_for(hard_blocks),
                customer_settings=dict(preferences.get("settings") or {}), parent=parent)
    flow = command.flow
    if flow is Flow.VIDEO_TWEAK:
        vars["assets"]["input_still_image_id"] = parent["input_still_image_id"]
        vars["scans"]["still_crt"] = parent["still_crt"]
    elif flow.is_tweak:
        vars["assets"]["style_hero_image_id"] = vars["assets"]["style_hero_image_id"] or parent["output_url"]
    elif flow is Flow.VIDEO_ANIMATE:
        assets = vars["assets"]
        if parent:
            assets["input_still_image_id"] = assets["input_still_image_id"] or parent["output_url"]
            vars["scans"]["still_crt"] = parent["caption"]
            vars["meta"]["input_still_generation_id"] = parent_id
        if not assets["input_still_image_id"]:
            raise InvalidInputError("an animation needs a still image", code="MISSING_ASSET")
    prep["plan"] = plan_for(job, prep, vars, postscan_video)
    return Prepared(prep, vars, LikeList(items=facts.likes) if facts.likes is not None else None)
