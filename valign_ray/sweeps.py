"""Hyper-parameter sweeps: strict sweep files, the trial table, and the sweep as a whole.

The expensive, sweep-independent work (survey, weights, datasets, base model, reference
log-probs) runs once (:func:`valign_ray.pipeline.prepare_training_inputs`); the Ray Tune edge
(:mod:`valign_ray.distributed.tune`) is handed the prepared inputs and runs one trial per point:
a policy training run plus a held-out evaluation.

A sweep file has two sections: ``sweep`` (:class:`SweepConfig`) and ``pipeline`` (any
:class:`~valign_ray.config.PipelineConfig` keys). Both are loaded strictly: a typo is an error.
Which ``loss.*`` keys may be swept is the method's (``Method.sweepable``).

Outputs under ``<run_dir>/sweep/``: ``results.csv`` (every trial, best first), ``best.json``
(the best point, its metrics and model folder, the base model's scores), ``trials/<id>/`` (Ray
Train checkpoints with the ``hf_model/`` export, ``train_metrics.jsonl``) and ``tune-<time>/``
(Tune's experiment; each trial folder holds its offline W&B run: upload them with
``wandb sync <run_dir>/sweep/tune-<time>/*/wandb/offline-run-*``).
"""

from __future__ import annotations

import json
import math
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field
from pydantic.dataclasses import dataclass

from valign_ray.config import PipelineConfig
from valign_ray.config_loader import (
    STRICT,
    ConfigError,
    Float,
    Int,
    apply_overrides,
    from_dict,
    load_yaml,
    to_dict,
)
from valign_ray.methods import get_method

EVAL_METRICS = ("eval_preference_accuracy", "eval_margin")
LOSS_COLUMNS = ("beta", "lambda_d", "lambda_u")  # the resolved numbers every trial reports


@dataclass(frozen=True, config=STRICT)
class ParamSpace:
    """The values one key takes; exactly one of the three is set."""

    choice: tuple[Any, ...] | None = None  # tune.choice: one value drawn uniformly per trial
    loguniform: tuple[Float, ...] | None = None  # [lo, hi]: log(value) uniform on [log lo, log hi]
    grid: tuple[Any, ...] | None = None  # tune.grid_search: every value, num_samples times each


@dataclass(frozen=True, config=STRICT)
class SweepConfig:
    space: dict[str, ParamSpace] = field(default_factory=dict)  # dotted pipeline key -> values
    num_samples: Int = Field(4, ge=1)  # trials drawn (times the size of any grid)
    metric: Literal["eval_preference_accuracy", "eval_margin", "loss"] = "eval_preference_accuracy"
    mode: Literal["max", "min"] = "max"
    max_concurrent_trials: Int = Field(1, ge=1)  # each trial holds 1 + train.num_workers CPUs
    seed: Int = Field(0, ge=0)  # seeds the random search: a sweep file draws the same points again


@dataclass(frozen=True, config=STRICT)
class SweepFile:
    sweep: SweepConfig = field(default_factory=SweepConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def _set_dotted(data: dict, key: str, value: Any) -> dict:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"sweep.space: '{key}': '{part}' is not a config section")
    node[parts[-1]] = value
    return data


def trial_config(base: PipelineConfig, point: dict[str, Any]) -> PipelineConfig:
    """``base`` with the sampled ``point`` ({"loss.beta": 0.1, ...}) applied and re-validated, so
    a value of the wrong type or an unknown key fails like it would in a config file."""
    data = to_dict(base)
    for key, value in point.items():
        _set_dotted(data, key, value)
    return from_dict(PipelineConfig, data)


def _validate(sweep: SweepConfig, pipeline: PipelineConfig) -> None:
    if not sweep.space:
        raise ConfigError("sweep.space: empty; name at least one key, e.g. loss.beta")
    method = get_method(pipeline.loss.name)
    if not method.sweepable:
        raise ConfigError(
            f"pipeline.loss.name: {method.name} has no loss keys to sweep; use a method that has"
        )
    if pipeline.data.answers != "ratings":
        raise ConfigError(
            "pipeline.data.answers: sweeps evaluate held-out rating pairs; use ratings"
        )
    for key, space in sweep.space.items():
        where = f"sweep.space.{key}"
        section, _, name = key.partition(".")
        if section != "train" and not (section == "loss" and name in method.sweepable):
            raise ConfigError(
                f"{where}: only loss.* and train.* keys can be swept, and of loss.* only the "
                f"method's sweepable ones ({', '.join(method.sweepable)}): the others change the "
                "prepared data every trial shares"
            )
        given = [n for n in ("choice", "loguniform", "grid") if getattr(space, n) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of choice, loguniform, grid; got {given}")
        values = getattr(space, given[0])
        if not values:
            raise ConfigError(f"{where}.{given[0]}: empty list")
        if space.loguniform is not None:
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            if len(values) != 2 or not numbers or not 0 < values[0] < values[1]:
                raise ConfigError(f"{where}.loguniform: expected [lo, hi] with 0 < lo < hi")
        for value in values:
            try:
                trial_config(pipeline, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepFile:
    """Load a sweep file strictly. An override ``sweep.x=v`` or ``pipeline.x=v`` names its
    section; any other key (``train.epochs=1``, ``output_dir=...``) is a pipeline key, as with
    ``valign run``."""
    routed = [
        o if o.split(".", 1)[0].split("=", 1)[0] in ("sweep", "pipeline") else f"pipeline.{o}"
        for o in overrides
    ]
    try:
        sweep_file = from_dict(SweepFile, apply_overrides(load_yaml(path), routed))
        _validate(sweep_file.sweep, sweep_file.pipeline)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return sweep_file


def rank_trials(
    records: list[dict[str, Any]], keys: list[str], metric: str, mode: str
) -> pl.DataFrame:
    """One row per trial, best first: ``trial_id``, ``status``, the swept keys, the resolved
    loss numbers, the metrics, ``error``. Failed trials stay in the table (last), never dropped.
    """
    columns = ["trial_id", "status", *keys, *LOSS_COLUMNS, *EVAL_METRICS, "loss", "error"]
    rows = [{c: rec.get(c) for c in columns} for rec in records]
    schema = {c: pl.String if c in ("trial_id", "status", "error") else pl.Float64 for c in columns}
    for row in rows:  # "auto" lambdas were resolved into LOSS_COLUMNS; keep the raw choice
        for key in keys:
            if isinstance(row[key], str):
                schema[key] = pl.String
    table = pl.DataFrame(rows, schema=schema, orient="row")
    return table.sort(metric, descending=mode == "max", nulls_last=True, maintain_order=True)


def _format_table(table: pl.DataFrame, metric: str) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    shown = [c for c in table.columns if c != "error" and table[c].null_count() < table.height]
    shown = ["trial_id", *(c for c in shown if c != "trial_id")]
    width = {c: max(len(c), *(len(cell(v)) for v in table[c])) for c in shown}
    lines = [f"== sweep: {table.height} trials, best {metric} first =="]
    lines.append("  ".join(c.rjust(width[c]) for c in shown))
    for row in table.select(shown).iter_rows():
        lines.append("  ".join(cell(v).rjust(width[c]) for c, v in zip(shown, row, strict=True)))
    return "\n".join(lines)


def run_sweep(
    cfg_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    num_samples: int | None = None,
) -> dict[str, Any]:
    """Prepare once, run the Tune sweep, write ``<run_dir>/sweep/results.csv`` and ``best.json``.

    Returns ``best`` (trial id, point, metrics, model folder, ``--set`` overrides to rerun it),
    ``trials`` (the ranked table as dicts), the output paths, and the offline W&B run folders
    (upload them later with ``wandb sync <folder>``).
    """
    from valign_ray.distributed.session import init_ray
    from valign_ray.distributed.tune import run_tune
    from valign_ray.eval.heldout import evaluate_model_dir
    from valign_ray.pipeline import prepare_training_inputs

    if num_samples is not None:
        overrides = [*overrides, f"sweep.num_samples={num_samples}"]
    spec = load_sweep(cfg_path, overrides)
    sweep, cfg = spec.sweep, spec.pipeline
    init_ray(cfg.ray)
    prepared = prepare_training_inputs(cfg)
    if prepared.eval_pairs is None:
        raise ConfigError("pipeline.data.answers: sweeps evaluate held-out rating pairs")
    base_eval = evaluate_model_dir(
        prepared.base_model,
        prepared.eval_pairs,
        max_length=cfg.data.max_length,
        batch_size=cfg.eval.batch_size,
    )
    out = (prepared.layout.sweep_dir).resolve()
    records, experiment_dir = run_tune(prepared, sweep, out, loss_columns=LOSS_COLUMNS)
    keys = list(sweep.space)
    table = rank_trials(records, keys, sweep.metric, sweep.mode)
    table.write_csv(out / "results.csv")
    print(_format_table(table, sweep.metric), flush=True)
    best_id = table["trial_id"][0]
    best_rec = next(r for r in records if r["trial_id"] == best_id)
    best_value = best_rec.get(sweep.metric)
    if best_rec["status"] != "ok" or best_value is None or not math.isfinite(best_value):
        raise RuntimeError(f"no trial of the sweep finished; errors in {out / 'results.csv'}")
    wandb_dirs = sorted(str(p) for p in experiment_dir.glob("*/wandb/offline-run-*"))
    best = {
        "trial_id": best_id,
        "point": {k: best_rec[k] for k in keys},
        "overrides": [f"{k}={best_rec[k]}" for k in keys],
        "metrics": {
            k: best_rec.get(k) for k in (*LOSS_COLUMNS, *EVAL_METRICS, "eval_n_pairs", "loss")
        },
        "model_dir": best_rec["model_dir"],
    }
    report = {
        "metric": sweep.metric,
        "mode": sweep.mode,
        "best": best,
        "base_eval": base_eval,
        "n_trials": table.height,
        "n_failed": int((table["status"] != "ok").sum()),
        "experiment_path": str(experiment_dir),
        "wandb_dirs": wandb_dirs,
        "wandb_sync": f"wandb sync {experiment_dir}/*/wandb/offline-run-*",
    }
    (out / "best.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"best {sweep.metric} {best['metrics'][sweep.metric]:.4f}: {' '.join(best['overrides'])}")
    return {
        **report,
        "trials": table.to_dicts(),
        "results_csv": str(out / "results.csv"),
        "best_json": str(out / "best.json"),
    }
