"""Step functions by step type (the step names are a stable contract, MMA.md)."""

from __future__ import annotations

from services.pipeline.steps.base import StepFn
from services.pipeline.steps.fingertips import fingertips_generate, fingertips_prompt
from services.pipeline.steps.generate import generate
from services.pipeline.steps.history import like_history
from services.pipeline.steps.prompts import (
    gpt_feedback_motion,
    gpt_feedback_still,
    gpt_reader,
    gpt_reader_motion,
    motion_suggestion,
)
from services.pipeline.steps.scans import postscan_still, postscan_video, scan_input

STEPS: dict[str, StepFn] = {
    "scan_product": scan_input,
    "scan_logo": scan_input,
    "scan_inspiration": scan_input,
    "scan_input_still": scan_input,
    "like_history": like_history,
    "gpt_reader": gpt_reader,
    "gpt_feedback_still": gpt_feedback_still,
    "motion_suggestion": motion_suggestion,
    "gpt_reader_motion": gpt_reader_motion,
    "gpt_feedback_motion": gpt_feedback_motion,
    "seedream_generate": generate,
    "seedream_generate_feedback": generate,
    "kling_generate": generate,
    "kling_generate_feedback": generate,
    "postscan_output_still": postscan_still,
    "postscan_output_still_feedback": postscan_still,
    "postscan_output_video": postscan_video,
    "postscan_output_video_feedback": postscan_video,
    "fingertips_prompt": fingertips_prompt,
    "fingertips_generate": fingertips_generate,
}
