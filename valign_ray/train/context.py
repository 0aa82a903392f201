"""The few things a training loop needs from its runtime, so one loop runs with or without Ray.

``RayTrainContext`` (in :mod:`valign_ray.distributed.trainer`) implements this with Ray Train and
torch.distributed; :class:`LocalContext` is the single-process version used in tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class TrainContext(Protocol):
    rank: int
    world_size: int

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all workers (a new tensor; the input is unchanged)."""
        ...

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        """Publish metrics (and a checkpoint folder every rank wrote into) for this step."""
        ...

    def latest_checkpoint(self) -> Path | None:
        """Folder of the latest committed checkpoint to resume from, if any."""
        ...


class LocalContext:
    """One process, no Ray: reports are kept in memory (and checkpoints left where written)."""

    rank = 0
    world_size = 1

    def __init__(self, resume_from: Path | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self._resume_from = resume_from

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone()

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        self.reports.append({**metrics, "checkpoint": checkpoint_dir})

    def latest_checkpoint(self) -> Path | None:
        return self._resume_from
