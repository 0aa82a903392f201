"""What a pipeline stage is: a plain function of a :class:`StageContext` that returns a typed
result, plus what defines its output (for its fingerprint) and which files it leaves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.provenance import fingerprint
from valign_ray.run_layout import RunLayout


@dataclass
class StageContext:
    """What stages share: the config, the run layout, results and fingerprints so far (this run's
    or, for skipped stages, the recorded ones), and the input-file hashes for the manifest."""

    cfg: PipelineConfig
    layout: RunLayout
    results: dict[str, Any] = field(default_factory=dict)  # summary section -> typed result
    fingerprints: dict[str, str] = field(default_factory=dict)
    input_files: dict[str, str] = field(default_factory=dict)

    def survey_table(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self.layout.survey_table(name))

    def weighted_respondents(self) -> pl.DataFrame:
        """The ingested respondents with the weights stage's ``weight`` column."""
        weights = pl.read_parquet(self.layout.weights)
        return self.survey_table("respondents").join(
            weights, on="respondent_id", how="left", maintain_order="left"
        )


@dataclass(frozen=True)
class Stage:
    name: str  # as printed and in wall_s / fingerprints
    section: str  # its key in summary.json
    run: Callable[[StageContext], Any]  # returns the typed result
    inputs: Callable[[StageContext], Any]  # JSON-able: what defines the output, besides upstream
    upstream: tuple[str, ...]  # stages whose outputs it reads
    outputs: Callable[[StageContext], list[Path]]  # files that must exist to skip it

    def fingerprint(self, ctx: StageContext) -> str:
        return fingerprint(
            {
                "stage": self.name,
                "inputs": self.inputs(ctx),
                "upstream": {u: ctx.fingerprints[u] for u in self.upstream},
            }
        )
