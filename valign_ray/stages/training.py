"""The training stages: datasets (Ray Data), base model, reference log-probs (Ray Data actors,
cached), training (Ray Train + DeepSpeed) and the held-out evaluation.

What differs between methods comes from the method's :class:`~valign_ray.methods.base.Method`:
no stage branches on a method's name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.config_loader import to_dict
from valign_ray.methods import get_method
from valign_ray.provenance import file_hash
from valign_ray.results import (
    DatasetsResult,
    EvalResult,
    ModelResult,
    ReferenceResult,
    TrainResult,
)
from valign_ray.run_layout import write_parquet_atomic
from valign_ray.stages.base import Stage, StageContext
from valign_ray.stages.train_folder import train_to_folder

# Keys that only steer how a run is supervised: they may change between a run and its resume.
STEERING_KEYS = ("max_failures", "report_every", "checkpoint_every")


def run_datasets(ctx: StageContext) -> DatasetsResult:
    """Split by respondent and item; build the method's training rows (Ray Data); cards."""
    from valign_ray.data import builders
    from valign_ray.data.cards import dataset_card, write_card
    from valign_ray.data.splits import split_respondents_items
    from valign_ray.distributed.data import map_answers_ray
    from valign_ray.distributed.session import init_ray
    from valign_ray.methods.base import RowInputs

    cfg, layout = ctx.cfg, ctx.layout
    method = get_method(cfg.loss.name)
    init_ray(cfg.ray)
    splits = split_respondents_items(
        ctx.survey_table("answers"),
        holdout_respondents=cfg.data.holdout_respondents,
        holdout_items=cfg.data.holdout_items,
        seed=cfg.data.split_seed,
    )
    for name, part in splits.items():
        write_parquet_atomic(part, layout.answers_split(name))
    inputs = RowInputs(
        cfg=cfg,
        answers=splits["train"],
        items=ctx.survey_table("items"),
        candidates=ctx.survey_table("candidates"),
        respondents=ctx.weighted_respondents(),
        map_answers=map_answers_ray(layout.answers_split("train")),
    )
    rows = method.build_rows(inputs)
    write_parquet_atomic(rows, layout.rows(method.name))  # exactly the rows training sees
    card = dataset_card(rows, f"{method.name}-train", label_column=method.label_column)
    write_card(card, layout.rows_dir(method.name))
    eval_pairs = None
    if cfg.data.answers == "ratings":
        heldout = builders.build_dpo_pairs(
            splits["heldout_respondents"], **inputs.lookups, respondent_id=True
        )
        write_parquet_atomic(heldout, layout.eval_pairs)
        eval_pairs = heldout.height
    return DatasetsResult(
        method=method.name,
        train_rows=rows.height,
        train_ess=card["ess"],
        answers={k: v.height for k, v in splits.items()},
        eval_pairs=eval_pairs,
    )


def _datasets_inputs(ctx: StageContext) -> dict[str, Any]:
    method = get_method(ctx.cfg.loss.name)
    return {
        "data": to_dict(ctx.cfg.data),
        "method": method.name,
        "loss": {k: to_dict(getattr(ctx.cfg.loss, k)) for k in method.data_keys},
    }


def _datasets_outputs(ctx: StageContext) -> list[Path]:
    out = [ctx.layout.rows(get_method(ctx.cfg.loss.name).name), ctx.layout.answers_split("train")]
    return out + ([ctx.layout.eval_pairs] if ctx.cfg.data.answers == "ratings" else [])


def base_model_path(ctx: StageContext) -> Path:
    path = ctx.cfg.model.path
    return Path(path) if path is not None else ctx.layout.base_model


def run_model(ctx: StageContext) -> ModelResult:
    """The base model: a local folder, or the tiny one built from the survey's own text and
    the CAI templates (so the requests it will be sent tokenise as words, not bytes)."""
    from valign_ray.cai.templates import load_templates
    from valign_ray.models import build_tiny_model, count_parameters, load_model

    cfg = ctx.cfg.model
    path = base_model_path(ctx)
    if cfg.path is None:
        texts = (
            ctx.survey_table("items")["text"].to_list()
            + ctx.survey_table("candidates")["text"].to_list()
            + load_templates(ctx.cfg.cai.templates).literal_texts()
        )
        build_tiny_model(path, texts, cfg.tiny)
    n = count_parameters(load_model(path))
    print(f"base model {path}: {n / 1e6:.2f} M parameters", flush=True)
    return ModelResult(path=str(path), parameters=n)


def _model_inputs(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.model
    if cfg.path is None:  # built from the survey text (the survey stage is upstream)
        ctx.input_files["cai.templates"] = file_hash(ctx.cfg.cai.templates, key="cai.templates")
        return {"tiny": to_dict(cfg.tiny), "templates": ctx.input_files["cai.templates"]}
    ctx.input_files["model.path"] = file_hash(cfg.path, key="model.path")
    return {"path": ctx.input_files["model.path"]}


def reference_key(ctx: StageContext, rows: pl.DataFrame) -> str:
    """Keyed on the texts scored and how prompts are formatted (the tokenizer's chat template),
    not on weights or groups: weighted and unweighted runs (and every sweep trial) share one
    entry."""
    from valign_ray.models import load_tokenizer
    from valign_ray.train.logprobs import prompt_format_id
    from valign_ray.train.reference import (
        cache_key,
        frame_fingerprint,
        model_fingerprint,
        reference_dtype,
    )

    method = get_method(ctx.cfg.loss.name)
    texts = sorted({"prompt", *(c for c, _ in method.reference)})
    return cache_key(
        model_fingerprint(base_model_path(ctx)),
        frame_fingerprint(rows.select(texts)),
        method.name,
        ctx.cfg.data.max_length,
        prompt_format=prompt_format_id(load_tokenizer(base_model_path(ctx))),
        dtype=reference_dtype(ctx.cfg),
    )


def run_reference(ctx: StageContext) -> ReferenceResult:
    """Reference log-probs by Ray Data batch inference, cached by (model, texts, tokenisation)."""
    from valign_ray.distributed.data import score_reference_ray
    from valign_ray.distributed.session import init_ray
    from valign_ray.train.reference import reference_scoring

    method = get_method(ctx.cfg.loss.name)
    if not method.reference:
        return ReferenceResult(cache="not needed")
    rows = pl.read_parquet(ctx.layout.rows(method.name))
    key = reference_key(ctx, rows)
    path = ctx.layout.reference_cache(key)
    hit = path.exists()
    if not hit:
        init_ray(ctx.cfg.ray)  # also when the datasets stage was skipped (a rerun)
        scored = score_reference_ray(
            rows,
            str(base_model_path(ctx)),
            method.reference,
            max_length=ctx.cfg.data.max_length,
            **reference_scoring(ctx.cfg),
        )
        write_parquet_atomic(scored.select(method.reference_columns), path)
    print(f"reference cache {'hit' if hit else 'miss (computed)'}: {path.name}", flush=True)
    return ReferenceResult(cache="hit" if hit else "miss", key=key)


def scored_rows(ctx: StageContext) -> pl.DataFrame:
    """The training rows with their reference columns (same texts, same order: the cached
    columns line up row by row)."""
    method = get_method(ctx.cfg.loss.name)
    rows = pl.read_parquet(ctx.layout.rows(method.name))
    ref = ctx.results["reference"]
    if ref.key is None:
        return rows
    return rows.hstack(pl.read_parquet(ctx.layout.reference_cache(ref.key)))


def _reference_outputs(ctx: StageContext) -> list[Path]:
    ref = ctx.results.get("reference")
    return [ctx.layout.reference_cache(ref.key)] if ref is not None and ref.key else []


def run_train(ctx: StageContext) -> TrainResult:
    """Ray Train + DeepSpeed; the final checkpoint's Hugging Face export becomes ``model/``."""
    return train_to_folder(
        ctx,
        ctx.cfg,
        scored_rows(ctx),
        model_path=base_model_path(ctx),
        stage="train",
        folder=ctx.layout.model,
        checkpoint=ctx.layout.checkpoint,
        dataset_card=ctx.results["datasets"].to_json(),
    )


def _train_inputs(ctx: StageContext) -> dict[str, Any]:
    train = {k: v for k, v in to_dict(ctx.cfg.train).items() if k not in STEERING_KEYS}
    return {"train": train, "loss": to_dict(ctx.cfg.loss), "lora": to_dict(ctx.cfg.model.lora)}


def run_eval(ctx: StageContext) -> EvalResult:
    """Held-out respondents: weighted preference accuracy and margin (or Likert A per group),
    with A, skill over indifference and majority agreement, base vs aligned. With
    ``data.holdout_items > 0``, the same for the held-out respondents' answers on the items
    training never saw, under ``unseen_items``: seen and unseen items are reported apart.
    Ratings runs add ``preference_accuracy_lo`` / ``_hi`` from a respondent bootstrap of the
    held-out respondents, re-weighted per replicate (:mod:`valign_ray.eval.respondent_bootstrap`,
    ``eval.bootstrap`` replicates)."""
    models = evaluate_models(ctx, {"base": base_model_path(ctx), "aligned": ctx.layout.model})
    return EvalResult(models=json.loads(json.dumps(models)))


def evaluate_models(ctx: StageContext, paths: dict[str, Path]) -> dict[str, Any]:
    """The held-out evaluation of each named model folder (the eval stage's, and the CAI
    stage's for its models): metrics on the trained items and, with ``data.holdout_items``, on
    the unseen ones; groups under ``report.min_group_n`` marked; the respondent-bootstrap
    interval of ratings runs. The tokenizer is the base model's (every model shares it)."""
    from valign_ray.eval.small_groups import group_sizes, mark_small_groups
    from valign_ray.models import load_model, load_tokenizer

    tok = load_tokenizer(base_model_path(ctx))
    seen = eval_data(ctx, "heldout_respondents")
    unseen = eval_data(ctx, "heldout_both") if ctx.cfg.data.holdout_items > 0 else None
    lookups = {
        "items": ctx.survey_table("items"),
        "respondents": ctx.weighted_respondents(),
        "positions": likert_positions(ctx),
    }
    # Per-group metrics of groups under report.min_group_n are marked (eval/small_groups.py).
    sizes = {
        split: group_sizes(
            pl.read_parquet(ctx.layout.answers_split(split)),
            lookups["respondents"],
            ctx.cfg.data.group_column,
        )
        for split in ("heldout_respondents", "heldout_both")
        if split == "heldout_respondents" or unseen is not None
    }
    min_n = ctx.cfg.report.min_group_n
    models: dict[str, Any] = {}
    scored = {}
    for name, path in paths.items():
        model, frames = load_model(path), []
        metrics = evaluate_model(ctx.cfg, model, tok, seen, **lookups, scored=frames)
        models[name] = mark_small_groups(metrics, sizes["heldout_respondents"], min_n)
        scored |= {name: frames[0]} if frames else {}
        if unseen is not None:
            metrics = evaluate_model(ctx.cfg, model, tok, unseen, **lookups)
            models[name]["unseen_items"] = mark_small_groups(metrics, sizes["heldout_both"], min_n)
    if scored and ctx.cfg.eval.bootstrap > 0:
        from valign_ray.eval.respondent_bootstrap import add_intervals

        ev = ctx.cfg.eval
        add_intervals(
            models,
            scored,
            lookups["respondents"],
            ctx.cfg.weighting,
            n_boot=ev.bootstrap,
            seed=ev.bootstrap_seed,
        )
    return models


def eval_data(ctx: StageContext, split: str) -> pl.DataFrame:
    """What a split is scored on: its Likert answers, or the pairs of its ratings and choices
    (the held-out respondents' pairs were written by the datasets stage)."""
    answers = pl.read_parquet(ctx.layout.answers_split(split))
    if ctx.cfg.data.answers == "likert":
        return answers
    if split == "heldout_respondents" and ctx.layout.eval_pairs.exists():
        pairs = pl.read_parquet(ctx.layout.eval_pairs)
        if "respondent_id" in pairs.columns:  # older runs wrote them without: rebuilt below
            return pairs
    from valign_ray.data.builders import build_dpo_pairs

    return build_dpo_pairs(
        answers,
        ctx.survey_table("items"),
        ctx.survey_table("candidates"),
        ctx.weighted_respondents(),
        group_column=ctx.cfg.data.group_column,
        respondent_id=True,
    )


def likert_positions(ctx: StageContext) -> dict[str, tuple[float, ...]]:
    """The instrument's option positions (survey files only; other sources use code order)."""
    if ctx.cfg.survey.source != "files" or ctx.cfg.data.answers != "likert":
        return {}
    from valign_ray.survey.instrument import load_instrument

    return load_instrument(ctx.cfg.survey.files.instrument).option_positions()


def evaluate_model(
    cfg: PipelineConfig,
    model: Any,
    tokenizer: Any,
    data: pl.DataFrame,
    *,
    items: pl.DataFrame,
    respondents: pl.DataFrame,
    positions: dict[str, tuple[float, ...]],
    scored: list[pl.DataFrame] | None = None,
) -> dict[str, Any]:
    """One model on one split's :func:`eval_data`; an empty split says so (``n_pairs`` or
    ``n_answers`` 0) instead of failing, since few items or respondents may leave none.
    ``scored`` (ratings): the model's per-pair scores are appended to it, for the bootstrap."""
    from valign_ray.eval.heldout import pair_metrics, score_pairs

    if cfg.data.answers == "ratings":
        if data.height == 0:
            return {"n_pairs": 0}
        frame = score_pairs(
            model, tokenizer, data, max_length=cfg.data.max_length, batch_size=cfg.eval.batch_size
        )
        if scored is not None:
            scored.append(frame)
        return pair_metrics(frame)
    from valign_ray.data.likert import POLIS_OPTIONS, likert_answers
    from valign_ray.eval.likert import evaluate_likert

    options = dict(cfg.data.likert_options or POLIS_OPTIONS)
    if likert_answers(data, options)[0].height == 0:
        return {"n_answers": 0}
    return evaluate_likert(
        model,
        tokenizer,
        items,
        data,
        respondents,
        options=options,
        group_column=cfg.data.group_column,
        max_length=cfg.data.max_length,
        positions=positions,
    )


DATASETS = Stage(
    "datasets", "datasets", run_datasets, _datasets_inputs, ("weights",), _datasets_outputs
)
MODEL = Stage(
    "model",
    "model",
    run_model,
    _model_inputs,
    ("survey",),
    lambda ctx: [base_model_path(ctx) / "config.json"],
)
REFERENCE = Stage(
    "reference",
    "reference",
    run_reference,
    lambda ctx: {"max_length": ctx.cfg.data.max_length, "method": ctx.cfg.loss.name},
    ("datasets", "model"),
    _reference_outputs,
)
TRAIN = Stage(
    "train",
    "train",
    run_train,
    _train_inputs,
    ("datasets", "model", "reference"),
    lambda ctx: [ctx.layout.model / "config.json"],
)
EVAL = Stage(
    "eval",
    "eval",
    run_eval,
    lambda ctx: {
        "eval": to_dict(ctx.cfg.eval),
        "max_length": ctx.cfg.data.max_length,
        "min_group_n": ctx.cfg.report.min_group_n,
    },
    ("train", "datasets"),
    lambda ctx: [],
)
