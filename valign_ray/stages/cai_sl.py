"""The SL-CAI stage of ``valign cai``: prompts, answers, critique-revision rounds (Ray Data
actors), SFT rows and the weighted SFT run (the engine's ``sft`` method) -> ``cai/sl/model``.

The arithmetic is :mod:`valign_ray.cai.sl`; this module wires it to the run: where prompts,
constitution and models come from, Ray Data generation, training, the card.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.config_loader import to_dict
from valign_ray.provenance import file_hash
from valign_ray.results import CaiSlResult
from valign_ray.run_layout import write_parquet_atomic
from valign_ray.stages.base import Stage, StageContext
from valign_ray.stages.training import STEERING_KEYS, base_model_path

# CAI keys that change only RL-CAI (or its evaluation), not SL-CAI's output.
RL_KEYS = ("feedback", "samples_per_prompt", "rl_loss", "rl_candidates", "rl_epochs")


def constitution_path(ctx: StageContext) -> Path:
    """``cai.constitution``, or the constitution stage's file."""
    return Path(ctx.cfg.cai.constitution or ctx.layout.constitution)


def load_cai_inputs(ctx: StageContext) -> tuple[Any, Any]:
    """The constitution and templates, checked (their errors name the file and the fix)."""
    from valign_ray.cai.constitution import load_constitution
    from valign_ray.cai.templates import load_templates

    return load_constitution(constitution_path(ctx)), load_templates(ctx.cfg.cai.templates)


class TimedGenerate:
    """``generate_fn`` on Ray Data actors holding ``model_path``; counts the wall time spent."""

    def __init__(self, cfg: PipelineConfig, model_path: Path) -> None:
        self.cfg, self.model_path, self.seconds = cfg, str(model_path.resolve()), 0.0

    def __call__(self, rows: pl.DataFrame) -> pl.DataFrame:
        from valign_ray.distributed.generation import generate_ray
        from valign_ray.distributed.session import init_ray

        init_ray(self.cfg.ray)
        t0 = time.perf_counter()
        out = generate_ray(
            rows,
            self.model_path,
            self.cfg.cai.sampling,
            batch_size=self.cfg.cai.batch_size,
            replicas=self.cfg.cai.replicas,
            gpus_per_replica=1.0 if self.cfg.train.use_gpu else 0.0,
        )
        self.seconds += time.perf_counter() - t0
        return out


def with_loss(cfg: PipelineConfig, name: str, **loss: Any) -> PipelineConfig:
    """``cfg`` training method ``name`` (CAI trains SFT, DPO or KTO whatever ``loss.name``
    the run's own survey training uses); lambdas reset where ``auto`` means nothing."""
    if name != "kto":
        loss = {"lambda_d": 1.0, "lambda_u": 1.0, **loss}
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, name=name, **loss))


def _load_prompts(ctx: StageContext) -> tuple[pl.DataFrame, pl.DataFrame]:
    from valign_ray.cai.prompts import load_prompts

    p = ctx.cfg.cai.prompts
    items = ctx.survey_table("items") if p.survey_items else None
    return load_prompts(items, p.file, p.hh_rlhf, p.hh_rlhf_max)


def run_cai_sl(ctx: StageContext) -> CaiSlResult:
    """Answer, critique and revise (``cai.rounds`` rounds) every prompt with the base model;
    train it with weighted SFT on (prompt, final revision)."""
    from valign_ray.cai.cards import cai_card, provenance, write_cai_card
    from valign_ray.cai.sl import generation_stats, sft_rows, sl_cai_records
    from valign_ray.models import load_tokenizer
    from valign_ray.stages.train_folder import train_to_folder
    from valign_ray.train.reference import model_fingerprint

    cfg, out = ctx.cfg, ctx.layout.cai_dir("sl")
    constitution, templates = load_cai_inputs(ctx)
    prompts, bad_prompts = _load_prompts(ctx)
    base = base_model_path(ctx)
    generate_fn = TimedGenerate(cfg, base)
    records = sl_cai_records(
        prompts,
        constitution,
        templates,
        load_tokenizer(base),
        generate_fn,
        rounds=cfg.cai.rounds,
        principle_sampling=cfg.cai.principle_sampling,
        seed=cfg.cai.sampling.seed,
        model_fingerprint=model_fingerprint(base),
    )
    rows, bad_rows = sft_rows(prompts, records, constitution, cfg.cai.sft_weight)
    if rows.height == 0:
        raise ValueError(
            f"SL-CAI: every final revision of {prompts.height} prompts is empty; raise "
            "cai.sampling.max_new_tokens or check cai.sampling.stop"
        )
    for name, frame in (
        ("prompts", prompts),
        ("records", records),
        ("rows", rows),
        ("quarantine", _quarantine(bad_prompts, bad_rows)),
    ):
        write_parquet_atomic(frame, out / f"{name}.parquet")
    quarantined = _quarantine(bad_prompts, bad_rows)["reason"].value_counts(sort=True)
    card = cai_card(
        rows,
        "cai-sl",
        sources=_counts(prompts["source"]),
        quarantined={str(k): int(v) for k, v in quarantined.iter_rows()},
        **provenance(constitution, templates),
        sampling=to_dict(cfg.cai.sampling),
        rounds=cfg.cai.rounds,
        principle_sampling=cfg.cai.principle_sampling,
        sft_weight=cfg.cai.sft_weight,
        models={"generation": str(base), "generation_fingerprint": model_fingerprint(base)},
        records=_counts(records["kind"]),
        generation=generation_stats(records, generate_fn.seconds),
    )
    write_cai_card(card, out)
    trained = train_to_folder(
        ctx,
        with_loss(cfg, "sft"),
        rows,
        model_path=base,
        stage="cai_sl",
        folder=out / "model",
        checkpoint=out / "checkpoint",
        dataset_card={k: card[k] for k in ("name", "rows", "weight_total", "ess")},
    )
    return CaiSlResult(
        prompts=card["sources"],
        quarantined=card["quarantined"],
        records=card["records"],
        sft_rows=rows.height,
        generation=card["generation"],
        train=trained.metrics,
        model_path=str(out / "model"),
    )


def _counts(col: pl.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in col.value_counts(sort=True).iter_rows()}


def _quarantine(bad_prompts: pl.DataFrame, bad_rows: pl.DataFrame) -> pl.DataFrame:
    """Prompt rows (source, line, reason) and SFT rows (prompt_id, reason), in one table."""
    return pl.concat(
        [
            bad_prompts.select(
                (pl.col("source") + ":" + pl.col("line").cast(pl.String)).alias("where"),
                "reason",
            ),
            bad_rows.select(pl.col("prompt_id").alias("where"), "reason"),
        ]
    )


def train_inputs(cfg: PipelineConfig) -> dict[str, Any]:
    """What changes a CAI training run: the train section (not its steering keys), LoRA,
    the tokenised length and the loss numbers."""
    train = {k: v for k, v in to_dict(cfg.train).items() if k not in STEERING_KEYS}
    return {
        "train": train,
        "lora": to_dict(cfg.model.lora),
        "max_length": cfg.data.max_length,
        "loss": to_dict(cfg.loss),
    }


def _cai_sl_inputs(ctx: StageContext) -> dict[str, Any]:
    cai = ctx.cfg.cai
    files = {"cai.templates": cai.templates, "cai.prompts.file": cai.prompts.file}
    files |= {"cai.prompts.hh_rlhf": cai.prompts.hh_rlhf, "cai.constitution": cai.constitution}
    for key, path in files.items():
        if path is not None:
            ctx.input_files[key] = file_hash(path, key=key)
    return {
        "cai": {k: v for k, v in to_dict(cai).items() if k not in RL_KEYS},
        "files": {k: ctx.input_files[k] for k, p in files.items() if p is not None},
        **train_inputs(ctx.cfg),
    }


CAI_SL = Stage(
    "cai_sl",
    "cai_sl",
    run_cai_sl,
    _cai_sl_inputs,
    ("survey", "constitution", "model"),
    lambda ctx: [
        ctx.layout.cai_dir("sl") / "model" / "config.json",
        ctx.layout.cai_dir("sl") / "card.json",
    ],
)
