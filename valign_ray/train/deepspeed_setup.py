"""DeepSpeed config, optimizer and learning-rate schedule from the typed training config."""

from __future__ import annotations

import math
from typing import Any

from valign_ray.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config. fp32 on CPU; bf16 only where a GPU runs it."""
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": _zero(cfg),
        "bf16": {"enabled": cfg.precision == "bf16"},
        # torch's AdamW is passed in as a client optimizer: no JIT-built DeepSpeed op needed.
        "zero_allow_untested_optimizer": True,
        # ZeRO-Offload keeps torch's AdamW (run on the host's copy of the state) rather than
        # DeepSpeedCPUAdam, whose JIT-built op would differ numerically from the other paths.
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _zero(cfg: TrainConfig) -> dict[str, Any]:
    """ZeRO settings: the stage, plus host offload of the optimizer state (and with ``all`` of
    the ZeRO-3 parameter partitions). Pinned host memory speeds copies to and from a GPU."""
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    host = {"device": "cpu", "pin_memory": cfg.use_gpu}
    if cfg.offload in ("optimizer", "all"):
        zero["offload_optimizer"] = dict(host)
    if cfg.offload == "all":
        zero["offload_param"] = dict(host)
    return zero


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Any:
    """Multiplier of the peak learning rate at each step: linear warmup, then the schedule."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: Any, cfg: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and its warmup + decay schedule."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.schedule, warmup, total_steps)
    )
    return optimizer, scheduler
