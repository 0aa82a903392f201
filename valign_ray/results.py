"""Typed stage results, and ``summary.json`` serialised from them and read back into them.

Each stage of :mod:`valign_ray.pipeline` returns one of these dataclasses. ``summary.json``
keeps its historical keys (``survey``, ``weighting``, ``constitution``, ``datasets``,
``model``, ``reference``, ``train``, ``eval``, ``wall_s``) plus ``manifest`` and
``fingerprints``, and ``cai`` (``sl``, ``rl``, ``eval``: the ``valign cai`` stages); reading it
back is strict: an unknown key is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import polars as pl

    from valign_ray.config import PipelineConfig
    from valign_ray.run_layout import RunLayout


class SummaryError(ValueError):
    """``summary.json`` does not match the typed results (a key unknown or missing)."""


def _plain(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SummaryError(
            f"summary.json {where}: unknown key(s) {unknown}; known: {sorted(names)}"
        )
    try:
        return cls(**data)
    except TypeError as exc:
        raise SummaryError(f"summary.json {where}: {exc}") from None


@dataclass(frozen=True)
class SurveyResult:
    """Ingestion counts per file role (rows in, kept, quarantined, by reason), or an import
    report (Polis)."""

    source: str
    counts: dict[str, dict[str, Any]] | None = None
    report: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        # Historical shape: {role: counts} for files, {"source", "report"} for an import.
        if self.report is not None:
            return {"source": self.source, "report": self.report}
        return {"source": self.source, **(self.counts or {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SurveyResult:
        data = dict(data)
        source = data.pop("source", "files")
        if "report" in data:
            return cls(source=source, report=data["report"])
        return cls(source=source, counts=data)


@dataclass(frozen=True)
class WeightingResult:
    method: str  # "raking", "opinion_groups" or "none"
    n: int
    ess: float
    deff: float | None = None
    weight_min: float | None = None
    weight_max: float | None = None
    converged: bool | None = None  # every margin within weighting.tol
    max_margin_error: float | None = None  # max |weighted share - target|
    trim_max: float | None = None  # the cap used (raise_cap may have raised it)
    cap_binding: bool | None = None  # the cap held and the margins did not (accept)
    on_cap_binding: str | None = None  # the policy that decided
    margin_errors: dict[str, float] | None = None  # "variable=category": share - target, if off
    notes: list[str] | None = None  # renormalised margins, a raised cap


@dataclass(frozen=True)
class ConstitutionResult:
    principles: int
    group_column: str | None = None
    groups: list[str] | None = None
    skipped: str | None = None  # why no constitution was built


@dataclass(frozen=True)
class DatasetsResult:
    method: str
    train_rows: int
    train_ess: float
    answers: dict[str, int]  # rows per split (train, heldout_respondents, ...)
    eval_pairs: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "train_rows": self.train_rows}
        out["train_ess"] = self.train_ess
        out.update({f"answers_{k}": v for k, v in self.answers.items()})
        if self.eval_pairs is not None:
            out["eval_pairs"] = self.eval_pairs
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetsResult:
        data = dict(data)
        answers = {
            k[len("answers_") :]: data.pop(k) for k in list(data) if k.startswith("answers_")
        }
        return _build(cls, {**data, "answers": answers}, "datasets")


@dataclass(frozen=True)
class ModelResult:
    path: str  # the base model folder
    parameters: int


@dataclass(frozen=True)
class ReferenceResult:
    cache: str  # "hit", "miss" or "not needed"
    key: str | None = None


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]  # the final step's metrics
    model_path: str | None = None  # the aligned model folder

    def to_json(self) -> dict[str, Any]:
        return {**self.metrics, **({"model_path": self.model_path} if self.model_path else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        data = dict(data)
        path = data.pop("model_path", None)
        return cls(metrics=data, model_path=path)


@dataclass(frozen=True)
class EvalResult:
    """Per model ("base", "aligned", ...), its held-out metrics (see eval/report.py)."""

    models: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return dict(self.models)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        return cls(models=dict(data))


@dataclass(frozen=True)
class CaiSlResult:
    """SL-CAI: prompts per source, quarantined rows, records, SFT rows, generation speed."""

    prompts: dict[str, int]  # prompts per source (survey, file, hh_rlhf)
    quarantined: dict[str, int]  # rows set aside, by reason
    records: dict[str, int]  # generations per kind (answer, critique, revision)
    sft_rows: int
    generation: dict[str, float]  # records, tokens, seconds, tokens_per_s
    train: dict[str, float]  # the SFT run's final metrics
    model_path: str


@dataclass(frozen=True)
class CaiRlResult:
    """RL-CAI: samples, pairs, labels (histogram, per principle), training rows, speed."""

    samples: int
    pairs: int
    quarantined: dict[str, int]  # pairs set aside, by reason
    feedback_mode: str
    label_mean: float
    label_histogram: list[int]  # counts in 10 bins over [0, 1]
    principle_means: dict[str, float]  # mean label per principle (choice feedback)
    loss: str  # dpo or kto
    train_rows: int
    generation: dict[str, float]
    feedback_s: float
    train: dict[str, float]
    model_path: str


@dataclass(frozen=True)
class CaiEvalResult:
    """Held-out evaluation of base, SL-CAI, RL-CAI (and the survey-aligned model when trained);
    with implicit_reward feedback, the labels' agreement with held-out survey preferences."""

    models: dict[str, dict[str, Any]]
    feedback_agreement: dict[str, float] | None = None


# Stage section -> its key under summary.json's "cai" section.
CAI_SECTIONS = {"cai_sl": "sl", "cai_rl": "rl", "cai_eval": "eval"}
SECTIONS: dict[str, type] = {
    "survey": SurveyResult,
    "weighting": WeightingResult,
    "constitution": ConstitutionResult,
    "datasets": DatasetsResult,
    "model": ModelResult,
    "reference": ReferenceResult,
    "train": TrainResult,
    "eval": EvalResult,
    "cai_sl": CaiSlResult,
    "cai_rl": CaiRlResult,
    "cai_eval": CaiEvalResult,
}


def result_to_json(result: Any) -> dict[str, Any]:
    return result.to_json() if hasattr(result, "to_json") else _plain(result)


def result_from_json(section: str, data: dict[str, Any]) -> Any:
    cls = SECTIONS[section]
    return cls.from_json(data) if hasattr(cls, "from_json") else _build(cls, data, section)


@dataclass
class RunSummary:
    """Everything ``summary.json`` holds, typed."""

    name: str
    run_dir: str
    results: dict[str, Any] = field(default_factory=dict)  # section -> typed result
    wall_s: dict[str, float] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage -> fingerprint
    manifest: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # stages the last invocation skipped

    TOP_KEYS: ClassVar[tuple[str, ...]] = (
        "name",
        "run_dir",
        "wall_s",
        "fingerprints",
        "manifest",
        "skipped",
    )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "run_dir": self.run_dir}
        for section in SECTIONS:
            if section in self.results:
                key = CAI_SECTIONS.get(section)
                value = result_to_json(self.results[section])
                if key is None:
                    out[section] = value
                else:  # the CAI stages share one "cai" section
                    out.setdefault("cai", {})[key] = value
        if "cai" in out:  # the CAI stages' wall times again, beside their counts
            out["cai"]["wall_s"] = {s: self.wall_s[s] for s in CAI_SECTIONS if s in self.wall_s}
        out.update(wall_s=self.wall_s, fingerprints=self.fingerprints, skipped=self.skipped)
        out["manifest"] = self.manifest
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        data = dict(data)
        cai = dict(data.pop("cai", {}))
        cai.pop("wall_s", None)  # a copy of wall_s's CAI entries
        unknown = sorted(set(data) - set(SECTIONS) - set(cls.TOP_KEYS))
        unknown += [f"cai.{k}" for k in sorted(set(cai) - set(CAI_SECTIONS.values()))]
        if unknown:
            raise SummaryError(f"summary.json: unknown key(s) {unknown}")
        data.update({s: cai[k] for s, k in CAI_SECTIONS.items() if k in cai})
        results = {s: result_from_json(s, data[s]) for s in SECTIONS if s in data}
        return cls(
            name=data["name"],
            run_dir=data["run_dir"],
            results=results,
            wall_s=dict(data.get("wall_s", {})),  # absent in a run that has not finished
            fingerprints=dict(data.get("fingerprints", {})),
            manifest=dict(data.get("manifest", {})),
            skipped=list(data.get("skipped", [])),
        )

    def save(self, path: Path) -> None:
        from valign_ray.run_layout import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_json(), indent=2, default=str) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunSummary:
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class PreparedInputs:
    """Everything a training run needs, prepared once: the scored training rows, the held-out
    pairs, the base model folder and the reference cache file."""

    config: PipelineConfig
    layout: RunLayout
    rows: pl.DataFrame  # training rows with their reference columns, in row_idx order
    eval_pairs: pl.DataFrame | None  # held-out respondents' pairs (ratings surveys)
    base_model: Path
    reference_cache: Path | None
    summary: RunSummary
