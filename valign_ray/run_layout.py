"""Every path inside a run directory, owned by one object: :class:`RunLayout`.

Stages, sweeps, experiments and the report ask the layout where a file lives instead of
joining paths themselves. Outputs are written atomically (a temporary file, then a rename),
so an interrupted run never leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_parquet_atomic(frame: object, path: Path) -> None:
    """``frame.write_parquet`` through a temporary file of its own and a rename: concurrent
    writers of one file (two runs filling a shared cache entry) never mix their bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    frame.write_parquet(tmp)  # type: ignore[attr-defined]
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunLayout:
    """The files of one run under ``output_dir/name`` and the caches shared under
    ``output_dir/.cache``."""

    run_dir: Path
    output_dir: Path

    @classmethod
    def of(cls, output_dir: str | Path, name: str) -> RunLayout:
        return cls(Path(output_dir) / name, Path(output_dir))

    # -- top level
    @property
    def config_snapshot(self) -> Path:
        return self.run_dir / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def train_metrics(self) -> Path:
        return self.run_dir / "train_metrics.jsonl"

    @property
    def wandb_dir(self) -> Path:
        return self.run_dir / "wandb"

    @property
    def constitution(self) -> Path:
        return self.run_dir / "constitution.yaml"

    # -- survey
    @property
    def survey_dir(self) -> Path:
        return self.run_dir / "survey"

    @property
    def raw_survey_dir(self) -> Path:
        """Survey files written by a generator (synthetic), then ingested like any others."""
        return self.survey_dir / "raw"

    @property
    def truth(self) -> Path:
        return self.survey_dir / "truth.parquet"

    @property
    def polis_report(self) -> Path:
        return self.survey_dir / "polis_import.json"

    def survey_table(self, name: str) -> Path:
        """The canonical tables after ingestion: respondents, answers, items, candidates."""
        return self.survey_dir / "tables" / f"{name}.parquet"

    # -- weights
    @property
    def weights_dir(self) -> Path:
        return self.run_dir / "weights"

    @property
    def weight_diagnostics(self) -> Path:
        return self.weights_dir / "diagnostics.json"

    @property
    def weights(self) -> Path:
        return self.weights_dir / "weights.parquet"

    # -- datasets
    @property
    def datasets_dir(self) -> Path:
        return self.run_dir / "datasets"

    def answers_split(self, split: str) -> Path:
        return self.datasets_dir / f"answers_{split}.parquet"

    def rows_dir(self, method: str) -> Path:
        """``rows.parquet`` (exactly the rows training sees, before reference scoring) and the
        dataset card. A method named by a ``module:attr`` path gets a file-safe folder name."""
        return self.datasets_dir / method.replace(":", "_").replace("/", "_")

    def rows(self, method: str) -> Path:
        return self.rows_dir(method) / "rows.parquet"

    @property
    def eval_pairs(self) -> Path:
        return self.datasets_dir / "eval_pairs.parquet"

    # -- models and training
    @property
    def base_model(self) -> Path:
        return self.run_dir / "base_model"

    @property
    def model(self) -> Path:
        """The aligned model (Hugging Face folder)."""
        return self.run_dir / "model"

    @property
    def ray_train(self) -> Path:
        return self.run_dir / "ray_train"

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint"

    # -- Constitutional AI (valign cai)
    def cai_dir(self, stage: str) -> Path:
        """``cai/sl`` or ``cai/rl``: records, rows, card.json, card.md, model/, checkpoint/."""
        return self.run_dir / "cai" / stage

    # -- report
    @property
    def report_md(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"

    # -- shared caches
    @property
    def reference_cache_dir(self) -> Path:
        return self.output_dir / ".cache" / "reference"

    def reference_cache(self, key: str) -> Path:
        return self.reference_cache_dir / f"ref-{key}.parquet"

    # -- sweeps
    @property
    def sweep_dir(self) -> Path:
        return self.run_dir / "sweep"
