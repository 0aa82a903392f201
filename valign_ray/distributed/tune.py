"""The Ray Tune edge of sweeps (:mod:`valign_ray.sweeps`): the search space as Tune objects
and one trial per point.

It is handed the prepared inputs (scored rows, held-out pairs, base model) and never prepares
them itself. Ray Train V2 cannot be wrapped with ``Tuner(trainer)``, so a trial is a function
that calls :func:`valign_ray.distributed.trainer.fit` with Tune's ``TuneReportCallback`` and then
reports the held-out metrics itself. The callback forwards every training report, so Tune's
``training_iteration`` counts them: that is the clock ASHA stops trials on. A sweep resumes
with ``Tuner.restore`` on its experiment folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from valign_ray.config import PipelineConfig

if TYPE_CHECKING:
    from valign_ray.results import PreparedInputs
    from valign_ray.sweeps import SweepConfig


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


@dataclass(frozen=True)
class TuneOutcome:
    """What a sweep's Tune run left: one record per trial, its experiment folder, and whether
    it was interrupted (Ctrl+C) with trials unfinished."""

    records: list[dict[str, Any]]
    experiment_dir: Path
    interrupted: bool


def _scheduler(sweep: SweepConfig) -> Any:
    """ASHA on a training metric over ``training_iteration`` (one per training report, then
    one for the held-out evaluation), or None (FIFO: every trial runs to the end)."""
    if sweep.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    asha = sweep.asha
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=asha.metric,
        mode=asha.mode,
        max_t=asha.max_t,
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        # max_t only places the rungs: a trial that survived them all trains to its end and is
        # evaluated, rather than cut off before its held-out report.
        stop_last_trials=False,
    )


def wandb_callbacks(cfg: PipelineConfig) -> list[Any]:
    """One W&B run per trial, grouped by the sweep's name (``cfg.name``), as the experiment
    runner groups its runs by experiment."""
    if not cfg.wandb.enabled or cfg.wandb.mode == "disabled":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    return [
        WandbLoggerCallback(
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            mode=cfg.wandb.mode,
            group=cfg.name,  # the sweep's runs side by side
            excludes=["model_dir", "checkpoint_path"],
            # At the sweep's end Tune waits this long for each trial's run to finish. A trial
            # cut by Ctrl+C never tells its run to finish, so the default (1,800 s) held an
            # interrupted sweep for half an hour (seen); offline runs have nothing to upload.
            upload_timeout=30 if cfg.wandb.mode == "offline" else 600,
        )
    ]


def _trial(
    point: dict[str, Any],
    *,
    base: PipelineConfig,
    rows: pl.DataFrame,
    eval_pairs: pl.DataFrame,
    model_path: str,
    sweep_dir: str,
    loss_columns: tuple[str, ...],
    trial_hook: Callable[[dict[str, Any]], None] | None = None,
    hidden_groups: tuple[str, ...] = (),
) -> None:
    """One Tune trial: train with the sampled loss settings, evaluate held-out pairs, report."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from valign_ray.distributed.trainer import fit
    from valign_ray.eval.heldout import evaluate_model_dir
    from valign_ray.methods import get_method
    from valign_ray.sweep_summary import eval_columns
    from valign_ray.sweeps import trial_config
    from valign_ray.train.worker import HF_EXPORT, TrainJob

    trial_id = tune.get_context().get_trial_id()
    # Not Tune's trial folder: that is a staging copy under /tmp/ray until the sweep ends, and
    # the checkpoints (the trained models) must stay where best.json says they are.
    trial_dir = Path(sweep_dir) / "trials" / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    if trial_hook is not None:
        trial_hook(point)
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
    params = get_method(cfg.loss.name).params(cfg, rows)
    train_final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    tune.report(
        {
            **train_final,
            **eval_columns(ev, hidden_groups),  # no group under report.min_group_n
            # The resolved numbers (``lambda: auto`` applied) of the method's parameters.
            **{k: float(getattr(params, k)) for k in loss_columns if hasattr(params, k)},
            "model_dir": str(model_dir),
        }
    )


def run_tune(
    prepared: PreparedInputs,
    sweep: SweepConfig,
    out: Path,
    *,
    loss_columns: tuple[str, ...],
    restore: Path | None = None,
    trial_hook: Callable[[dict[str, Any]], None] | None = None,
    hidden_groups: tuple[str, ...] = (),
) -> TuneOutcome:
    """Run one Tune trial per point of ``sweep`` on the ``prepared`` inputs, or, with
    ``restore`` (a Tune experiment folder), resume that sweep: finished trials are kept, the
    unfinished and errored ones run again. ``trial_hook(point)`` runs first in every trial;
    ``hidden_groups`` get no per-group column (too few held-out respondents)."""
    from ray import tune

    from valign_ray.distributed.grid import check_cpus

    cfg = prepared.config
    # A trial holds 1 CPU for its driver plus one per Ray Train worker.
    workers = 0 if cfg.train.use_gpu else cfg.train.num_workers
    check_cpus(1, workers, sweep.max_concurrent_trials)
    trainable = tune.with_parameters(
        _trial,
        base=cfg,
        rows=prepared.rows,
        eval_pairs=prepared.eval_pairs,
        model_path=str(prepared.base_model),
        sweep_dir=str(out),
        loss_columns=loss_columns,
        trial_hook=trial_hook,
        hidden_groups=hidden_groups,
    )
    if restore is not None:
        # The search space, scheduler, W&B callback and trial states come from the experiment.
        tuner = tune.Tuner.restore(str(restore), trainable=trainable, resume_errored=True)
        experiment_dir = restore
    else:
        tuner, experiment_dir = new_tuner(trainable, sweep, out, callbacks=wandb_callbacks(cfg))
    grid = tuner.fit()
    records = [_record(res, list(sweep.space)) for res in grid]
    # Ctrl+C: Tune stops the running trials (TERMINATED, like finished ones) and never creates
    # the rest of the grid; the state saved at the signal still has them to run.
    expected = sweep.num_samples * math.prod(len(s.grid) for s in sweep.space.values() if s.grid)
    interrupted = len(records) < expected or any(r["status"] == "unfinished" for r in records)
    return TuneOutcome(records, experiment_dir, interrupted)


def new_tuner(
    trainable: Any, sweep: SweepConfig, out: Path, *, callbacks: list[Any] | None = None
) -> tuple[Any, Path]:
    """A Tuner of ``sweep`` (its space, ASHA or FIFO, trials one grid point after another up
    to ``max_concurrent_trials``) writing under ``out``; returns it and its experiment folder.
    ``trainable`` is :func:`_trial` bound to the prepared inputs (tests pass a cheap one)."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    experiment = f"tune-{time.strftime('%Y%m%d-%H%M%S')}"  # a rerun never mixes with the last
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(sweep),
        tune_config=tune.TuneConfig(
            num_samples=sweep.num_samples,
            scheduler=_scheduler(sweep),
            # Tune ignores TuneConfig.max_concurrent_trials beside a search generator, and
            # trials beyond the CPUs deadlock (each driver holds a CPU its workers lack).
            search_alg=BasicVariantGenerator(
                max_concurrent=sweep.max_concurrent_trials, random_state=sweep.seed
            ),
        ),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str(out), callbacks=callbacks, verbose=1
        ),
    )
    return tuner, out / experiment


def _record(res: Any, keys: list[str]) -> dict[str, Any]:
    """One trial's row: its last report, its point, and its status: ok (evaluated), error,
    stopped (ASHA's STOP marks the last result ``done``) or unfinished (cut by Ctrl+C)."""
    metrics = res.metrics or {}
    if res.error is not None:
        status = "error"
    elif "model_dir" in metrics:
        status = "ok"
    else:
        status = "stopped" if metrics.get("done") else "unfinished"
    return {
        **metrics,
        **{k: res.config.get(k) for k in keys},
        "trial_id": metrics.get("trial_id") or Path(res.path).name,
        "status": status,
        "error": None if res.error is None else repr(res.error)[:500],
        "model_dir": metrics.get("model_dir"),
        "path": res.path,
    }
