"""Weights & Biases from the training loop: rank 0 only, offline unless configured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from valign_ray.train.context import TrainContext
    from valign_ray.train.worker import TrainJob


def start_wandb(job: TrainJob, ctx: TrainContext, extra: dict[str, Any]) -> Any:
    """A W&B run on rank 0 (Train V2 ignores ``rank_zero_only``), or None when disabled.

    The config is the public one (no salt) plus ``extra`` (resolved loss numbers, steps, the
    run's manifest). Runs of one experiment share ``job.wandb_group`` (or ``WANDB_RUN_GROUP``).
    """
    wcfg = job.config.wandb
    if ctx.rank != 0 or not wcfg.enabled or wcfg.mode == "disabled":
        return None
    import wandb

    from valign_ray.config import public_config_dict

    if job.wandb_dir:
        Path(job.wandb_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=wcfg.project,
        entity=wcfg.entity,
        mode=wcfg.mode,
        dir=job.wandb_dir,
        name=job.config.name,
        group=job.wandb_group or os.environ.get("WANDB_RUN_GROUP"),
        config={**public_config_dict(job.config), **extra},
    )
