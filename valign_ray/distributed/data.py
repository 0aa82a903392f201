"""Ray Data at the edge: the pure polars builders and reference scoring, applied per batch.

The same functions run without Ray in tests; here Ray Data distributes them over the cluster
and streams Parquet in and out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import ray

from valign_ray.data.builders import canonical_order
from valign_ray.train.reference import score_reference


def _apply_builder(
    batch: pa.Table, builder: Callable[..., pl.DataFrame], **tables: Any
) -> pa.Table:
    return builder(pl.from_arrow(batch), **tables).to_arrow()


def map_answers_ray(answers_path: Path, *, batch_size: int = 8192) -> Callable[..., pl.DataFrame]:
    """A :data:`~valign_ray.methods.base.MapAnswers` over the answers Parquet at
    ``answers_path``: ``map(builder, per_respondent=False, **tables)`` applies
    ``builder(answers_batch, **tables)`` with ``map_batches`` (``map_groups`` per respondent when
    ``per_respondent``) and returns the rows in canonical order with ``row_idx``.

    Ray's execution order is not the rows' identity: sorting on every column makes the result
    (and hence training batches) independent of how blocks were scheduled.
    """

    def map_answers(
        builder: Callable[..., pl.DataFrame], per_respondent: bool = False, **tables: Any
    ) -> pl.DataFrame:
        ds = ray.data.read_parquet(str(answers_path))
        kwargs = {"batch_format": "pyarrow", "fn_kwargs": {"builder": builder, **tables}}
        if per_respondent:
            # Builders that pair one respondent's answers (DPO pairs from two ratings) must see
            # all of that respondent's rows at once: a batch boundary would silently lose pairs.
            ds = ds.groupby("respondent_id").map_groups(_apply_builder, **kwargs)
        else:
            ds = ds.map_batches(_apply_builder, batch_size=batch_size, **kwargs)
        return canonical_order(
            pl.from_arrow(pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow"))))
        )

    return map_answers


class _ReferenceScorer:
    """A Ray Data actor: loads the reference model once, scores many batches."""

    def __init__(
        self,
        model_path: str,
        columns: Sequence[tuple[str, str]],
        max_length: int,
        gpus: int = 0,
        dtype: str = "float32",
    ) -> None:
        from valign_ray.models import load_model, load_tokenizer

        if gpus > 1:  # too large for one GPU: its layers spread over this actor's GPUs
            self.model = load_model(model_path, dtype=dtype, device_map="auto")
        else:
            self.model = load_model(model_path, dtype=dtype).to("cuda" if gpus else "cpu")
        self.tokenizer = load_tokenizer(model_path)
        self.columns, self.max_length = columns, max_length

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = pl.from_arrow(batch)
        return score_reference(
            self.model, self.tokenizer, rows, self.columns, max_length=self.max_length
        ).to_arrow()


def score_reference_ray(
    rows: pl.DataFrame,
    model_path: str,
    columns: Sequence[tuple[str, str]],
    *,
    max_length: int,
    concurrency: int = 1,
    gpus_per_actor: int = 0,
    dtype: str = "float32",
) -> pl.DataFrame:
    """Reference log-probs for every row by Ray Data batch inference, in ``row_idx`` order:
    ``columns`` holds (completion column, output column) pairs scored after ``prompt``.

    ``concurrency`` actors each load the model once: on ``gpus_per_actor`` GPUs each (more
    than one: the model split across them), or with 0 on one CPU each (torch in a Ray worker
    uses as many threads as the CPUs it was given); capped at what the cluster has, so that a
    smaller machine still finishes rather than waits.
    """
    have = ray.cluster_resources().get("GPU" if gpus_per_actor else "CPU", 1)
    if 0 < have < gpus_per_actor:  # (0: an autoscaling cluster whose GPU nodes are not up yet)
        raise ValueError(
            f"train.reference_gpus: one scoring actor needs {gpus_per_actor} GPUs but the "
            f"cluster has {have:g}"
        )
    size = max(1, min(concurrency, int(have // max(gpus_per_actor, 1))))
    table = rows.to_arrow()
    # Several blocks per actor, so every actor gets work (one block would feed one actor).
    per_block = max(64, -(-rows.height // (4 * size)))
    blocks = [table.slice(i, per_block) for i in range(0, max(rows.height, 1), per_block)]
    with warnings.catch_warnings():
        # max_restarts has no named parameter in map_batches yet; the route it takes warns.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        ds = _scoring_dataset(blocks, model_path, columns, max_length, size, gpus_per_actor, dtype)
    scored = pl.from_arrow(pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow"))))
    return scored.sort("row_idx")


def _scoring_dataset(
    blocks: list[pa.Table],
    model_path: str,
    columns: Sequence[tuple[str, str]],
    max_length: int,
    size: int,
    gpus: int,
    dtype: str,
) -> Any:
    return ray.data.from_arrow(blocks).map_batches(
        _ReferenceScorer,
        fn_constructor_kwargs={
            "model_path": model_path,
            "columns": list(columns),
            "max_length": max_length,
            "gpus": gpus,
            "dtype": dtype,
        },
        batch_format="pyarrow",
        batch_size=None,  # one block at a time
        num_gpus=gpus,
        # A failed scorer fails the stage; with restarts Ray logs an error about the actor's
        # constructor arguments on every run.
        max_restarts=0,
        compute=ray.data.ActorPoolStrategy(size=size),
    )
