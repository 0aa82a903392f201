"""Readers of a run directory's files for the run report: each checks the shape it expects
and raises ValueError naming the file and field (the shapes are documented in
:mod:`valign_ray.eval.report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl


def read_json(path: Path) -> Any:
    """A JSON file; a broken one is a ValueError naming it (a report never guesses)."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


def load_run_config(run_dir: Path) -> Any:
    """The run's typed ``PipelineConfig`` from ``config.yaml`` (None without one): the same
    loader as the pipeline, so a misspelt key fails here too, naming it."""
    from valign_ray.config import load_config

    path = run_dir / "config.yaml"
    return load_config(path) if path.exists() else None


def load_train_metrics(path: Path) -> tuple[pl.DataFrame, int]:
    """The per-step training log as a frame sorted by ``step``, and how many records were
    replaced: a resumed run logs the steps after its checkpoint again, and the last record of
    a step is the one the final model followed."""
    by_step: dict[int, dict[str, Any]] = {}
    replaced = 0
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno}: invalid JSON ({err})") from err
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}: line {lineno}: need an object with an integer 'step'")
        replaced += record["step"] in by_step
        by_step[record["step"]] = record
    if not by_step:
        raise ValueError(f"{path}: no metric records")
    rows = [by_step[s] for s in sorted(by_step)]
    return pl.DataFrame(rows, infer_schema_length=None), replaced


def eval_group_table(groups: dict[str, Any], where: str = "eval.groups") -> pl.DataFrame:
    """``{model: {group: value}}`` as rows (model, group, value, lo, hi); a value is a number
    or ``{"estimate", "lo", "hi"}`` (see the module docstring)."""
    rows = []
    for model, per_group in groups.items():
        if not isinstance(per_group, dict) or not per_group:
            raise ValueError(f"summary.json {where}.{model}: expected {{group: value}}")
        for group, v in per_group.items():
            rows.append([model, str(group), *_interval(v, f"{where}.{model}.{group}")])
    return _group_frame(rows)


def representation_tables(rep: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """``eval.representation`` as per-group rows (model, group, value=A, lo, hi), per-model
    statistics (model, statistic, estimate, lo, hi), and each model's worst group."""
    if not isinstance(rep, dict) or not rep:
        raise ValueError("summary.json eval.representation: expected {model: {...}}")
    rows, stats, worst = [], [], {}
    for model, entry in rep.items():
        where = f"eval.representation.{model}"
        groups = entry.get("groups") if isinstance(entry, dict) else None
        if not isinstance(groups, list) or not groups:
            raise ValueError(f"summary.json {where}.groups: expected a list of groups")
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or "group" not in g:
                raise ValueError(f"summary.json {where}.groups[{i}]: no 'group'")
            rows.append([model, str(g["group"]), *_interval(g, f"{where}.groups[{i}]")])
        lowest = min(rows[-len(groups) :], key=lambda r: (r[2], r[1]))
        w = entry.get("worst_group") or {"group": lowest[1], "estimate": lowest[2]}
        if not isinstance(w, dict):
            raise ValueError(f"summary.json {where}.worst_group: expected {{group, estimate}}")
        worst[model] = str(w.get("group"))
        if worst[model] not in {r[1] for r in rows[-len(groups) :]}:
            raise ValueError(f"summary.json {where}.worst_group: {worst[model]!r} not a group")
        named = {
            "A(population)": entry.get("population"),
            "A(indifferent model)": entry.get("population_indifferent"),
            "skill over indifference": entry.get("skill"),
            f"worst-group A ({worst[model]})": w,
            "spread (max - min)": entry.get("spread"),
            "majority agreement": entry.get("majority_agreement"),
            "majority agreement, flipped items": entry.get("majority_agreement_flipped"),
        }
        for name, v in named.items():
            if v is not None:
                stats.append([model, name, *_interval(v, f"{where}: {name}")])
    cols = ["model", "statistic", "estimate", "lo", "hi"]
    schema = dict.fromkeys(cols, pl.Float64) | {"model": pl.Utf8, "statistic": pl.Utf8}
    return _group_frame(rows), pl.DataFrame(stats, schema=schema, orient="row"), worst


def _interval(v: Any, where: str) -> list[float | None]:
    """A number, or {"estimate", "lo", "hi"} (lo/hi optional) -> [estimate, lo, hi]."""
    v = v if isinstance(v, dict) else {"estimate": v}
    est, lo, hi = v.get("estimate"), v.get("lo"), v.get("hi")
    if not isinstance(est, int | float) or any(
        x is not None and not isinstance(x, int | float) for x in (lo, hi)
    ):
        raise ValueError(f"summary.json {where}: need a numeric estimate (and numeric lo/hi)")
    return [float(est), lo, hi]


def _group_frame(rows: list[list[Any]]) -> pl.DataFrame:
    schema = {"model": pl.Utf8, "group": pl.Utf8, "value": pl.Float64}
    return pl.DataFrame(rows, schema={**schema, "lo": pl.Float64, "hi": pl.Float64}, orient="row")


def flatten_scalars(d: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """Nested dict -> [dotted key, value] rows. A list shows as its length only: an importer's
    list may name people, and the report holds aggregates only."""
    rows: list[list[Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += flatten_scalars(v, key + ".")
        else:
            rows.append([key, f"{len(v)} entries" if isinstance(v, list | tuple) else v])
    return rows


def is_number(v: Any) -> bool:
    """A metric value (JSON true/false are flags, not numbers)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def lowest_group(table: pl.DataFrame) -> dict[str, str]:
    """Each model's group with the lowest value (first by name on ties)."""
    low = table.sort("value", "group").group_by("model", maintain_order=True).first()
    return dict(zip(low["model"].to_list(), low["group"].to_list(), strict=True))
