"""The RL-CAI stage of ``valign cai``: K answers per prompt from the SL-CAI model (Ray Data
actors), paired; soft labels from the feedback (``cai.feedback.mode``); soft-label DPO or KTO
from the SL-CAI model with it as the reference -> ``cai/rl/model``.

The feedback functions (:mod:`valign_ray.cai.feedback`) run in this process on a loaded model;
the arithmetic of pairs and rows is :mod:`valign_ray.cai.rl`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.config_loader import to_dict
from valign_ray.methods import get_method
from valign_ray.provenance import file_hash
from valign_ray.results import CaiRlResult
from valign_ray.run_layout import write_parquet_atomic
from valign_ray.stages.base import Stage, StageContext
from valign_ray.stages.cai_sl import (
    TimedGenerate,
    load_cai_inputs,
    train_inputs,
    with_loss,
)
from valign_ray.stages.training import base_model_path


def rl_config(cfg: PipelineConfig, n_rows: int | None = None) -> PipelineConfig:
    """The run's config with the RL-CAI method (soft-label DPO, or KTO), ``cai.rl_epochs``
    passes, and, when ``n_rows`` training rows fill no global batch (``survey_items`` gives one
    pair per never-asked item), the per-worker batch cut to fit them."""
    if cfg.cai.rl_loss == "dpo":
        out = with_loss(cfg, "dpo", soft_labels=True, label_smoothing=0.0)
    else:
        out = with_loss(cfg, "kto")
    train = cfg.train
    changes: dict[str, int] = {}
    if cfg.cai.rl_epochs is not None:
        changes["epochs"] = cfg.cai.rl_epochs
    fit = max(1, (n_rows or 0) // (train.num_workers * train.grad_accum))
    if n_rows is not None and fit < train.batch_size:
        changes["batch_size"] = fit
    return dataclasses.replace(out, train=dataclasses.replace(train, **changes))


def label_pairs(
    fns: tuple[Any, Any],
    pairs: pl.DataFrame,
    cfg: PipelineConfig,
    models: dict[str, str],
    device: str,
) -> pl.DataFrame:
    """Labelled ``pairs`` (plain: runs in this process or in a Ray task): ``choice`` by
    ``models["feedback"]`` reading the comparison prompt; ``implicit_reward`` by
    ``models["policy"]`` against ``models["reference"]`` with ``loss.beta``. ``fns`` are
    (choice_labels, implicit_reward_labels), resolved by the caller."""
    from valign_ray.cai.constitution import load_constitution
    from valign_ray.cai.templates import load_templates
    from valign_ray.models import load_model, load_tokenizer

    choice_labels, implicit_reward_labels = fns
    fb = cfg.cai.feedback

    def model(key: str) -> Any:
        return load_model(models[key]).to(device).eval()

    if fb.mode == "implicit_reward":
        return implicit_reward_labels(
            pairs,
            model("policy"),
            model("reference"),
            load_tokenizer(models["reference"]),
            beta=cfg.loss.beta,
            batch_size=fb.batch_size,
            max_length=cfg.data.max_length,
        )
    return choice_labels(
        pairs,
        load_constitution(models["constitution"]),
        load_templates(cfg.cai.templates),
        model("feedback"),
        load_tokenizer(models["feedback"]),
        options=tuple(fb.options),
        principles_per_pair=fb.principles_per_pair,
        principle_sampling=cfg.cai.principle_sampling,
        seed=cfg.cai.sampling.seed,
        clamp=tuple(fb.clamp) if fb.clamp is not None else None,
        batch_size=fb.batch_size,
    )


def feedback_models(ctx: StageContext) -> dict[str, str]:
    """The folders the feedback reads (and the constitution file for ``choice``)."""
    from valign_ray.stages.cai_sl import constitution_path

    if needs_train(ctx.cfg):
        return {"policy": str(ctx.layout.model), "reference": str(base_model_path(ctx))}
    sl_model = ctx.layout.cai_dir("sl") / "model"
    return {
        "feedback": str(ctx.cfg.cai.feedback.model or sl_model),
        "constitution": str(constitution_path(ctx)),
    }


def feedback_labels(ctx: StageContext, pairs: pl.DataFrame) -> pl.DataFrame:
    """:func:`label_pairs` in this process on CPU; with ``train.use_gpu``, in a Ray task on
    one GPU (the driver of a GPU cluster may have none)."""
    from valign_ray.cai.feedback import choice_labels, implicit_reward_labels

    fns = (choice_labels, implicit_reward_labels)
    args = (fns, pairs, ctx.cfg, feedback_models(ctx))
    if not ctx.cfg.train.use_gpu:
        return label_pairs(*args, device="cpu")
    from valign_ray.distributed.remote import run_in_task

    return run_in_task(label_pairs, *args, device="cuda", num_gpus=1.0)


def _training_rows(cfg: PipelineConfig, labelled: pl.DataFrame, sl_model: Any) -> pl.DataFrame:
    """DPO or KTO rows with the SL-CAI model's reference log-probs (Ray Data actors)."""
    from valign_ray.cai.rl import dpo_rows, kto_rows
    from valign_ray.distributed.data import score_reference_ray
    from valign_ray.train.reference import reference_scoring

    if cfg.cai.rl_loss == "dpo":
        rows = dpo_rows(labelled)
    else:
        rows = kto_rows(labelled, seed=cfg.cai.sampling.seed)
    method = get_method(cfg.cai.rl_loss)
    scored = score_reference_ray(
        rows,
        str(sl_model.resolve()),
        method.reference,
        max_length=cfg.data.max_length,
        **reference_scoring(cfg),
    )
    return rows.hstack(scored.select(method.reference_columns))


def run_cai_rl(ctx: StageContext) -> CaiRlResult:
    """Sample, pair, label, train (module docstring)."""
    from valign_ray.cai.cards import write_cai_card
    from valign_ray.cai.rl import make_pairs, sample_answers
    from valign_ray.models import load_tokenizer
    from valign_ray.stages.train_folder import train_to_folder

    cfg, out = ctx.cfg, ctx.layout.cai_dir("rl")
    sl_model = ctx.layout.cai_dir("sl") / "model"
    generate_fn = TimedGenerate(cfg, sl_model)
    if cfg.cai.rl_candidates == "survey_items":
        samples, pairs, bad = _survey_item_pairs(ctx)
    else:
        prompts = pl.read_parquet(ctx.layout.cai_dir("sl") / "prompts.parquet")
        samples = sample_answers(
            prompts,
            load_tokenizer(sl_model),
            generate_fn,
            k=cfg.cai.samples_per_prompt,
            seed=cfg.cai.sampling.seed,
        )
        pairs, bad = make_pairs(samples)
    if pairs.height == 0:
        raise ValueError(
            f"RL-CAI: all {bad.height} pairs are identical or empty, so there is nothing to "
            "prefer; sample with cai.sampling.temperature > 0 or more cai.sampling.max_new_tokens"
        )
    t0 = time.perf_counter()
    labelled = feedback_labels(ctx, pairs)
    feedback_s = round(time.perf_counter() - t0, 2)
    rows = _training_rows(cfg, labelled, sl_model)
    for name, frame in (("samples", samples), ("pairs", labelled), ("quarantine", bad)):
        write_parquet_atomic(frame, out / f"{name}.parquet")
    write_parquet_atomic(rows, out / "rows.parquet")
    card = _rl_card(ctx, rows, samples, labelled, bad, generate_fn.seconds)
    write_cai_card(card, out)
    rl_cfg = rl_config(cfg, rows.height)
    trained = train_to_folder(
        ctx,
        rl_cfg,
        rows,
        model_path=sl_model,
        stage="cai_rl",
        folder=out / "model",
        checkpoint=out / "checkpoint",
        dataset_card={k: card[k] for k in ("name", "rows", "weight_total", "ess")},
    )
    return CaiRlResult(
        samples=samples.height,
        pairs=labelled.height,
        quarantined=card["quarantined"],
        feedback_mode=cfg.cai.feedback.mode,
        label_mean=card["labels"]["mean"],
        label_histogram=card["labels"]["histogram_10_bins"],
        principle_means=card["labels"]["per_principle_mean"],
        loss=cfg.cai.rl_loss,
        train_rows=rows.height,
        generation=card["generation"],
        feedback_s=feedback_s,
        train=trained.metrics,
        model_path=str(out / "model"),
    )


def _survey_item_pairs(ctx: StageContext) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``cai.rl_candidates: survey_items``: no samples; the candidate pairs of the items the
    survey training kept out (``data.holdout_items``; every prompt item when 0)."""
    from valign_ray.cai.rl import survey_item_pairs
    from valign_ray.data.splits import heldout_item_ids

    items = ctx.survey_table("items")
    prompt_ids = items.filter(pl.col("kind") == "prompt")["item_id"]
    data = ctx.cfg.data
    ids = prompt_ids.to_list()
    if data.holdout_items > 0:
        ids = heldout_item_ids(prompt_ids, data.holdout_items, data.split_seed)
        if not ids:
            raise ValueError(
                f"cai.rl_candidates=survey_items: data.holdout_items={data.holdout_items} "
                f"keeps none of the {prompt_ids.len()} prompt items out (data.split_seed="
                f"{data.split_seed}); raise data.holdout_items or try another data.split_seed"
            )
    pairs = survey_item_pairs(items, ctx.survey_table("candidates"), ids)
    samples = pl.DataFrame(schema={"prompt_id": pl.String, "completion_ids": pl.List(pl.Int64)})
    bad = pl.DataFrame(schema={"pair_id": pl.String, "reason": pl.String})
    return samples, pairs, bad


def _rl_card(
    ctx: StageContext,
    rows: pl.DataFrame,
    samples: pl.DataFrame,
    labelled: pl.DataFrame,
    bad: pl.DataFrame,
    seconds: float,
) -> dict[str, Any]:
    """RL-CAI's dataset card: counts, provenance, feedback settings, model fingerprints
    (generation and feedback), the label distribution and generation speed."""
    from valign_ray.cai.cards import cai_card, provenance
    from valign_ray.cai.rl import label_histogram, principle_means
    from valign_ray.cai.sl import generation_stats
    from valign_ray.train.reference import model_fingerprint

    cfg = ctx.cfg
    fingerprints = {"generation": model_fingerprint(ctx.layout.cai_dir("sl") / "model")}
    for role, path in feedback_models(ctx).items():
        if role != "constitution":
            fingerprints[role] = model_fingerprint(path)
    return cai_card(
        rows,
        f"cai-rl-{cfg.cai.rl_loss}",
        samples=samples.height,
        pairs=labelled.height,
        quarantined=_reasons(bad),
        **provenance(*load_cai_inputs(ctx)),
        sampling=to_dict(cfg.cai.sampling),
        feedback=to_dict(cfg.cai.feedback),
        models=fingerprints,
        labels={
            "mean": float(labelled["label"].mean()),
            "histogram_10_bins": label_histogram(labelled["label"]),
            "per_principle_mean": principle_means(labelled),
        },
        generation=generation_stats(
            samples.with_columns(pl.col("completion_ids").list.len().alias("n_tokens")),
            seconds,
        ),
    )


def _reasons(bad: pl.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in bad["reason"].value_counts(sort=True).iter_rows()}


def _cai_rl_inputs(ctx: StageContext) -> dict[str, Any]:
    cai = ctx.cfg.cai
    if cai.feedback.model is not None:
        ctx.input_files["cai.feedback.model"] = file_hash(
            cai.feedback.model, key="cai.feedback.model"
        )
    return {
        "cai": {k: to_dict(getattr(cai, k)) for k in ("feedback", "sampling")}
        | {"samples_per_prompt": cai.samples_per_prompt, "rl_loss": cai.rl_loss}
        | {"rl_candidates": cai.rl_candidates, "data": _candidate_items(ctx.cfg)},
        "feedback_model": ctx.input_files.get("cai.feedback.model"),
        **train_inputs(rl_config(ctx.cfg)),
    }


def _candidate_items(cfg: PipelineConfig) -> dict[str, Any] | None:
    """What picks the survey items RL-CAI pairs (``survey_items`` only)."""
    if cfg.cai.rl_candidates != "survey_items":
        return None
    return {"holdout_items": cfg.data.holdout_items, "split_seed": cfg.data.split_seed}


def cai_rl_stage(cfg: PipelineConfig) -> Stage:
    """The RL-CAI stage; with ``implicit_reward`` feedback it reads the train stage's model."""
    upstream = ("cai_sl", "model") + (("train",) if needs_train(cfg) else ())
    return Stage(
        "cai_rl",
        "cai_rl",
        run_cai_rl,
        _cai_rl_inputs,
        upstream,
        lambda ctx: [
            ctx.layout.cai_dir("rl") / "model" / "config.json",
            ctx.layout.cai_dir("rl") / "card.json",
        ],
    )


def needs_train(cfg: PipelineConfig) -> bool:
    """Whether ``valign cai`` must run the survey training (the implicit-reward policy)."""
    return cfg.cai.feedback.mode == "implicit_reward"
