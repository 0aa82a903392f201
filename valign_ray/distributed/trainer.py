"""The one place that builds a ``TorchTrainer``: Ray Train context, worker function, launch."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import ray
import ray.train
import torch
from ray.train import (
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from valign_ray.config import TrainConfig
from valign_ray.distributed.session import quiet_ray_data_logs
from valign_ray.output import is_verbose
from valign_ray.train.worker import TrainJob, run_training


class RayTrainContext:
    """:class:`~valign_ray.train.context.TrainContext` on Ray Train + torch.distributed."""

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().clone()
        if self.world_size > 1:
            torch.distributed.all_reduce(out)
        return out

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        checkpoint = (
            ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        )
        ray.train.report(metrics, checkpoint=checkpoint)
        if checkpoint_dir is not None:
            # Wait until Ray has committed it: a worker killed right after report would
            # otherwise resume from the checkpoint before (measured, see STACK.md).
            ray.train.get_all_reported_checkpoints(
                consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
            )
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def checkpoints(self) -> Iterator[Path]:
        """The committed checkpoints Ray still keeps (``num_to_keep``), newest step first, each
        copied to a local folder only when the loop asks for it (the newest is usually intact);
        Ray restores the list from storage when a rerun resumes."""
        latest = ray.train.get_checkpoint()
        if latest is None:
            return
        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
        )
        ordered = sorted(reported, key=lambda r: r.metrics.get("step", 0), reverse=True)
        found = [r.checkpoint for r in ordered]
        if all(c.path != latest.path for c in found):
            found.insert(0, latest)
        for checkpoint in found:
            yield Path(checkpoint.to_directory())


def _quiet_ray_train_logs() -> None:
    """Ray Train logs every report at INFO from a logger named after its file (outside
    ``ray.train``, so its LoggingConfig misses it); our progress line is the per-step output,
    so keep Ray's to warnings unless verbose."""
    from ray.train.v2._internal.execution import context

    if not is_verbose():
        logging.getLogger(context.__file__).setLevel(logging.WARNING)


def say_where() -> str:
    """Print (and return) the node this rank landed on: train.resources_per_worker places them."""
    ctx = ray.train.get_context()
    node = ray.get_runtime_context().get_node_id()
    print(
        f"[train] worker {ctx.get_world_rank()}/{ctx.get_world_size()} on node {node}", flush=True
    )
    return node


def _train_fn(config: dict[str, Any]) -> None:
    _quiet_ray_train_logs()
    quiet_ray_data_logs()
    say_where()
    shard = ray.train.get_dataset_shard("train")
    table = pa.concat_tables(list(shard.iter_batches(batch_format="pyarrow", batch_size=8192)))
    run_training(config["job"], RayTrainContext(), pl.from_arrow(table))


def scaling_config(tcfg: TrainConfig) -> ScalingConfig:
    """Workers and what each reserves: ``train.resources_per_worker`` (e.g. a custom resource
    that each node has once, to put one worker per node) or Ray's default, one CPU (one GPU with
    ``use_gpu``)."""
    resources = dict(tcfg.resources_per_worker) if tcfg.resources_per_worker else None
    return ScalingConfig(
        num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu, resources_per_worker=resources
    )


def fit(
    job: TrainJob,
    rows: pl.DataFrame,
    *,
    storage_path: Path,
    name: str = "train",
    callbacks: list[Any] | None = None,
) -> Any:
    """Train on Ray Train with DeepSpeed; returns the ``ray.train.Result``.

    Every worker receives all rows (``datasets_to_split=[]``) and picks its part of each global
    batch by index (:mod:`valign_ray.train.batches`): that is what makes the data order
    resumable and a 2-worker run equal to a 1-worker one. Rerunning with the same ``name`` and
    ``storage_path`` resumes from the latest checkpoint.
    """
    tcfg = job.config.train
    trainer = TorchTrainer(
        _train_fn,
        train_loop_config={"job": job},
        scaling_config=scaling_config(tcfg),
        datasets={"train": ray.data.from_arrow(rows.to_arrow())},
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=tcfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,  # e.g. Tune's TuneReportCallback inside a sweep trial
            # Ray Train's INFO lines (worker group start, every checkpoint) only when verbose:
            # our progress line is the per-step output.
            logging_config=LoggingConfig(log_level="INFO" if is_verbose() else "WARNING"),
        ),
    )
    return trainer.fit()
