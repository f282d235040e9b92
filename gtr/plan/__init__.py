"""Sampling plans (numpy + stdlib only): schedules, plan vocabulary, builders, FTS, cost, noise."""
from .builders import (PRESETS, build_plan, checkerboard_partition, generation_Ts, gtr_plan, mar_plan,
                       mask_schedule, preset_names, split_counts)
from .cost import PlanCost, block_flops, format_flops, plan_cost
from .fts import fts_scores, fts_split, fts_top_k
from .noise import NoiseSource, image_seed, image_seeds
from .plan import Group, PlanError, SamplingPlan, Step
from .schedule import (COEF_NAMES, SpacedSchedule, cosine_betas, respace_timesteps, spaced_schedule,
                       step_table)

__all__ = [
    "PRESETS", "build_plan", "checkerboard_partition", "generation_Ts", "gtr_plan", "mar_plan",
    "mask_schedule", "preset_names", "split_counts",
    "PlanCost", "block_flops", "format_flops", "plan_cost",
    "fts_scores", "fts_split", "fts_top_k",
    "NoiseSource", "image_seed", "image_seeds",
    "Group", "PlanError", "SamplingPlan", "Step",
    "COEF_NAMES", "SpacedSchedule", "cosine_betas", "respace_timesteps", "spaced_schedule", "step_table",
]
