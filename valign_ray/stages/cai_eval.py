"""The evaluation stage of ``valign cai``: the held-out evaluation of ``valign run`` (same data,
same metrics, :func:`valign_ray.stages.training.evaluate_models`) for the base, SL-CAI and RL-CAI
models (and the survey-aligned model when the run trained one); with ``implicit_reward``
feedback, how often the feedback labels agree with the held-out respondents' preferences."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.config_loader import to_dict
from valign_ray.results import CaiEvalResult
from valign_ray.stages.base import Stage, StageContext
from valign_ray.stages.cai_rl import feedback_labels, needs_train
from valign_ray.stages.training import base_model_path, eval_data, evaluate_models


def cai_models(ctx: StageContext) -> dict[str, Path]:
    """Model name -> folder, in the order the table shows them."""
    models = {"base": base_model_path(ctx)}
    if needs_train(ctx.cfg):
        models["aligned"] = ctx.layout.model
    models["sl_cai"] = ctx.layout.cai_dir("sl") / "model"
    models["rl_cai"] = ctx.layout.cai_dir("rl") / "model"
    return models


def feedback_agreement(ctx: StageContext, pairs: pl.DataFrame) -> dict[str, float]:
    """The implicit-reward labels of the held-out respondents' pairs (``chosen`` as answer A):
    the weighted share with label > 0.5 (the feedback prefers what the respondent chose), and
    the weighted mean label."""
    asked = pairs.select(
        pl.format("heldout:{}", pl.int_range(pl.len())).alias("pair_id"),
        pl.col("prompt").alias("question"),
        pl.col("chosen").alias("response_a"),
        pl.col("rejected").alias("response_b"),
    )
    labelled = feedback_labels(ctx, asked)
    w = pairs["weight"].to_numpy()
    label = labelled["label"].to_numpy()
    return {
        "n_pairs": float(pairs.height),
        "agreement": float(((label > 0.5) * w).sum() / w.sum()),
        "mean_label": float((label * w).sum() / w.sum()),
    }


def run_cai_eval(ctx: StageContext) -> CaiEvalResult:
    """Every CAI model on the held-out respondents (and unseen items when held out)."""
    models = evaluate_models(ctx, cai_models(ctx))
    agreement = None
    if needs_train(ctx.cfg) and ctx.cfg.data.answers == "ratings":
        seen = eval_data(ctx, "heldout_respondents")
        agreement = feedback_agreement(ctx, seen) if seen.height else None
    return CaiEvalResult(models=json.loads(json.dumps(models)), feedback_agreement=agreement)


def cai_eval_stage(cfg: PipelineConfig) -> Stage:
    upstream = ("datasets", "cai_sl", "cai_rl") + (("train",) if needs_train(cfg) else ())
    return Stage(
        "cai_eval",
        "cai_eval",
        run_cai_eval,
        lambda ctx: {
            "eval": to_dict(ctx.cfg.eval),
            "max_length": ctx.cfg.data.max_length,
            "min_group_n": ctx.cfg.report.min_group_n,
        },
        upstream,
        lambda ctx: [],
    )
