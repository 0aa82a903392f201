"""One training run of a stage: Ray Train + DeepSpeed on given rows and a config, the final
checkpoint's Hugging Face export copied into a folder. The train stage calls it with the run's
rows (``model/``); the CAI stages with their SFT, DPO or KTO rows (``cai/sl/model``,
``cai/rl/model``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.results import TrainResult
from valign_ray.stages.base import StageContext


def _weighting_json(ctx: StageContext) -> dict[str, Any] | None:
    """The weights stage's summary (cap used, margin misses): a run that accepted a binding
    cap says so in W&B too."""
    from valign_ray.results import result_to_json

    result = ctx.results.get("weighting")
    return None if result is None else result_to_json(result)


def train_to_folder(
    ctx: StageContext,
    cfg: PipelineConfig,
    rows: pl.DataFrame,
    *,
    model_path: Path,
    stage: str,
    folder: Path,
    checkpoint: Path,
    dataset_card: dict[str, Any],
) -> TrainResult:
    """Ray Train + DeepSpeed on ``rows`` with ``cfg``'s method, from ``model_path``; the final
    checkpoint goes to ``checkpoint`` and its Hugging Face export to ``folder`` (the train
    stage's ``model/``, or a CAI stage's)."""
    from valign_ray.distributed.session import init_ray
    from valign_ray.distributed.trainer import fit
    from valign_ray.provenance import manifest
    from valign_ray.train.worker import HF_EXPORT, TrainJob

    layout = ctx.layout
    job = TrainJob(
        config=cfg,
        model_path=str(model_path.resolve()),
        wandb_dir=str(layout.wandb_dir.resolve()),
        metrics_path=str((folder.parent / "train_metrics.jsonl").resolve()),
        dataset_card=dataset_card,
        manifest=manifest(ctx.input_files),
        weighting=_weighting_json(ctx),
        hidden_groups=_small_training_groups(ctx),
    )
    # Same inputs -> same name -> Ray Train resumes an interrupted run from its latest
    # checkpoint; anything different starts afresh beside it.
    name = f"{stage}-{ctx.fingerprints[stage][:10]}"
    print(f"training run {name} (rerun the same command to resume it)", flush=True)
    # A resumed run skips the stages that started Ray: without this, the trainer would start
    # a default Ray (ignoring ray.address, ray.num_cpus and the workers' environment).
    init_ray(cfg.ray)
    result = fit(job, rows, storage_path=layout.ray_train, name=name)
    shutil.rmtree(checkpoint, ignore_errors=True)
    result.checkpoint.to_directory(str(checkpoint))
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(checkpoint / HF_EXPORT, folder)
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    return TrainResult(metrics=metrics, model_path=str(folder))


def _small_training_groups(ctx: StageContext) -> tuple[str, ...]:
    """Groups with fewer training respondents than ``report.min_group_n`` (no per-group
    training metrics in W&B or the metrics file for them: eval/small_groups.py)."""
    from valign_ray.eval.small_groups import group_sizes

    train = pl.read_parquet(ctx.layout.answers_split("train"))
    sizes = group_sizes(train, ctx.weighted_respondents(), ctx.cfg.data.group_column)
    return tuple(g for g, n in sizes.items() if n < ctx.cfg.report.min_group_n)
