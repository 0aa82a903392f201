"""Checkpoints a run resumes from bit-exactly: DeepSpeed shards, per-rank RNG, the step."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from valign_ray.train.export import HF_EXPORT, export_model

if TYPE_CHECKING:
    from valign_ray.train.context import TrainContext
    from valign_ray.train.worker import TrainJob


def rng_state() -> dict[str, Any]:
    """Every RNG a step draws from (dropout, data order): resumed runs must replay them."""
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "py": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["py"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(engine: Any, folder: Path, rank: int) -> int:
    """Restore the engine and this rank's RNG from ``folder``; returns the step to resume at."""
    import torch

    engine.load_checkpoint(str(folder), tag="ds")
    set_rng_state(torch.load(folder / f"rng_rank{rank}.pt", weights_only=False))
    return int(json.loads((folder / "state.json").read_text())["step"])


def save_checkpoint(
    engine: Any,
    ctx: TrainContext,
    step: int,
    metrics: dict[str, float],
    *,
    export: bool,
    tokenizer: Any,
    job: TrainJob,
) -> None:
    """Every rank writes its DeepSpeed shards and RNG state; rank 0 adds the step (and, at the
    end, the Hugging Face export). Ray merges the ranks' folders into one checkpoint."""
    import torch

    folder = Path(tempfile.mkdtemp(prefix="valign-ckpt-"))
    engine.save_checkpoint(str(folder), tag="ds")
    torch.save(rng_state(), folder / f"rng_rank{ctx.rank}.pt")
    state_dict = None
    if export and job.config.train.zero_stage == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()  # every rank must call it
    if ctx.rank == 0:
        (folder / "state.json").write_text(json.dumps({"step": step}))
        if export:
            export_model(engine.module, job, folder / HF_EXPORT, tokenizer, metrics, state_dict)
    ctx.report(metrics, checkpoint_dir=folder)
