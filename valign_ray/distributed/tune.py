"""Hyper-parameter sweeps on Ray Tune: KTO's beta, lambda_d, lambda_u (or DPO's beta).

The expensive, sweep-independent work (survey, weights, datasets, base model, reference
log-probs) runs once in the driver; every trial reuses the cached reference columns, so a trial
is only a policy training run plus a held-out evaluation. Ray Train V2 cannot be wrapped with
``Tuner(trainer)``, so a trial is a function that calls :func:`valign_ray.distributed.trainer.fit`
with Tune's ``TuneReportCallback`` and then reports the held-out metrics itself.

A sweep file has two sections: ``sweep`` (:class:`SweepConfig`) and ``pipeline`` (any
:class:`~valign_ray.config.PipelineConfig` keys). Both are loaded strictly: a typo is an error.

Outputs under ``<run_dir>/sweep/``: ``results.csv`` (every trial, best first), ``best.json``
(the best point, its metrics and model folder, the base model's scores), ``trials/<id>/`` (Ray
Train checkpoints with the ``hf_model/`` export, ``train_metrics.jsonl``) and ``tune-<time>/``
(Tune's experiment; each trial folder holds its offline W&B run: upload them with
``wandb sync <run_dir>/sweep/tune-<time>/*/wandb/offline-run-*``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import field, replace
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

# Only these sections may be swept: the prepared rows and reference log-probs do not depend on
# them. Keys that change the data (loss.name, loss.soft_labels, data.*, model.*) would make the
# shared reference cache wrong for the trial.
SWEEPABLE_SECTIONS = ("loss", "train")
NOT_SWEEPABLE = ("loss.name", "loss.soft_labels")
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
    if pipeline.loss.name == "sft":
        raise ConfigError("pipeline.loss.name: sft has no beta or lambdas to sweep; use kto or dpo")
    if pipeline.data.answers != "ratings":
        raise ConfigError(
            "pipeline.data.answers: sweeps evaluate held-out rating pairs; use ratings"
        )
    for key, space in sweep.space.items():
        where = f"sweep.space.{key}"
        if key.split(".")[0] not in SWEEPABLE_SECTIONS or key in NOT_SWEEPABLE:
            raise ConfigError(
                f"{where}: only loss.* and train.* keys (not {', '.join(NOT_SWEEPABLE)}) can be "
                "swept: the others change the prepared data every trial shares"
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


def search_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune's ``param_space``: one Tune domain per swept key (flat dotted keys)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, space in sweep.space.items():
        if space.choice is not None:
            out[key] = tune.choice(list(space.choice))
        elif space.loguniform is not None:
            out[key] = tune.loguniform(*space.loguniform)
        else:
            out[key] = tune.grid_search(list(space.grid))
    return out


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


def _trial(
    point: dict[str, Any],
    *,
    base: PipelineConfig,
    rows: pl.DataFrame,
    eval_pairs: pl.DataFrame,
    model_path: str,
    sweep_dir: str,
) -> None:
    """One Tune trial: train with the sampled loss settings, evaluate held-out pairs, report."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from valign_ray.distributed.trainer import fit
    from valign_ray.eval.heldout import evaluate_model_dir
    from valign_ray.train.worker import HF_EXPORT, TrainJob, resolve_loss_params

    trial_id = tune.get_context().get_trial_id()
    # Not Tune's trial folder: that is a staging copy under /tmp/ray until the sweep ends, and
    # the checkpoints (the trained models) must stay where best.json says they are.
    trial_dir = Path(sweep_dir) / "trials" / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = trial_config(base, point)
    # W&B: one run per trial, from Tune's WandbLoggerCallback; no second run from the workers.
    cfg = replace(cfg, name=trial_id, wandb=replace(cfg.wandb, enabled=False))
    job = TrainJob(
        config=cfg, model_path=model_path, metrics_path=str(trial_dir / "train_metrics.jsonl")
    )
    result = fit(
        job, rows, storage_path=trial_dir.parent, name=trial_id, callbacks=[TuneReportCallback()]
    )
    model_dir = Path(result.checkpoint.path) / HF_EXPORT  # local storage: no copy needed
    ev = evaluate_model_dir(
        model_dir, eval_pairs, max_length=cfg.data.max_length, batch_size=cfg.eval.batch_size
    )
    params = resolve_loss_params(cfg, rows)
    train_final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    tune.report(
        {
            **train_final,
            **{f"eval_{k}": v for k, v in ev.items()},
            **{
                k: float(getattr(params, k))
                for k in LOSS_COLUMNS
                if cfg.loss.name == "kto" or k == "beta"  # DPO has no lambdas
            },
            "model_dir": str(model_dir),
        }
    )


def _prepare(cfg: PipelineConfig) -> tuple[pl.DataFrame, pl.DataFrame, Path]:
    """Run the sweep-independent stages once; read back the scored rows and held-out pairs."""
    from valign_ray.pipeline import run_pipeline
    from valign_ray.train.reference import cache_path

    summary = run_pipeline(cfg, stages=["survey", "weights", "datasets", "model", "reference"])
    ref = cache_path(Path(cfg.output_dir) / ".cache" / "reference", summary["reference"]["key"])
    # The cache holds only the reference columns, row-aligned with the training rows.
    rows = pl.read_parquet(cfg.run_dir / "datasets" / cfg.loss.name / "rows.parquet")
    rows = rows.hstack(pl.read_parquet(ref))
    eval_pairs = pl.read_parquet(cfg.run_dir / "datasets" / "eval_pairs.parquet")
    return rows, eval_pairs, Path(summary["model"]["path"]).resolve()


def _check_cpus(cfg: PipelineConfig, concurrent: int) -> None:
    """A trial holds 1 CPU for its driver plus one per worker; too few CPUs would make Tune
    wait forever instead of failing."""
    import ray

    need = (1 + (0 if cfg.train.use_gpu else cfg.train.num_workers)) * concurrent
    have = ray.cluster_resources().get("CPU", 0)
    if have < need:
        raise ValueError(
            f"the sweep needs {need} CPUs ({concurrent} trial(s) x (1 driver + "
            f"{cfg.train.num_workers} workers)) but Ray has {have:g}: set pipeline.ray.num_cpus "
            "or lower sweep.max_concurrent_trials"
        )


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
    from ray import tune
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from valign_ray.distributed.session import init_ray
    from valign_ray.eval.heldout import evaluate_model_dir

    if num_samples is not None:
        overrides = [*overrides, f"sweep.num_samples={num_samples}"]
    spec = load_sweep(cfg_path, overrides)
    sweep, cfg = spec.sweep, spec.pipeline
    init_ray(cfg.ray)
    _check_cpus(cfg, sweep.max_concurrent_trials)
    rows, eval_pairs, model_path = _prepare(cfg)
    base_eval = evaluate_model_dir(
        model_path, eval_pairs, max_length=cfg.data.max_length, batch_size=cfg.eval.batch_size
    )
    out = (cfg.run_dir / "sweep").resolve()
    callbacks = []
    if cfg.wandb.enabled and cfg.wandb.mode != "disabled":
        callbacks.append(
            WandbLoggerCallback(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                mode=cfg.wandb.mode,
                excludes=["model_dir", "checkpoint_path"],
            )
        )
    experiment = f"tune-{time.strftime('%Y%m%d-%H%M%S')}"  # a rerun never mixes with the last
    tuner = tune.Tuner(
        tune.with_parameters(
            _trial,
            base=cfg,
            rows=rows,
            eval_pairs=eval_pairs,
            model_path=str(model_path),
            sweep_dir=str(out),
        ),
        param_space=search_space(sweep),
        tune_config=tune.TuneConfig(
            num_samples=sweep.num_samples,
            # Tune ignores TuneConfig.max_concurrent_trials when given a search generator, and
            # trials beyond the CPUs deadlock (each driver holds a CPU its workers then lack).
            search_alg=BasicVariantGenerator(
                max_concurrent=sweep.max_concurrent_trials, random_state=sweep.seed
            ),
        ),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str(out), callbacks=callbacks, verbose=1
        ),
    )
    grid = tuner.fit()
    keys = list(sweep.space)
    records = []
    for res in grid:
        metrics = res.metrics or {}
        records.append(
            {
                **metrics,
                **{k: res.config.get(k) for k in keys},
                "trial_id": metrics.get("trial_id") or Path(res.path).name,
                "status": "error" if res.error else "ok",
                "error": None if res.error is None else repr(res.error)[:500],
                "model_dir": metrics.get("model_dir"),
                "path": res.path,
            }
        )
    table = rank_trials(records, keys, sweep.metric, sweep.mode)
    table.write_csv(out / "results.csv")
    print(_format_table(table, sweep.metric), flush=True)
    best_id = table["trial_id"][0]
    best_rec = next(r for r in records if r["trial_id"] == best_id)
    best_value = best_rec.get(sweep.metric)
    if best_rec["status"] != "ok" or best_value is None or not math.isfinite(best_value):
        raise RuntimeError(f"no trial of the sweep finished; errors in {out / 'results.csv'}")
    wandb_dirs = sorted(str(p) for p in (out / experiment).glob("*/wandb/offline-run-*"))
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
        "experiment_path": str(out / experiment),
        "wandb_dirs": wandb_dirs,
        "wandb_sync": f"wandb sync {out / experiment}/*/wandb/offline-run-*",
    }
    (out / "best.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"best {sweep.metric} {best['metrics'][sweep.metric]:.4f}: {' '.join(best['overrides'])}")
    return {
        **report,
        "trials": table.to_dicts(),
        "results_csv": str(out / "results.csv"),
        "best_json": str(out / "best.json"),
    }
