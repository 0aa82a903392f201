"""The few things a training loop needs from its runtime, so one loop runs with or without Ray.

``RayTrainContext`` (in :mod:`valign_ray.distributed.trainer`) implements this with Ray Train and
torch.distributed; :class:`LocalContext` is the single-process version used in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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

    def checkpoints(self) -> Iterable[Path]:
        """Folders of the committed checkpoints to resume from, newest first (the loop takes
        the first intact one: :func:`~valign_ray.train.checkpoints.pick_intact_checkpoint`)."""
        ...


class LocalContext:
    """One process, no Ray: reports are kept in memory (and checkpoints left where written)."""

    rank = 0
    world_size = 1

    def __init__(self, resume_from: Path | Sequence[Path] | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        if resume_from is None:
            resume_from = []
        self._resume_from = [resume_from] if isinstance(resume_from, Path) else list(resume_from)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone()

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        self.reports.append({**metrics, "checkpoint": checkpoint_dir})

    def checkpoints(self) -> list[Path]:
        return self._resume_from
