"""One experiment runner: a grid of config variants x seeds, one pipeline run each, one table.

An experiment is a folder ``EXP``: every run is ``EXP/<run name>`` (a full pipeline run of the
config plus the variant's and the seed's ``--set`` overrides), all runs share the reference
cache in ``EXP/.cache``, and ``EXP/runs.csv`` (+ ``runs.parquet``) holds one row per run with its
status and the numbers of its ``summary.json``. Runs whose results already exist are skipped, so
rerunning after a crash only trains what is missing.

The runs are Ray Tune trials (:mod:`valign_ray.distributed.grid`), so they spread over a cluster
when one is there; every W&B run of the experiment carries ``group=<experiment name>``. Ray is
imported only inside that edge.

    from valign_ray.experiment import Variant, run_experiment

    table = run_experiment(
        "configs/smoke.yaml",
        [Variant("kto", ()), Variant("dpo", ("loss.name=dpo",))],
        seeds=[0, 1],
        output_dir="runs/kto-vs-dpo",
        name="kto-vs-dpo",
    )
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig, load_config

IDENTITY_KEYS = ("name", "output_dir")  # where a run is, not what it is
TABLE_KEYS = ("run", "variant", "seed", "status", "error")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: a name (its run folder) and ``--set`` style overrides."""

    name: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedRun:
    """One pipeline run of an experiment: ``config.run_dir`` is ``EXP/<name>``."""

    name: str
    variant: str
    seed: int
    overrides: tuple[str, ...]  # everything applied to the config file, in order
    config: PipelineConfig


def plan_runs(
    config_path: str | Path,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    *,
    output_dir: str | Path,
    seed_keys: Sequence[str] = ("train.seed",),
    base_overrides: Sequence[str] = (),
) -> list[PlannedRun]:
    """Every variant x seed as a loaded config. Overrides apply in the order base, variant,
    seed (later wins); each seed is set on every key of ``seed_keys`` (``train.seed`` for
    training noise, ``survey.synthetic.seed`` for a new sample draw). Runs are named
    ``<variant>-s<seed>``, or just ``<variant>`` when there is one seed.

    ``output_dir`` is made absolute: trials run in other processes (other nodes on a cluster,
    where it must be shared storage), whose working directory is not the caller's.
    """
    if not variants or not seeds:
        raise ValueError("an experiment needs at least one variant and one seed")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be unique, got {list(seeds)}")
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"variant name {name!r}: use letters, digits, '_', '-', '.'")
    exp = Path(output_dir).resolve()
    plan = []
    for variant in variants:
        for seed in seeds:
            run = variant.name if len(seeds) == 1 else f"{variant.name}-s{seed}"
            overrides = (
                *base_overrides,
                *variant.overrides,
                *(f"{key}={seed}" for key in seed_keys),
                f"output_dir={exp}",
                f"name={run}",
            )
            cfg = load_config(config_path, overrides)
            plan.append(PlannedRun(run, variant.name, seed, overrides, cfg))
    return plan


def run_is_finished(cfg: PipelineConfig) -> bool:
    """True when ``cfg.run_dir`` holds a full run of this very config: every stage's recorded
    fingerprint matches (:func:`valign_ray.pipeline.run_is_current`)."""
    from valign_ray.pipeline import run_is_current

    return run_is_current(cfg)


def flatten_numbers(data: dict[str, Any], prefix: str = "") -> dict[str, float | int]:
    """Nested dicts of numbers -> ``{"eval.aligned.preference_accuracy": 0.61, ...}``; strings,
    lists, booleans and None are left out (they are not results to compare across runs)."""
    flat: dict[str, float | int] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, f"{dotted}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[dotted] = value
    return flat


def runs_table(records: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per run: ``run, variant, seed, status, error``, then the flattened numbers in
    the order they first appear. A column is Int64 when every value in it is an integer."""
    columns = list(TABLE_KEYS)
    for rec in records:
        columns += [k for k in rec if k not in columns]
    schema: dict[str, Any] = {"run": pl.String, "variant": pl.String, "seed": pl.Int64}
    schema |= {"status": pl.String, "error": pl.String}
    for col in columns[len(TABLE_KEYS) :]:
        values = [rec[col] for rec in records if rec.get(col) is not None]
        schema[col] = pl.Int64 if all(isinstance(v, int) for v in values) else pl.Float64
    rows = [[rec.get(c) for c in columns] for rec in records]
    return pl.DataFrame(rows, schema=schema, orient="row")


def _pipeline_trial(point: dict[str, Any]) -> dict[str, Any]:
    """One trial: a full pipeline run (runs in a Ray worker; imports the pipeline there)."""
    from valign_ray.pipeline import run_pipeline

    summary = run_pipeline(point["config"])
    return {"run_dir": summary.run_dir}


def _record(run: PlannedRun, status: str, error: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"run": run.name, "variant": run.variant, "seed": run.seed}
    summary_path = run.config.run_dir / "summary.json"
    if status != "failed":
        if summary_path.exists():
            rec |= flatten_numbers(json.loads(summary_path.read_text()))
        else:
            status, error = "failed", f"no summary.json in {run.config.run_dir}"
    return rec | {"status": status, "error": error}


def run_experiment(
    config_path: str | Path,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    *,
    output_dir: str | Path,
    name: str,
    seed_keys: Sequence[str] = ("train.seed",),
    base_overrides: Sequence[str] = (),
    is_finished: Callable[[PipelineConfig], bool] | None = None,
    max_concurrent: int = 1,
    trial: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> pl.DataFrame:
    """Run every variant x seed not yet finished as a Ray Tune trial; return and write the table
    ``output_dir/runs.csv`` (+ ``runs.parquet``): status ``finished``, ``skipped`` (done before:
    ``is_finished(cfg)``, default :func:`run_is_finished`) or ``failed`` (with its error).

    ``name`` is the experiment's name: the W&B group of its runs and the Tune experiment's
    prefix. Ray starts (or joins a cluster) from the first run's ``ray`` section. ``trial``
    runs one point (``{"run", "variant", "config"}``, in a Ray task; a module-level function):
    default the pipeline (``valign run``); pass ``is_finished`` to match it.
    """
    from valign_ray.distributed.grid import run_grid

    plan = plan_runs(
        config_path,
        variants,
        seeds,
        output_dir=output_dir,
        seed_keys=seed_keys,
        base_overrides=base_overrides,
    )
    exp = plan[0].config.output_dir
    finished = is_finished or run_is_finished
    todo = [run for run in plan if not finished(run.config)]
    outcome = {run.name: ("skipped", None) for run in plan}
    # A run left half done keeps its summary: its finished stages are skipped by fingerprint.
    # A failed trial is recorded as failed whatever summary.json holds (see _record).
    if todo:
        print(f"[experiment {name}] {len(todo)} of {len(plan)} runs to do", flush=True)
        results = run_grid(
            trial or _pipeline_trial,
            [{"run": run.name, "variant": run.variant, "config": run.config} for run in todo],
            storage_path=Path(exp) / ".tune",
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",  # a rerun never mixes with the last
            max_concurrent=max_concurrent,
            ray_config=plan[0].config.ray,
            worker_cpus=max(
                0 if r.config.train.use_gpu else r.config.train.num_workers for r in todo
            ),
            env_vars={"WANDB_RUN_GROUP": name},  # wandb.init reads it, in the Train workers
        )
        for run, res in zip(todo, results, strict=True):
            outcome[run.name] = (
                ("finished", None) if res["status"] == "ok" else ("failed", res["error"])
            )
    table = runs_table([_record(run, *outcome[run.name]) for run in plan])
    Path(exp).mkdir(parents=True, exist_ok=True)
    table.write_csv(Path(exp) / "runs.csv")
    table.write_parquet(Path(exp) / "runs.parquet")
    counts = table["status"].value_counts(sort=True).iter_rows()
    print(f"[experiment {name}] {dict(counts)}: {Path(exp) / 'runs.csv'}", flush=True)
    return table
