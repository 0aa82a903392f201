"""Checkpoints a run resumes from bit-exactly: DeepSpeed shards, per-rank RNG, the step.

Each rank writes, last, ``manifest_rank<r>.json``: the size of every file it wrote. A resume
takes the newest checkpoint whose manifests (one per rank of ``state.json``'s world size) all
match the files present (:func:`pick_intact_checkpoint`), so a checkpoint truncated in storage,
or one missing a rank's files, is passed over for the one before, with a message.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Iterable
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


MANIFEST = "manifest_rank{rank}.json"


def write_manifest(folder: Path, rank: int) -> Path:
    """Record the size of every file this rank wrote into ``folder`` (written last: a folder
    cut short before it has no manifest and fails :func:`checkpoint_problem`)."""
    files = {
        str(f.relative_to(folder)): f.stat().st_size
        for f in sorted(folder.rglob("*"))
        if f.is_file() and not f.name.startswith("manifest_rank")
    }
    path = folder / MANIFEST.format(rank=rank)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "files": files}, indent=1))
    tmp.rename(path)
    return path


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (a missing, short or unreadable file), or None."""
    try:
        state = json.loads((folder / "state.json").read_text())
        world_size = int(state["world_size"])
        manifests = [
            json.loads((folder / MANIFEST.format(rank=r)).read_text()) for r in range(world_size)
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable state.json and rank manifests ({type(exc).__name__}: {exc})"
    for m in manifests:
        for name, size in m["files"].items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def pick_intact_checkpoint(candidates: Iterable[Path], rank: int = 0) -> Path | None:
    """The first intact folder of ``candidates`` (newest first), or None to start afresh;
    rank 0 prints each one passed over and why."""
    damaged = 0
    for folder in candidates:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        damaged += 1
        if rank == 0:
            print(f"[train] checkpoint {folder} is damaged: {problem}; trying the one before")
    if damaged and rank == 0:
        print(f"[train] none of {damaged} checkpoint(s) is intact: training starts at step 0")
    return None


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
        state = {"step": step, "world_size": ctx.world_size}
        (folder / "state.json").write_text(json.dumps(state))
        if export:
            export_model(engine.module, job, folder / HF_EXPORT, tokenizer, metrics, state_dict)
    write_manifest(folder, ctx.rank)
    ctx.report(metrics, checkpoint_dir=folder)
